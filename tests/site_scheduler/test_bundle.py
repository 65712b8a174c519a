"""A site run renders the project as submitted: its bundle, by hash, never the file."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

from pipeline.store import file_sha256
from pipeline.testing import PILOT, TEST_PROFILE
from site_scheduler.testing import Site
from tests.pipeline.conftest import require_espeak


def test_a_project_edited_while_its_run_renders_changes_nothing_in_that_run(
        site: Site, tmp_path: Path, pilot_reference_sha256: str) -> None:
    require_espeak()
    # The pilot in a folder of its own, so its dialogue and its assets can be edited.
    folder = tmp_path / "project"
    shutil.copytree(PILOT / "assets", folder / "assets")
    data = json.loads((PILOT / "project.json").read_text())
    data["render_profiles"] = TEST_PROFILE
    project = folder / "project.json"
    project.write_text(json.dumps(data))

    site.start_worker("w1")
    run_id = site.client.submit(project)
    edited = copy.deepcopy(data)
    edited["beats"][0]["dialogue"][0]["text"] = "The light fails tonight; nobody steers home."
    project.write_text(json.dumps(edited))
    background = folder / "assets" / "bg_lighthouse.png"
    background.write_bytes((folder / "assets" / "char_mara.png").read_bytes())
    edited_at = time.time()

    run = site.wait(run_id)
    assert run["status"] == "completed", run
    assert run["finished_at"] > edited_at, "the edits landed while the run was rendering"
    episode = Path(run["episode"])
    assert file_sha256(episode) == pilot_reference_sha256, "the run rendered the project as submitted"
    summary = json.loads((episode.parent / "run_summary.json").read_text())
    assert summary["run_id"] == run_id and summary["project_id"] == data["id"]

    # The edits are real: a run submitted after them renders them.
    later = site.wait(site.client.submit(project))
    assert later["status"] == "completed", later
    assert file_sha256(Path(later["episode"])) != pilot_reference_sha256
    script = json.loads((Path(later["episode"]).parent / "Script.json").read_text())
    assert "The light fails tonight" in json.dumps(script)
