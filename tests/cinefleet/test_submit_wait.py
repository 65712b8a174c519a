"""``cinefleet submit --wait``: progress on a terminal's stderr, and how the run ended as its exit code."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinefleet.cli import EXIT_CANCELLED
from pipeline.testing import pilot_project
from site_scheduler.testing import SITE, Site


@pytest.fixture
def idle_site(tmp_path: Path) -> Iterator[Site]:
    """A site with no workers: a submitted run waits, queued, until it is cancelled."""
    (tmp_path / "logs").mkdir()
    running = Site(data_dir=tmp_path / "site", logs=tmp_path / "logs")
    running.start_scheduler()
    try:
        yield running
    finally:
        running.close()


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_wait_shows_stages_done_on_a_terminal_and_exits_6_when_cancelled(idle_site: Site, tmp_path: Path) -> None:
    project = pilot_project(tmp_path / "pilot.json")
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "cinefleet", "submit", project, "--wait", "--site", SITE,
                                "--data-dir", str(idle_site.data_dir)],
                               stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    try:
        # When the run exists and shows on the terminal, an operator cancels it
        run_id = idle_site.wait_until(lambda: next((r["run_id"] for r in idle_site.client.runs()), None),
                                      "the submitted run")
        idle_site.wait_until(lambda: idle_site.run(run_id)["stages"], "the run's stages")
        progress = b""
        while b"stages done" not in progress:
            progress += os.read(leader, 4096)
        idle_site.client.control("cancel-run", run=run_id)
        stdout, _ = process.communicate(timeout=60)
        terminal = (progress + _read_all(leader)).decode()
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    total = len(idle_site.run(run_id)["stages"])
    assert process.returncode == EXIT_CANCELLED, terminal
    assert f"{run_id}: 0/{total} stages done" in terminal
    assert f"error: run {run_id} cancelled: cancelled by an operator" in terminal
    assert stdout.startswith(f"{run_id} cancelled")

