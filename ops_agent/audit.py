"""The agent's tamper-evident audit log: one JSON line per command outcome, hash-chained.

Each entry carries ``seq`` (1, 2, ...), ``prev_hash`` (the previous entry's hash; 64 zeros for the
first) and ``entry_hash = sha256(prev_hash || canonical JSON of the entry without entry_hash)``, with
``prev_hash`` as its 64 hex characters and canonical JSON as sorted keys, no spaces, UTF-8. Walking
the chain from the first line finds an edited, deleted or reordered entry; each line must be exactly
the canonical bytes that were hashed, so no line can be read two ways (a duplicate key, another
encoding of the same entry). It cannot find the last entries cut off, nor a log rewritten whole
with fresh hashes: that needs the head anchored elsewhere (the control plane's copy of the outcomes).
Entries hold hashes and names only, never signatures, keys or tokens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ops_agent.errors import AuditLogError
from protos import ops_agent_pb2 as pb

#: The ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64


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


class AuditLog:
    """Appends hash-chained entries to a JSON-lines file, fsyncing each; resumes an existing file's chain.

    The file is locked (``flock``) while open, so a second writer fails at once instead of forking the chain.

    Raises:
        AuditLogError: another process holds the log, or its last line is incomplete or not a sound entry.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.seq, self.head = self._resume()
        except BlockingIOError:
            os.close(self._fd)
            raise AuditLogError(f"{path}: audit log is open by another process") from None
        except BaseException:
            os.close(self._fd)
            raise

    def _resume(self) -> tuple[int, str]:
        """The last entry's seq and hash, read from the end of the file."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0, GENESIS_HASH
        tail, start = b"", size
        while start > 0 and tail.count(b"\n") < 2:
            start = max(0, start - 4096)
            tail = os.pread(self._fd, size - start, start)
        if not tail.endswith(b"\n"):
            raise AuditLogError(f"{self.path}: last line is incomplete (an interrupted write?); expected a "
                                "newline-terminated entry; run `audit verify` and repair the file by hand")
        last = tail[:-1].rsplit(b"\n", 1)[-1]
        entry, problem = _read_entry(last)
        if entry is not None and entry_hash(entry) != entry["entry_hash"]:
            problem = "edited: entry_hash does not match the entry's content"
        if entry is None or problem:
            raise AuditLogError(f"{self.path}: line {self._line_count(size)} (the last): {problem}; expected a "
                                "sound entry as the chain's head; run `audit verify`")
        return entry["seq"], entry["entry_hash"]

    def _line_count(self, size: int) -> int:
        """How many lines the file holds; only counted to name the bad line in an error."""
        count, offset = 0, 0
        while offset < size:
            chunk = os.pread(self._fd, min(1 << 20, size - offset), offset)
            if not chunk:
                break
            count, offset = count + chunk.count(b"\n"), offset + len(chunk)
        return count

    def append(self, record: AuditRecord) -> dict[str, Any]:
        """Write one entry for ``record`` and fsync it; returns the entry as written."""
        with self._lock:
            entry: dict[str, Any] = {"seq": self.seq + 1, "ts": self._clock(), "prev_hash": self.head,
                                     **asdict(record)}
            entry["entry_hash"] = entry_hash(entry)
            line = _canonical(entry) + b"\n"
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise AuditLogError(f"{self.path}: short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except BaseException:
                # Cut a torn line off, so the next entry starts a line of its own and the chain holds.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)
                raise
            self.seq, self.head = entry["seq"], entry["entry_hash"]
        return entry

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
    """The outcome of walking a log: how many entries, and the first bad one (line, seq, what is wrong)."""

    path: Path
    entries: int
    line: int | None = None
    seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.line is None

    def __str__(self) -> str:
        if self.ok:
            return f"audit: {self.entries} entries, chain intact"
        where = f"line {self.line}" + ("" if self.seq is None else f" (seq {self.seq})")
        return f"audit: {self.path}: {where}: {self.problem}"


def verify(path: Path) -> VerifyReport:
    """Walk the chain from the first line and report the first entry that was edited, deleted or reordered."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as it should
    read = [_read_entry(line) for line in lines]
    seqs = [entry["seq"] if entry is not None else None for entry, _ in read]
    count = len(lines) + (1 if torn else 0)
    prev, expected = GENESIS_HASH, 1
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
    if torn:
        return VerifyReport(path, count, count, None, "incomplete last line (an interrupted write?)")
    return VerifyReport(path, count)
