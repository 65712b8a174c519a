"""The tool processes (ffmpeg, espeak-ng) a render or a worker started: finding them, stopping them.

A stage's encoders run as child processes of whoever runs the stage, sometimes from a thread
pool; stopping the stage (a cancelled run, an interrupted ``cinefleet render``) means killing
them, since the thread waiting on one cannot be interrupted any other way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

#: prctl(2) option: the signal a process gets when the thread that started it dies (Linux only).
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux /proc), deepest last."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found.append(kid)
            found.extend(descendants(kid))
    return found


def kill_descendants() -> None:
    """SIGKILL every process this one started (and theirs), deepest first."""
    for pid in reversed(descendants(os.getpid())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user's counts; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to ask: it exists
    return state != "Z"


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the tool killed when whoever started it is killed (Linux; None elsewhere).

    ffmpeg ignores SIGPIPE, so one whose parent was killed with ``kill -9`` would go on encoding
    into a scratch folder nobody will read, for as long as the clip takes. The kernel's
    parent-death signal follows the thread that started the tool, which in a render or a
    worker lives until the tool has finished. The child does nothing else before ``exec``
    (one foreign call, no lock, no import), which is what makes a ``preexec_fn`` safe in a
    threaded process.
    """
    if _prctl is None:
        return None
    prctl, parent = _prctl, os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # killed before the line above took effect
            os._exit(1)

    return arm
