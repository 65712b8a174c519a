"""Atomic file output shared by every media writer.

A render can be killed at any moment (a worker crash, a cancelled job). Writers produce into
a temp file in the destination directory and rename it into place, so a cache entry either
exists complete or not at all, and parallel writers never see each other's half-written files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(out_path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``out_path``; on success rename it over ``out_path``.

    The temp name keeps the real suffix so tools that infer a format from it still work. On
    any exception the temp file is removed and ``out_path`` is left untouched.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".part" + out_path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
