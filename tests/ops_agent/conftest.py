"""A real site per test module for the agent's tests, and the pilot project."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.site_scheduler.conftest import Site, pilot  # noqa: F401 (a fixture, used by name)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("agent-site")
    (root / "logs").mkdir()
    running = Site(data_dir=root / "site", logs=root / "logs")
    running.start_scheduler()
    try:
        yield running
    finally:
        running.close()
