"""A real site per test (``site_scheduler.testing.Site``: ``site serve`` and workers as subprocesses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from site_scheduler.testing import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Site(data_dir=tmp_path / "site", logs=tmp_path / "logs") as running:
        yield running
