"""The site API's side doors (issue 8), tried over real HTTP against a running site.

The token, the confinement of submitted paths and the request limits: each case is a request an
attacker on the same host sent, and each must be a 4xx naming the problem with the API still
answering afterwards.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pipeline.documents import MAX_DOCUMENT_BYTES
from pipeline.testing import pilot_project
from site_scheduler.api import MAX_BODY_BYTES
from site_scheduler.config import SITE_FILE, TOKEN_FILE
from site_scheduler.testing import Site

#: Every route of the API, and one that does not exist: none may answer without the token.
ROUTES = [("GET", "/health"), ("GET", "/runs"), ("GET", "/runs/x"), ("GET", "/workers"), ("GET", "/queues"),
          ("GET", "/outbox"), ("POST", "/runs"), ("POST", "/controls"), ("GET", "/docs"),
          ("GET", "/openapi.json"), ("GET", "/nowhere")]


@pytest.fixture
def rooted(tmp_path: Path) -> Iterator[Site]:
    """A site whose API takes projects from ``tmp_path/projects`` only."""
    (tmp_path / "projects").mkdir()
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", project_roots=[tmp_path / "projects"]) as running:
        yield running


def _client(site: Site, token: bool = True) -> httpx.Client:
    return httpx.Client(base_url=site.api_url, timeout=10, headers=site.api_headers() if token else {})


def test_every_route_needs_the_token_from_the_0600_file(site: Site) -> None:
    token_file = site.data_dir / TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    with _client(site, token=False) as anonymous:
        for method, path in ROUTES:
            bad_headers: tuple[dict[str, str] | dict[bytes, bytes], ...] = (
                {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {token}x"},
                {"Authorization": f"Basic {token}"}, {b"Authorization": "Bearer é".encode()})
            for headers in bad_headers:
                answer = anonymous.request(method, path, headers=headers, json={"action": "drain-worker"})
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert TOKEN_FILE in answer.json()["detail"] and answer.headers["www-authenticate"] == "Bearer"
        drained = anonymous.post("/controls", json={"action": "mark-host", "host": "h1", "state": "offline"})
        assert drained.status_code == 401
    assert site.client.host_state("h1") is None, "a refused control changes nothing"
    with _client(site) as api:
        assert api.get("/health").status_code == 200
        assert api.get("/openapi.json").status_code == 200
    assert token not in (site.data_dir / SITE_FILE).read_text()
    assert token not in (site.logs / "scheduler.log").read_text()


def test_the_token_survives_a_restart(site: Site) -> None:
    before = (site.data_dir / TOKEN_FILE).read_text()
    site.stop_scheduler()
    site.start_scheduler()
    assert (site.data_dir / TOKEN_FILE).read_text() == before, "clients holding the token keep working"
    with _client(site) as api:
        assert api.get("/runs").status_code == 200


def test_a_site_without_project_roots_takes_no_project_by_path(site: Site, pilot: Path) -> None:
    with _client(site) as api:
        refused = api.post("/runs", json={"project": str(pilot)})
    assert refused.status_code == 403 and "--project-root" in refused.json()["detail"]
    assert site.client.runs() == []


def test_submitted_paths_stay_under_the_roots_and_the_data_folder(rooted: Site, tmp_path: Path, pilot: Path) -> None:
    projects = tmp_path / "projects"
    (projects / "to-zero.json").symlink_to("/dev/zero")
    (projects / "to-pilot.json").symlink_to(pilot)
    (projects / "big.json").write_bytes(b"")
    os.truncate(projects / "big.json", MAX_DOCUMENT_BYTES + 1)  # sparse: costs no disk
    (projects / "dir.json").mkdir()
    (projects / "loop").symlink_to(projects / "loop")
    cases = {
        str(pilot): (403, "outside the site's project roots"),
        str(projects / "to-pilot.json"): (403, f"resolves to {pilot}"),
        str(projects / "to-zero.json"): (403, "resolves to /dev/zero"),
        "/dev/zero": (403, "outside the site's project roots"),
        str(projects / ".." / "pilot.json"): (403, "outside the site's project roots"),
        "projects/pilot.json": (422, "expected an absolute path"),
        str(projects / "big.json"): (422, f"expected at most {MAX_DOCUMENT_BYTES} bytes"),
        str(projects / "dir.json"): (422, "is a folder"),
        str(projects / "nothing.json"): (422, "no such file"),
        "/tmp/\x00": (422, "cannot be resolved"),
        str(projects / "loop" / "project.json"): (422, "cannot be resolved"),
    }
    with _client(rooted) as api:
        for project, (status, words) in cases.items():
            answer = api.post("/runs", json={"project": project})
            assert answer.status_code == status and words in answer.json()["detail"], (project, answer.text)
            detail = answer.json()["detail"]
            assert detail.startswith(("project: ", project)), f"the error names the field or the file: {detail}"

        good = pilot_project(projects / "pilot.json")
        data = rooted.data_dir.resolve()
        for out in ("/tmp/published", str(data), str(data / "out"), "../../escape", str(data / "out" / ".." / "x"),
                    str(tmp_path / "projects")):
            answer = api.post("/runs", json={"project": str(good), "out": out})
            assert answer.status_code == 403 and answer.json()["detail"].startswith("out: "), (out, answer.text)
            assert str(data / "out") in answer.json()["detail"]
        assert rooted.client.runs() == [], "nothing refused was sent"
        accepted = api.post("/runs", json={"project": str(good), "out": "mine/episode-1"})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        run = rooted.wait_until(lambda: rooted.client.run(run_id), "the run")
        assert run["out_dir"] == str(data / "out" / "mine" / "episode-1")


def test_the_data_folder_is_off_limits_even_under_a_root(tmp_path: Path) -> None:
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs", project_roots=[tmp_path]) as site, \
            _client(site) as api:
        for name in ("secrets.json", TOKEN_FILE, "site.json"):
            answer = api.post("/runs", json={"project": str(site.data_dir / name)})
            assert answer.status_code == 403 and "inside the site's data folder" in answer.json()["detail"]
            assert (site.data_dir / TOKEN_FILE).read_text().strip() not in answer.text


def test_45_fifo_submissions_leave_the_api_responsive(rooted: Site, tmp_path: Path) -> None:
    fifos = []
    for index in range(45):
        fifo = tmp_path / "projects" / f"fifo-{index}.json"
        os.mkfifo(fifo)
        fifos.append(fifo)
    with _client(rooted) as api, ThreadPoolExecutor(45) as pool:
        answers = list(pool.map(lambda fifo: api.post("/runs", json={"project": str(fifo)}), fifos))
        for fifo, answer in zip(fifos, answers, strict=True):
            assert answer.status_code == 422 and "FIFO" in answer.json()["detail"], answer.text
            assert str(fifo) in answer.json()["detail"]
        assert api.get("/runs", timeout=5).json() == []


def test_bodies_over_the_cap_are_refused_unread(rooted: Site) -> None:
    with _client(rooted) as api:
        declared = api.post("/controls", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                            headers={"Content-Type": "application/json"})
        assert declared.status_code == 413 and f"at most {MAX_BODY_BYTES} bytes" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked, counted as it arrives
            yield b'{"action": "pause-queue", "queue": "'
            for _ in range(2):
                yield b"x" * MAX_BODY_BYTES
            yield b'"}'

        streamed = api.post("/runs", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and "more than" in streamed.json()["detail"]
        assert api.post("/controls", json={"action": "pause-queue", "queue": "media_queue"}).status_code == 200
        assert api.get("/runs", timeout=5).status_code == 200


def test_outbox_since_out_of_range_is_422_naming_it(site: Site) -> None:
    with _client(site) as api:
        for since in ("99999999999999999999", "-1", "9223372036854775808", "x"):
            answer = api.get("/outbox", params={"since": since})
            assert answer.status_code == 422, (since, answer.text)
            assert [error["loc"] for error in answer.json()["detail"]] == [["query", "since"]]
        assert api.get("/outbox", params={"since": "9223372036854775807"}).json() == []
