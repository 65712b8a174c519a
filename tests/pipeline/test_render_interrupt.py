"""A stopped ``cinefleet render`` leaves nothing behind (issue 9): no encoder running, no scratch folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.media.processes import descendants, process_alive
from pipeline.store import SCRATCH, ArtifactStore
from pipeline.testing import short_pilot_project, wait_for
from tests.pipeline.conftest import require_espeak


def _encoders(pid: int) -> list[int]:
    """The ffmpeg processes under ``pid`` that are encoding (not reading the build's version)."""
    found = []
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if "ffmpeg" in Path(os.fsdecode(command[0])).name and b"-version" not in command:
            found.append(child)
    return found


@contextmanager
def _render(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """``cinefleet render`` of the short pilot, once ffmpeg encodes for it: the process and its encoders."""
    project = short_pilot_project(tmp_path / "project" / "project.json")
    command = [sys.executable, "-m", "cinefleet", "render", str(project), "--out", str(tmp_path / "out"),
               "--store", str(tmp_path / "store")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def encoding() -> list[int]:
            assert process.poll() is None, f"render exited {process.returncode} before it encoded"
            return _encoders(process.pid)

        yield process, wait_for(encoding, "ffmpeg to encode for the render", timeout=120, poll=0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)


def test_sigterm_stops_the_encoders_and_removes_the_scratch(tmp_path: Path) -> None:
    require_espeak()
    with _render(tmp_path) as (process, encoders):
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert b"render interrupted by SIGTERM" in stderr and b"Traceback" not in stderr, stderr
    assert not [pid for pid in encoders if process_alive(pid)], "every encoder was killed"
    assert list((tmp_path / "store" / SCRATCH).iterdir()) == [], "no scratch folder left"
    assert not (tmp_path / "out" / "episode.mp4").exists(), "nothing published"


def test_after_a_kill_9_the_encoders_die_and_the_next_render_sweeps_the_scratch(tmp_path: Path) -> None:
    require_espeak()
    store = ArtifactStore(tmp_path / "store")
    with _render(tmp_path) as (process, encoders):
        process.kill()
        process.wait(timeout=30)
        # The kernel kills the encoders with their parent (ffmpeg would outlive it: it ignores SIGPIPE).
        wait_for(lambda: not [pid for pid in encoders if process_alive(pid)], "the encoders to die", timeout=5)
    stale = sorted((tmp_path / "store" / SCRATCH).iterdir())
    assert stale, "a killed render cannot clean up: the next one must"
    in_use = store.scratch()  # this live process's
    elsewhere = in_use.parent / f"another-host.{process.pid}.abc"  # another host's, whatever its pid
    elsewhere.mkdir()

    again = subprocess.run([sys.executable, "-m", "cinefleet", "render", str(tmp_path / "project" / "project.json"),
                            "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")],
                           capture_output=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert sorted((tmp_path / "store" / SCRATCH).iterdir()) == sorted([in_use, elsewhere])
    assert (tmp_path / "out" / "episode.mp4").is_file()
