"""The content-addressed artifact store: ``{root}/{tenant_id}/{hash[:2]}/{hash}``.

A file's name is the sha256 of its bytes, so a stored artifact can never be overwritten with
different content. Writes go to a temporary file in the target folder, are fsynced and then
renamed, so a crash leaves either the whole artifact or nothing.

A disk, a careless hand or a half-restored backup can still change a blob after it was
written, and a name that lies is worse than a missing file: the damaged bytes would ship in
the next episode under the old hash. So a blob is checked against its name before it is
reused (once per process while its size, mtime and inode stay the same, which keeps a warm
render cheap) and whenever its bytes are read or copied out. A damaged blob is moved to
``{root}/.quarantine/`` and reported as absent, so the stage that made it makes it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from pipeline.errors import PipelineError
from pipeline.media.processes import process_alive

log = logging.getLogger(__name__)

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
_file_mode = 0o666 & ~_UMASK


def make_files_private() -> None:
    """From now on every file this process (and its children) writes is 0600, folders 0700.

    A site's data folder holds its database, artifacts and Redis files; none of them is for
    another local user. Call it at start-up, before any thread writes a file.
    """
    global _file_mode
    os.umask(0o077)
    _file_mode = 0o600


@contextlib.contextmanager
def _atomic(target: Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a handle on a temp file beside ``target``; fsync and rename it into place on success."""
    mode = _file_mode if mode is None else mode
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


def atomic_write(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``target`` so that readers see all of it or none of it."""
    with _atomic(target, mode) as handle:
        handle.write(data)


def atomic_copy(source: Path, target: Path) -> None:
    with _atomic(target) as handle, source.open("rb") as src:
        shutil.copyfileobj(src, handle, 1 << 20)


QUARANTINE = ".quarantine"
SCRATCH = ".scratch"


class DamagedArtifact(PipelineError):
    """A stored blob whose bytes no longer hash to its name; it has been quarantined."""

    def __init__(self, path: Path, found: str, moved_to: Path | None) -> None:
        self.path, self.found, self.moved_to = path, found, moved_to
        where = f"moved to {moved_to}" if moved_to is not None else "already moved away by another process"
        super().__init__(f"{path}: stored artifact is damaged: its bytes hash to {found}, not to its name; {where}")


@dataclass
class StoreCheck:
    """What :meth:`ArtifactStore.check` found: whole blobs counted, damaged ones listed."""

    root: Path
    blobs: int = 0
    bytes: int = 0
    damaged: list[DamagedArtifact] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"store": str(self.root), "blobs_ok": self.blobs, "bytes_ok": self.bytes,
                "damaged": [{"path": str(d.path), "hashes_to": d.found,
                             "quarantined_to": None if d.moved_to is None else str(d.moved_to)}
                            for d in self.damaged]}


@dataclass(frozen=True)
class _Seen:
    """What a verified blob looked like; any change to it means hashing it again."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> _Seen:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


#: Blobs this process has hashed and found whole (shared by every store object on one root:
#: a site worker opens a workspace per stage).
_verified: dict[Path, _Seen] = {}
_verified_lock = threading.Lock()


class ArtifactStore:
    """Immutable blobs for one site, partitioned by tenant."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, tenant_id: str, digest: str) -> Path:
        return self.root / tenant_id / digest[:2] / digest

    def has(self, tenant_id: str, digest: str) -> bool:
        """True when the blob is stored and whole; a damaged one is quarantined and reported absent."""
        try:
            self.verify(tenant_id, digest)
        except (FileNotFoundError, DamagedArtifact):
            return False
        return True

    def verify(self, tenant_id: str, digest: str) -> Path:
        """The blob's path once its bytes are known to hash to ``digest``.

        Raises :class:`FileNotFoundError` when it is not stored and :class:`DamagedArtifact`
        (after quarantining it) when its bytes changed.
        """
        path = self.path(tenant_id, digest)
        stat = path.stat()
        if not S_ISREG(stat.st_mode):
            raise FileNotFoundError(path)
        seen = _Seen.of(stat)
        with _verified_lock:
            if _verified.get(path) == seen:
                return path
        found = file_sha256(path)
        if found != digest:
            raise self._quarantine(path, found)
        with _verified_lock:
            _verified[path] = seen
        return path

    def put_bytes(self, tenant_id: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.has(tenant_id, digest):
            atomic_write(self.path(tenant_id, digest), data)
        return digest

    def put_file(self, tenant_id: str, source: Path, *, owned: bool = False) -> str:
        """Store a finished file.

        An ``owned`` file (one the pipeline made in :meth:`scratch` and will not touch again) is
        hard-linked in, which costs nothing for a large clip. Anything else is copied: linking a
        file someone else may rewrite in place would let them change a stored artifact.
        """
        digest = file_sha256(source)
        target = self.path(tenant_id, digest)
        if self.has(tenant_id, digest):
            return digest
        if owned:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with source.open("rb") as handle:
                    os.fchmod(handle.fileno(), _file_mode)  # tools write 0600 temp files
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
        """The blob's bytes, checked against its name (documents are small: always hashed)."""
        path = self.path(tenant_id, digest)
        data = path.read_bytes()
        found = hashlib.sha256(data).hexdigest()
        if found != digest:
            raise self._quarantine(path, found)
        return data

    def copy_out(self, tenant_id: str, digest: str, target: Path) -> None:
        """Publish a blob to ``target`` atomically, hashing the bytes as they are copied.

        The check covers the copy itself, so a blob damaged since it was last verified never
        reaches an output folder under a RenderOutput that names another hash.
        """
        path = self.path(tenant_id, digest)
        sha = hashlib.sha256()
        with _atomic(target) as handle, path.open("rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                sha.update(block)
                handle.write(block)
            if sha.hexdigest() != digest:
                raise self._quarantine(path, sha.hexdigest())

    def scratch(self) -> Path:
        """A private folder on the store's filesystem, so finished files can be linked in.

        Its name says which process on which host owns it (``HOST.PID.random``), so that one a
        killed process left behind can be told from one in use (:meth:`sweep_scratch`).
        """
        base = self.root / SCRATCH
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base, prefix=f"{socket.gethostname()}.{os.getpid()}."))

    def sweep_scratch(self) -> list[Path]:
        """Remove the scratch folders of this host's processes that are gone (a ``kill -9``); returns them.

        A process that stops any other way removes its own. Only folders whose owner is known
        to be dead go: another host's (a shared store) and a live process's are left alone.
        """
        swept = []
        host = socket.gethostname()
        base = self.root / SCRATCH
        for folder in sorted(base.iterdir()) if base.is_dir() else ():
            owner_host, _, rest = folder.name.rpartition(".")[0].rpartition(".")
            if owner_host != host or not rest.isdigit() or process_alive(int(rest)):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
        if swept:
            log.info("removed %d scratch folder(s) that killed processes left in %s", len(swept), base)
        return swept

    def blobs(self) -> Iterator[tuple[str, str, Path]]:
        """Every stored blob as (tenant_id, digest, path), in a stable order."""
        for tenant in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for prefix in sorted(p for p in tenant.iterdir() if p.is_dir() and len(p.name) == 2):
                for path in sorted(prefix.iterdir()):
                    if path.name.startswith(prefix.name) and len(path.name) == 64:
                        yield tenant.name, path.name, path

    def check(self) -> StoreCheck:
        """Hash every blob in the store; damaged ones are quarantined (the next run remakes them)."""
        report = StoreCheck(root=self.root)
        for tenant_id, digest, path in self.blobs():
            try:
                self.verify(tenant_id, digest)
            except FileNotFoundError:
                continue  # removed while we walked
            except DamagedArtifact as exc:
                report.damaged.append(exc)
                continue
            report.blobs += 1
            report.bytes += path.stat().st_size
        return report

    def _quarantine(self, path: Path, found: str) -> DamagedArtifact:
        """Move a damaged blob aside (kept for inspection, never reused) and describe it."""
        relative = path.relative_to(self.root)
        moved = self.root / QUARANTINE / relative.parent / f"{path.name}.{found[:16]}"
        moved.parent.mkdir(parents=True, exist_ok=True)
        with _verified_lock:
            _verified.pop(path, None)
        try:
            os.replace(path, moved)
        except FileNotFoundError:  # another process moved it first
            error = DamagedArtifact(path, found, None)
        else:
            error = DamagedArtifact(path, found, moved)
        log.error("%s", error)
        return error
