"""A real site per test module for the agent's tests (``site_scheduler.testing.Site``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from site_scheduler.testing import Site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("agent-site")
    with Site(data_dir=root / "site", logs=root / "logs") as running:
        yield running
