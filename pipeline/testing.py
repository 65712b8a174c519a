"""What every test harness shares: the one bounded wait, and the pilot project at test resolution.

It ships in the package (as dramatiq ships ``StubBroker``) so that the site's, the agent's and a
control plane's tests, and the benchmarks, start real components without importing another
suite's conftest. It imports neither pytest nor ``tests``; a wait that runs out raises
:class:`WaitTimeout`, an ``AssertionError``, so a test reports it as a failure.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The pilot episode of the source checkout (``examples/pilot``): the sample every suite renders.
PILOT = Path(__file__).resolve().parents[1] / "examples" / "pilot"

#: Tests render at a quarter of the pixels; the code path is the same as at 1280x720.
TEST_PROFILE = {"preview_local": {"width": 640, "height": 360, "fps": 24}}


class WaitTimeout(AssertionError):
    """Raised when a condition did not hold within its bound; the message names what was awaited."""


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30, poll: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy, and return that; never wait past ``timeout`` s.

    Every wait in a test or a harness is bounded so that a hang fails with the name of what was
    awaited instead of stalling the suite; ``check`` may raise to stop waiting early.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def write_project(path: Path, data: dict[str, Any], library: Path | None = None) -> Path:
    """Write ``data`` as the project file ``path``, with a copy of ``library`` (the pilot's) beside it.

    A project's files must lie inside its folder, so the library is copied into that folder
    (under its own name) and named relatively, never by an absolute path.
    """
    library = library or PILOT / "assets"
    data["assets"] = {"library": library.name}
    return _write(path, data, library)


def pilot_project(destination: Path, edit: Callable[[dict[str, Any]], None] | None = None,
                  library: Path | None = None) -> Path:
    """Write the pilot project, at test resolution, to ``destination``; ``edit`` may change its JSON first."""
    source = PILOT / "project.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the pilot project is missing; the harness needs a source checkout")
    library = library or PILOT / "assets"
    data = json.loads(source.read_text())
    data["render_profiles"] = TEST_PROFILE
    data["assets"] = {"library": library.name}
    if edit is not None:
        edit(data)
    return _write(destination, data, library)


def _write(path: Path, data: dict[str, Any], library: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(library, path.parent / library.name, dirs_exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def short_pilot_project(destination: Path) -> Path:
    """The pilot cut to its first two beats at 320x180: four shots and two voice lines, the same code
    paths in about a third of the time, for tests that render it more than once or beside a site."""

    def cut(data: dict[str, Any]) -> None:
        data["beats"] = data["beats"][:2]
        data["target_duration"] = {"seconds": 20, "tolerance": 0.9}
        data["render_profiles"] = {"preview_local": {"width": 320, "height": 180, "fps": 24}}

    return pilot_project(destination, cut)
