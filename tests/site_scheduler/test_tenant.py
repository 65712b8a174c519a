"""The tenant of a run is who submits it (the site's ``--tenant``), never what its project file claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from pipeline.testing import pilot_project
from site_scheduler.config import read_endpoints
from site_scheduler.testing import SITE, Site
from tests.pipeline.conftest import require_espeak


def _claims_b(data: dict[str, Any]) -> None:
    data["tenant_id"] = "b"


def _tenant_folders(store: Path) -> set[str]:
    """The store's tenant partitions (``{store}/{tenant}/...``); its own files and hidden folders are not tenants."""
    return {entry.name for entry in store.iterdir() if entry.is_dir() and not entry.name.startswith(".")}


def test_projects_claiming_another_tenant_render_for_the_sites_tenant(tmp_path: Path) -> None:
    require_espeak()
    projects = tmp_path / "projects"
    first = pilot_project(projects / "one" / "project.json", _claims_b)

    def claims_b_with_another_title(data: dict[str, Any]) -> None:
        _claims_b(data)
        data["title"] = "Another pilot"

    second = pilot_project(projects / "two" / "project.json", claims_b_with_another_title)
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", tenant="a", project_roots=[projects]) as site:
        assert read_endpoints(SITE, site.data_dir).tenant == "a"
        site.start_worker("w1")
        with httpx.Client(base_url=site.api_url, timeout=30, headers=site.api_headers()) as api:
            created = api.post("/runs", json={"project": str(first)})
            assert created.status_code == 202, created.text
        by_api = created.json()["run_id"]
        by_cli = site.cli("submit", second).stdout.strip()  # the site user's own path: the same rule
        runs = [site.wait(run_id) for run_id in (by_api, by_cli)]
        assert [run["status"] for run in runs] == ["completed", "completed"], runs
        assert [run["tenant_id"] for run in runs] == ["a", "a"]
        store = site.data_dir / "store"
        assert _tenant_folders(store) == {"a"}, "nothing was read from or written to tenant b's partition"
        events = site.client.outbox(0)
        assert {e["tenant_id"] for e in events} <= {"a", "-"} and any(e["tenant_id"] == "a" for e in events)
        for run in runs:  # what is published names the tenant it was rendered for
            for name in ("RenderOutput.json", "Script.json", "run_summary.json"):
                assert json.loads((Path(run["out_dir"]) / name).read_text())["tenant_id"] == "a", (run["run_id"], name)


def test_serve_refuses_a_bad_tenant_or_project_root_writing_nothing(tmp_path: Path) -> None:
    cases = {("--tenant", "../b"): "--tenant: value '../b'", ("--tenant", "B"): "--tenant: value 'B'",
             ("--project-root", str(tmp_path / "absent")): f"--project-root: value {tmp_path / 'absent'}"}
    for option, words in cases.items():
        result = subprocess.run([sys.executable, "-m", "cinefleet", "site", "serve", "--site", SITE,
                                 "--data-dir", str(tmp_path / "site"), "--api-port", "0", *option],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and words in result.stderr, (option, result.stderr)
        assert not (tmp_path / "site").exists(), "nothing written"
