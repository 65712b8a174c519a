"""Pinned media builds (issue 9): a worker with another ffmpeg build takes no media work and says why."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from pipeline.kinds import KINDS
from pipeline.media.ffmpeg import build_id, ffmpeg_path
from pipeline.render import RenderRequest, render
from pipeline.store import file_sha256
from pipeline.testing import short_pilot_project
from site_scheduler.testing import Site
from tests.pipeline.conftest import require_espeak

OTHER_BUILD = "ffmpeg version 0.0-another-build Copyright (c) the FFmpeg developers"


def _other_ffmpeg(folder: Path) -> tuple[Path, Path]:
    """A real ffmpeg that reports another build, and the file it touches whenever it is run for work.

    The machine has one ffmpeg (the imageio-ffmpeg wheel's); this wrapper is what an operator's
    second build looks like to the site: another ``ffmpeg -version``, real encodes otherwise.
    """
    used = folder / "other-ffmpeg-encoded"
    binary = folder / "ffmpeg"
    binary.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -version "*) echo "{OTHER_BUILD}"; exit 0;; esac\n'
        f'touch "{used}"\n'
        f'exec "{ffmpeg_path()}" "$@"\n'
    )
    binary.chmod(0o755)
    return binary, used


def test_a_worker_with_another_ffmpeg_build_takes_no_media_work(site: Site, tmp_path: Path) -> None:
    require_espeak()
    pilot = short_pilot_project(tmp_path / "short" / "project.json")
    other, used = _other_ffmpeg(tmp_path)
    site.start_worker("w1")
    site.start_worker("w2", env={"CINEFLEET_FFMPEG": str(other)})
    why = f"ffmpeg build {OTHER_BUILD!r} differs from the site's pinned {build_id()!r}"
    workers = {w["name"]: w for w in site.client.workers()}
    assert workers["w2"]["refused"] == why, workers["w2"]
    assert workers["w2"]["builds"]["ffmpeg"] == OTHER_BUILD
    assert "cpu_queue" not in workers["w2"]["queues"]  # where every build-dependent kind runs
    assert workers["w1"]["refused"] is None and "cpu_queue" in workers["w1"]["queues"]
    listed = site.cli("site", "workers").stdout
    assert f"refused: {why}" in next(line for line in listed.splitlines() if line.startswith("w2")), listed
    with httpx.Client(base_url=site.api_url, timeout=30, headers=site.api_headers()) as api:
        served = {w["name"]: w for w in api.get("/workers").json()}
    assert served["w2"]["refused"] == why

    run_id = json.loads(site.cli("submit", pilot, "--json").stdout)["run_id"]
    run = site.wait(run_id, timeout=240)
    assert run["status"] == "completed", run
    media = [s for s in run["stages"] if KINDS[s["kind"]].builds]
    assert media and {s["worker"] for s in media} <= {"w1", "cache"}, [(s["stage_id"], s["worker"]) for s in media]
    assert not used.exists(), "the other build never encoded anything"
    reference = render(RenderRequest(project=pilot, out=tmp_path / "render-out", store=tmp_path / "render-store"))
    assert reference.output is not None
    assert file_sha256(Path(run["episode"])) == reference.output.video.sha256
    # The control plane hears why too: the worker's row in the outbox carries its refusal.
    rows = [e["row"] for e in site.client.outbox(0) if e["entity"] == "worker" and e["row"]["name"] == "w2"]
    assert rows and rows[-1]["refused"] == why
