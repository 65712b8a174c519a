"""The agent's tamper-evident audit log: one JSON line per command outcome, hash-chained.

Each entry carries ``seq`` (1, 2, ...), ``prev_hash`` (the previous entry's hash; 64 zeros for the
first) and ``entry_hash = sha256(prev_hash || canonical JSON of the entry without entry_hash)``, with
``prev_hash`` as its 64 hex characters and canonical JSON as sorted keys, no spaces, UTF-8. Walking
the chain from the first line finds an edited, deleted or reordered entry; each line must be exactly
the canonical bytes that were hashed, so no line can be read two ways (a duplicate key, another
encoding of the same entry). It cannot find the last entries cut off, nor a log rewritten whole
with fresh hashes: that needs the head anchored elsewhere (the control plane's copy of the outcomes).
Entries hold hashes and names only, never signatures, keys or tokens.

The log is rotated at a size (``max_bytes``): the live file is renamed ``audit.jsonl.N`` (N = 1,
2, ... oldest first) and a new one begun, whose first entry continues the chain (its ``seq`` and
``prev_hash`` follow the last entry of the file before). :func:`verify` walks the whole set, oldest
first, and names the file and line of a break. A write that fails (a full or failing volume) is
:class:`~ops_agent.errors.AuditUnavailable`, and :attr:`AuditLog.problem` says so until a write
succeeds again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from ops_agent.errors import AuditLogError, AuditUnavailable
from ops_agent.files import fsync_dir
from protos import ops_agent_pb2 as pb

#: The ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64
#: The live file is rotated once it would grow past this many bytes.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class AuditRecord:
    """What an entry says about one command; the log adds seq, ts and the hashes."""

    command_id: str = ""
    key_id: str = ""
    actor: str = ""
    actor_role: str = ""
    approved_by: str = ""
    action: str = ""
    target: str = ""
    host: str = ""
    site: str = ""
    payload_sha256: str = ""
    outcome: str = ""
    reason: str = ""
    message: str = ""
    #: Who sent a rejected request (a SPIFFE ID or an address); left out of the line when None.
    peer: str | None = None
    #: On a summary of rejections counted rather than written one by one, how many; else left out.
    count: int | None = None
    #: On such a summary, when the first rejection it follows was (unix seconds); else left out.
    since: float | None = None

    @classmethod
    def for_result(cls, command: pb.SignedCommand, result: pb.CommandResult,
                   payload: pb.CommandPayload | None = None) -> AuditRecord:
        """The record of ``result``; ``payload`` is the verified payload, None when verification refused it.

        Without a verified payload only the envelope's own facts are recorded (its key id hint and the
        payload's hash), never what the unverified payload claims.
        """
        verified = payload if payload is not None else pb.CommandPayload()
        reason = pb.RejectReason.Name(result.reason) if result.reason else ""
        return cls(command_id=result.command_id, key_id=command.key_id, actor=verified.actor,
                   actor_role=verified.actor_role, approved_by=verified.approved_by,
                   action=_action_name(verified.action) if payload is not None else "",
                   target=target_label(verified), host=result.host, site=verified.site_id,
                   payload_sha256=hashlib.sha256(command.payload).hexdigest(),
                   outcome=pb.Outcome.Name(result.outcome), reason=reason, message=result.message)


def _action_name(action: int) -> str:
    return pb.Action.Name(action) if action in pb.Action.values() else str(action)


def target_label(payload: pb.CommandPayload) -> str:
    """The payload's target as one string: ``worker:NAME``, ``queue:NAME``, ``run:ID``, ``stage:RUN/STAGE``."""
    kind = payload.WhichOneof("target")
    if kind is None:
        return ""
    target = getattr(payload, kind)
    return f"{kind}:" + "/".join(getattr(target, f.name) for f in target.DESCRIPTOR.fields)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash an entry must carry: over its ``prev_hash`` and its content without ``entry_hash``."""
    content = {k: v for k, v in entry.items() if k != "entry_hash"}
    return hashlib.sha256(str(entry.get("prev_hash", "")).encode("utf-8") + _canonical(content)).hexdigest()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a key given twice (a parser would keep the last one silently)."""
    entry: dict[str, Any] = {}
    for key, value in pairs:
        if key in entry:
            raise ValueError(f"key {key!r} appears twice")
        entry[key] = value
    return entry


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_entry(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """The entry on ``line`` and ``""``, or None and why the line is not a sound audit entry.

    The line must be exactly the canonical bytes the writer hashed: a line that parses to the same
    entry through other bytes (a duplicate key, spacing, key order, escapes) could be read two ways, by
    this check and by any other reader, so it is refused. Never raises, whatever the line holds.
    """
    try:
        entry = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers malformed JSON, a duplicate key and an integer too long to convert.
        return None, f"not an audit entry: {str(exc)[:120]}"
    if (not isinstance(entry, dict) or isinstance(entry.get("seq"), bool) or not isinstance(entry.get("seq"), int)
            or not isinstance(entry.get("prev_hash"), str) or not isinstance(entry.get("entry_hash"), str)):
        return None, "not an audit entry (expected a JSON object with seq, prev_hash and entry_hash)"
    try:
        canonical = _canonical(entry)
    except UnicodeEncodeError:  # a lone surrogate escaped in a string: never written by the log
        canonical = b""
    if canonical != line:
        return None, ("not canonical: the line is not the exact bytes that were hashed (expected sorted keys, "
                      "no spaces, UTF-8, no escapes the writer does not make)")
    return entry, ""


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log at ``path`` (``NAME.1``, ``NAME.2``, ...), oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]{0,8})")
    found = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path.parent):
            match = pattern.fullmatch(name)
            if match:
                found.append((int(match.group(1)), path.parent / name))
    return [file for _, file in sorted(found)]


def _open_locked(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditLogError(f"{path}: audit log is open by another process") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _line_count(fd: int, size: int) -> int:
    """How many lines the file holds; only counted to name the bad line in an error."""
    count, offset = 0, 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        count, offset = count + chunk.count(b"\n"), offset + len(chunk)
    return count


def _head_of(fd: int, path: Path) -> tuple[int, str] | None:
    """The last entry's seq and hash in the open file ``fd``, read from its end; None when it is empty."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    tail, start = b"", size
    while start > 0 and tail.count(b"\n") < 2:
        start = max(0, start - 4096)
        tail = os.pread(fd, size - start, start)
    if not tail.endswith(b"\n"):
        raise AuditLogError(f"{path}: last line is incomplete (an interrupted write?); expected a "
                            "newline-terminated entry; run `audit verify` and repair the file by hand")
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    entry, problem = _read_entry(last)
    if entry is not None and entry_hash(entry) != entry["entry_hash"]:
        problem = "edited: entry_hash does not match the entry's content"
    if entry is None or problem:
        raise AuditLogError(f"{path}: line {_line_count(fd, size)} (the last): {problem}; expected a "
                            "sound entry as the chain's head; run `audit verify`")
    return entry["seq"], entry["entry_hash"]


class AuditLog:
    """Appends hash-chained entries to a JSON-lines file, fsyncing each; resumes an existing chain; rotates.

    The file is locked (``flock``) while open, so a second writer fails at once instead of forking the chain.

    Parameters:
        path: the live file; rotated files sit beside it (see :func:`rotated_files`).
        clock: unix seconds for ``ts``.
        max_bytes: rotate before the live file would grow past this.

    Raises:
        AuditLogError: another process holds the log, or its last line is incomplete or not a sound entry.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.max_bytes = path, max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        #: Why the last write failed; None while the log is being written.
        self.problem: str | None = None
        self._fd = _open_locked(path)
        try:
            self.seq, self.head = self._resume()
        except BaseException:
            os.close(self._fd)
            raise

    def _resume(self) -> tuple[int, str]:
        """The chain's head: the live file's last entry, or the newest rotated file's when the live one is empty."""
        head = _head_of(self._fd, self.path)
        if head is not None:
            return head
        rotated = rotated_files(self.path)
        if not rotated:
            return 0, GENESIS_HASH
        fd = os.open(rotated[-1], os.O_RDONLY)
        try:
            return _head_of(fd, rotated[-1]) or (0, GENESIS_HASH)
        finally:
            os.close(fd)

    def append(self, record: AuditRecord) -> dict[str, Any]:
        """Write one entry for ``record`` and fsync it; returns the entry as written.

        Raises:
            AuditUnavailable: the entry could not be written (nothing of it is left in the file).
        """
        with self._lock:
            entry: dict[str, Any] = {"seq": self.seq + 1, "ts": self._clock(), "prev_hash": self.head,
                                     **{k: v for k, v in asdict(record).items() if v is not None}}
            entry["entry_hash"] = entry_hash(entry)
            line = _canonical(entry) + b"\n"
            end: int | None = None
            try:
                end = os.lseek(self._fd, 0, os.SEEK_END)
                if end and end + len(line) > self.max_bytes:
                    self._rotate()
                    end = 0
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                # Cut a torn line off, so the next entry starts a line of its own and the chain holds.
                if end is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, end)
                self.problem = f"audit log cannot be written: {exc.strerror or exc}"
                raise AuditUnavailable(f"{self.problem}; nothing was executed") from None
            self.problem = None
            self.seq, self.head = entry["seq"], entry["entry_hash"]
        return entry

    def _rotate(self) -> None:
        """Rename the live file to the next ``NAME.N`` and begin a new one; the chain runs on through ``head``."""
        rotated = rotated_files(self.path)
        number = int(rotated[-1].name.rsplit(".", 1)[1]) + 1 if rotated else 1
        fd = _open_locked(self.path.with_name(f".{self.path.name}.rotating"))
        try:
            os.rename(self.path, self.path.with_name(f"{self.path.name}.{number}"))
            os.rename(self.path.with_name(f".{self.path.name}.rotating"), self.path)
        except BaseException:
            os.close(fd)
            raise
        old, self._fd = self._fd, fd
        os.close(old)
        fsync_dir(self.path.parent)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()



@dataclass(frozen=True)
class VerifyReport:
    """The outcome of walking a log: how many entries, and the first bad one (file, line, seq, what is wrong)."""

    path: Path
    entries: int
    line: int | None = None
    seq: int | None = None
    problem: str = ""
    files: int = 1

    @property
    def ok(self) -> bool:
        return self.line is None

    def __str__(self) -> str:
        if self.ok:
            where = "" if self.files == 1 else f" in {self.files} files"
            return f"audit: {self.entries} entries{where}, chain intact"
        where = f"line {self.line}" + ("" if self.seq is None else f" (seq {self.seq})")
        return f"audit: {self.path}: {where}: {self.problem}"


def verify(path: Path) -> VerifyReport:
    """Walk the chain from the first line of the oldest rotated file to the live file's last.

    Reports the first entry that was edited, deleted or reordered, naming its file and line; a
    rotated file must continue the chain of the one before (``seq`` and ``prev_hash``), so a rotated
    file removed, swapped or cut short is found too.

    Raises:
        FileNotFoundError: neither the live file nor any rotated file exists.
    """
    files = rotated_files(path)
    if path.exists() or not files:
        files.append(path)
    prev, expected, total = GENESIS_HASH, 1, 0
    for index, file in enumerate(files):
        data = file.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, as it should
        total += len(lines) + (1 if torn else 0)
        report = _walk(file, lines, prev, expected)
        if isinstance(report, VerifyReport):
            return replace(report, entries=total, files=len(files))
        prev, expected = report
        if torn:
            last = len(lines) + 1
            return VerifyReport(file, total, last, None, "incomplete last line (an interrupted write?)",
                                files=len(files))
        if not lines and index < len(files) - 1:
            return VerifyReport(file, total, 1, None, "empty rotated file: expected the entries that continue "
                                                      "the chain", files=len(files))
    return VerifyReport(path, total, files=len(files))


def _walk(path: Path, lines: list[bytes], prev: str, expected: int) -> VerifyReport | tuple[str, int]:
    """Check one file's lines against the chain so far; the chain's head after them, or the first break."""
    read = [_read_entry(line) for line in lines]
    seqs = [entry["seq"] if entry is not None else None for entry, _ in read]
    count = len(lines)
    for number, (entry, problem) in enumerate(read, start=1):
        if entry is None:
            return VerifyReport(path, count, number, None, problem)
        seq = entry["seq"]
        if entry_hash(entry) != entry["entry_hash"]:
            return VerifyReport(path, count, number, seq, "edited: entry_hash does not match the entry's content")
        if seq > expected and expected in seqs[number:]:
            later = seqs.index(expected, number) + 1
            return VerifyReport(path, count, number, seq, f"reordered: expected seq {expected} here, found at "
                                                          f"line {later}")
        if seq > expected:
            missing = str(expected) if seq == expected + 1 else f"{expected}..{seq - 1}"
            return VerifyReport(path, count, number, seq, f"deleted: seq {missing} missing before this entry")
        if seq < expected:
            return VerifyReport(path, count, number, seq, f"reordered or duplicated: seq {seq} comes "
                                                          f"after seq {expected - 1}")
        if entry["prev_hash"] != prev:
            return VerifyReport(path, count, number, seq, "deleted or replaced: prev_hash does not match the "
                                                          "entry before")
        prev, expected = entry["entry_hash"], expected + 1
    return prev, expected
