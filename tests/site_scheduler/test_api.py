"""The site's HTTP API, over real HTTP on loopback against a running site."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from site_scheduler.testing import SITE, Site
from tests.pipeline.conftest import require_espeak


def _api(site: Site) -> httpx.Client:
    """A client holding the site's token, read from its data folder as any local program reads it."""
    url = site.api_url
    assert url.startswith("http://127.0.0.1:"), "site.json names the loopback API"
    return httpx.Client(base_url=url, timeout=30, headers=site.api_headers())


@pytest.fixture
def rooted(tmp_path: Path) -> Iterator[Site]:
    """A site whose API takes projects from under ``tmp_path`` (which also holds its data folder)."""
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", project_roots=[tmp_path]) as running:
        yield running


def test_the_api_submits_a_run_and_reports_it_to_completion(rooted: Site, pilot: Path) -> None:
    require_espeak()
    site = rooted
    site.start_worker("w1")
    with _api(site) as api:
        assert api.get("/health").json() == {"site_id": SITE, "status": "ok"}
        created = api.post("/runs", json={"project": str(pilot)})
        assert created.status_code == 202, "accepted: the scheduler creates the run a moment later"
        run_id = created.json()["run_id"]
        deadline = time.monotonic() + 180
        while True:
            answer = api.get(f"/runs/{run_id}")
            run = answer.json()
            if answer.status_code == 200 and run["status"] in ("completed", "failed", "blocked"):
                break
            assert answer.status_code in (200, 404) and time.monotonic() < deadline, run
            time.sleep(0.5)
        assert run["status"] == "completed" and Path(run["episode"]).is_file()
        assert {s["status"] for s in run["stages"]} == {"done"}
        assert [r["run_id"] for r in api.get("/runs").json()] == [run_id]
        assert [w["name"] for w in api.get("/workers").json()] == ["w1"]
        events = api.get("/outbox", params={"since": 0}).json()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_api_controls_apply_refuse_and_validate(rooted: Site, tmp_path: Path) -> None:
    with _api(rooted) as api:
        paused = api.post("/controls", json={"action": "pause-queue", "queue": "media_queue"})
        assert paused.status_code == 200 and "paused" in paused.json()["message"]
        assert next(q for q in api.get("/queues").json() if q["queue"] == "media_queue")["paused"] is True
        again = api.post("/controls", json={"action": "pause-queue", "queue": "media_queue"})
        assert again.status_code == 409 and "already paused" in again.json()["detail"]
        assert api.post("/controls", json={"action": "pause-queue"}).status_code == 422
        assert api.post("/controls", json={"action": "rm -rf", "queue": "x"}).status_code == 422
        assert api.post("/controls", json={"action": "cancel-run", "run": "nope"}).status_code == 409
        assert api.get("/runs/nope").status_code == 404
        rebound = api.post("/controls", json={"action": "resume-queue", "queue": "media_queue"},
                           headers={"Host": "attacker.example"})
        assert rebound.status_code == 400, "a request addressed to another host name is refused"
        assert next(q for q in api.get("/queues").json() if q["queue"] == "media_queue")["paused"] is True

        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        refused = api.post("/runs", json={"project": str(bad)})
        assert refused.status_code == 422 and str(bad) in refused.json()["detail"]
        assert api.get("/runs").json() == [], "a refused submission sends nothing"
