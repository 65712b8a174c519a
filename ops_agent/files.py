"""How the agent writes its files (keys, trust bundles, certificates, its state): whole or not at all.

A key file or a trust bundle read half-written would make the agent refuse every command or,
worse, trust a truncated list; so every write goes to a temporary file beside the target,
created 0600 (a secret is never wider, even for an instant), is given its final mode, fsynced
and renamed into place. The agent keeps this itself rather than borrowing the pipeline's store:
a control plane imports the agent's keys without the render pipeline.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_file(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``target`` with permission bits ``mode``, so that readers see all of it or none of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` survive a crash (the folder's entry is data too)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
