"""Fixtures every suite shares; the harnesses behind them are package code (``*/testing.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling

from pipeline.render import RenderRequest, render
from pipeline.testing import pilot_project
from tests.pipeline.conftest import require_espeak

#: Modules whose tests each start their own site and share no module fixture and no order. Under xdist
#: their tests (a parametrized test's cases together) go to whichever worker is free, instead of the whole
#: file to one worker: each of these files alone takes minutes, and would otherwise set the suite's wall time.
SPREAD_MODULES = frozenset({"tests/site_scheduler/test_site.py", "tests/site_scheduler/test_faults.py"})


class _SpreadLongModules(LoadFileScheduling):
    """``--dist loadfile``, except that the tests of :data:`SPREAD_MODULES` are scheduled one by one."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return nodeid.split("[", 1)[0] if path in SPREAD_MODULES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadFileScheduling | None:
    """Schedule ``--dist loadfile`` runs with :class:`_SpreadLongModules`; other modes as xdist does."""
    return _SpreadLongModules(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    """The pilot at test resolution, as a project file of its own."""
    return pilot_project(tmp_path / "pilot.json")


@pytest.fixture(scope="session")
def pilot_reference_sha256(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sha256 of the pilot's episode as ``cinefleet render`` makes it in a fresh store.

    Every site run of the pilot must give these bytes. The render is deterministic, so it is made
    once per session (per xdist worker) rather than once per test: a dozen tests compared against
    it, and each fresh render cost 10-20 s of the suite while proving nothing new.
    """
    require_espeak()
    folder = tmp_path_factory.mktemp("pilot-reference")
    result = render(RenderRequest(project=pilot_project(folder / "pilot.json"), out=folder / "out",
                                  store=folder / "store"))
    assert result.output is not None, result.blocked
    return result.output.video.sha256
