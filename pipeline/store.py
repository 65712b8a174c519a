"""The content-addressed artifact store: ``{root}/{tenant_id}/{hash[:2]}/{hash}``.

A file's name is the sha256 of its bytes, so a stored artifact can never be overwritten with
different content. Writes go to a temporary file in the target folder, are fsynced and then
renamed, so a crash leaves either the whole artifact or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

URI_PREFIX = "cas://sha256/"


def uri_for(digest: str) -> str:
    return URI_PREFIX + digest


def digest_of_uri(uri: str) -> str:
    if not uri.startswith(URI_PREFIX):
        raise ValueError(f"not a content-store URI: {uri!r}")
    return uri.removeprefix(URI_PREFIX)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


#: The process umask, read once at import (reading it means setting it, which is not thread-safe
#: later). Temporary files are created 0600; finished files get the mode ``open()`` would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def _atomic(target: Path, mode: int = FILE_MODE) -> Iterator[BinaryIO]:
    """Yield a handle on a temp file beside ``target``; fsync and rename it into place on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # the temp file starts 0600: a secret is never wider
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(target: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``target`` so that readers see all of it or none of it."""
    with _atomic(target, mode) as handle:
        handle.write(data)


def atomic_copy(source: Path, target: Path) -> None:
    with _atomic(target) as handle, source.open("rb") as src:
        shutil.copyfileobj(src, handle, 1 << 20)


class ArtifactStore:
    """Immutable blobs for one site, partitioned by tenant."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, tenant_id: str, digest: str) -> Path:
        return self.root / tenant_id / digest[:2] / digest

    def has(self, tenant_id: str, digest: str) -> bool:
        return self.path(tenant_id, digest).is_file()

    def put_bytes(self, tenant_id: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(tenant_id, digest)
        if not target.is_file():
            atomic_write(target, data)
        return digest

    def put_file(self, tenant_id: str, source: Path, *, owned: bool = False) -> str:
        """Store a finished file.

        An ``owned`` file (one the pipeline made in :meth:`scratch` and will not touch again) is
        hard-linked in, which costs nothing for a large clip. Anything else is copied: linking a
        file someone else may rewrite in place would let them change a stored artifact.
        """
        digest = file_sha256(source)
        target = self.path(tenant_id, digest)
        if target.is_file():
            return digest
        if owned:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with source.open("rb") as handle:
                    os.fchmod(handle.fileno(), FILE_MODE)  # tools write 0600 temp files
                    os.fsync(handle.fileno())
                os.link(source, target)
                return digest
            except FileExistsError:
                return digest
            except OSError:
                pass  # another filesystem: fall back to a copy
        atomic_copy(source, target)
        return digest

    def read_bytes(self, tenant_id: str, digest: str) -> bytes:
        return self.path(tenant_id, digest).read_bytes()

    def scratch(self) -> Path:
        """A private folder on the store's filesystem, so finished files can be linked in."""
        base = self.root / ".scratch"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))
