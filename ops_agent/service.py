"""The agent's command service, without a transport: verify, execute, audit; one result per command.

:meth:`CommandService.execute` takes a command's bytes as received and returns its
``CommandResult``; the gRPC servicer (``ops_agent.servicer``) only hands bytes in and the result
back. A control plane's command path follows the same shape: this core class, with thin
transport adapters around it.

The bytes are size-capped and parsed first (:func:`~ops_agent.envelope.parse_envelope`), then
:meth:`~ops_agent.envelope.Verifier.admit` runs every check in its fixed order. A command that
passes runs through the table of operator actions (:mod:`ops_agent.actions`); its result is
stored with its nonce, so the same command sent again returns that first result
(``replayed_result``) instead of running twice. Every command the agent reads, whatever became
of it, is on the hash-chained audit log, written (and fsynced) before the answer goes back: a
command that ran as an entry of its own, a rejected request as an entry of its own or, when the
same peer was already rejected for the same reason within the interval, counted on a summary
entry (:mod:`ops_agent.rejections`), so that a flood of bad requests cannot fill the volume.
When the audit cannot be written, nothing is executed and the caller gets
:class:`~ops_agent.errors.AuditUnavailable` (the servicer answers ``UNAVAILABLE``); a command
whose dispatch could not be recorded gives its nonce back, so the same command may be sent
again once the log is writable. What any failure means as an outcome is decided once, by
:func:`outcome_of`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NamedTuple

from ops_agent.audit import AuditLog, AuditRecord
from ops_agent.envelope import Admission, Verifier, parse_envelope, payload_sha256
from ops_agent.errors import AuditUnavailable, Rejected
from ops_agent.rejections import RejectionWindows, Summary
from ops_agent.site_link import SITE_ERRORS, short_error
from ops_agent.trust import TrustFile
from protos import ops_agent_pb2 as pb
from protos.actions import UnknownAction
from site_scheduler.errors import ControlRefused

log = logging.getLogger(__name__)


class Verdict(NamedTuple):
    """What an error means for a command: its ``Outcome``, ``RejectReason`` (0 unless rejected) and message."""

    outcome: pb.Outcome
    reason: pb.RejectReason
    message: str
    expected: bool = True  # False for a bug: the caller logs its traceback


def outcome_of(exc: BaseException, site: str) -> Verdict:
    """The one ladder from exceptions to outcomes.

    A failed check is REJECTED (nothing ran); the site's refusal is REFUSED (nothing changed); an
    action off the table (the second lock), a site that cannot be reached and anything
    unexpected are FAILED.
    """
    if isinstance(exc, Rejected):
        return Verdict(pb.OUTCOME_REJECTED, exc.reason, exc.detail)
    if isinstance(exc, ControlRefused):
        return Verdict(pb.OUTCOME_REFUSED, pb.REJECT_REASON_UNSPECIFIED, f"refused by site {site}: {exc}")
    if isinstance(exc, UnknownAction):
        return Verdict(pb.OUTCOME_FAILED, pb.REJECT_REASON_UNSPECIFIED, str(exc))
    if isinstance(exc, SITE_ERRORS):
        return Verdict(pb.OUTCOME_FAILED, pb.REJECT_REASON_UNSPECIFIED,
                       f"site {site} unreachable: {short_error(exc)}")
    return Verdict(pb.OUTCOME_FAILED, pb.REJECT_REASON_UNSPECIFIED, f"internal error: {short_error(exc)}",
                   expected=False)


class _InFlight:
    """One lock per payload digest, so the same command sent twice at once runs once and the second waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[bytes, list[Any]] = {}

    @contextlib.contextmanager
    def hold(self, key: bytes) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]


class CommandService:
    """Verify → execute → audit, for commands as bytes; knows no transport.

    Parameters:
        host: this agent's host id (the ``host`` of every result).
        verifier: decides which commands may run.
        act: carries out a verified payload at the site and returns the site's answer
            (``ops_agent.actions.execute`` through the agent's site link).
        audit: the agent's audit log.
        trust: reloaded before each command, so a revocation counts from the next command on.
        rejections: which rejections are written in full and which are counted.
    """

    def __init__(self, host: str, verifier: Verifier, act: Callable[[pb.CommandPayload], str], audit: AuditLog,
                 trust: TrustFile, rejections: RejectionWindows | None = None) -> None:
        self.host, self.verifier, self.act, self.audit, self.trust = host, verifier, act, audit, trust
        self.rejections = rejections if rejections is not None else RejectionWindows()
        self._inflight = _InFlight()
        self._unavailable_since: float | None = None
        self._audit_lock = threading.Lock()

    @property
    def site(self) -> str:
        return self.verifier.site

    def execute(self, raw: bytes, peer: str = "") -> pb.CommandResult:
        """The result of the command in ``raw`` (a serialized ``SignedCommand``), audited before it is returned.

        ``peer`` names the sender, for counting its rejections (see :mod:`ops_agent.rejections`).

        Raises:
            AuditUnavailable: the audit log cannot be written; nothing was executed.
        """
        started = time.time()
        self.trust.refresh()
        command: pb.SignedCommand | None = None
        try:
            command = parse_envelope(raw)
            with self._inflight.hold(payload_sha256(command)):
                return self._admit_and_run(command, len(raw), started)
        except Rejected as exc:
            return self._rejected(raw, command, exc, started, peer)

    def refuse_caller(self, raw: bytes, message: str, peer: str = "") -> None:
        """Audit a request the transport refused before reading it (a caller without the right identity)."""
        digest = hashlib.sha256(raw).hexdigest()
        self._audit_rejection(peer, AuditRecord(host=self.host, outcome=pb.Outcome.Name(pb.OUTCOME_REJECTED),
                                                message=f"{message} (request sha256 {digest})", peer=peer))

    def flush_audit(self, stopping: bool = False) -> None:
        """Write the summaries of rejection windows that have ended (all of them when ``stopping``).

        Called once per health interval. While the audit cannot be written this is also the probe that
        finds it writable again: it writes an entry saying for how long it was not.
        """
        try:
            with self._audit_lock:
                self._resume_audit()
            self._write_summaries(self.rejections.drain() if stopping else self.rejections.due())
        except AuditUnavailable:
            log.warning("audit log still cannot be written: %s", self.audit.problem)

    def _result(self, exc: BaseException, command: pb.SignedCommand, started: float, *,
                payload: pb.CommandPayload | None = None, context: str = "") -> pb.CommandResult:
        verdict = outcome_of(exc, self.site)
        if not verdict.expected:
            log.error("command %s failed", payload.command_id if payload is not None else "-", exc_info=exc)
        return pb.CommandResult(command_id=payload.command_id if payload is not None else "", host=self.host,
                                outcome=verdict.outcome, reason=verdict.reason, message=context + verdict.message,
                                payload_sha256=payload_sha256(command), started_at=started, finished_at=time.time())

    def _admit_and_run(self, command: pb.SignedCommand, size: int, started: float) -> pb.CommandResult:
        try:
            admission = self.verifier.admit(command, size)
        except SITE_ERRORS as exc:
            # The target could not be looked up: nothing ran and the nonce is still unused, so the
            # same command may be sent again once the site is back.
            result = self._result(exc, command, started, context="cannot check the target: ")
            self._log_and_audit(AuditRecord.for_result(command, result))
            return result
        if admission.previous is not None:
            result = admission.previous
            record = AuditRecord.for_result(command, result, admission.payload)
            self._log_and_audit(replace(record, message=f"replayed result: {record.message}"))
            return result
        # The dispatch is on record before the action runs: a crash in between leaves an entry
        # saying the command went to the site, where a resend finds its id already claimed.
        dispatched = pb.CommandResult(command_id=admission.payload.command_id, host=self.host,
                                      payload_sha256=admission.payload_sha256, started_at=started)
        try:
            self._log_and_audit(replace(AuditRecord.for_result(command, dispatched, admission.payload),
                                        outcome="DISPATCHED", message="sent to the site"))
        except AuditUnavailable:
            self.verifier.release(admission)  # not executed: the same command may come again
            raise
        result = self._run(command, admission, started)
        try:
            self.verifier.remember_result(admission, result)
        except sqlite3.Error:  # the outcome is still answered and audited; a resend is refused as claimed
            log.exception("result of command %s not stored", admission.payload.command_id)
        try:
            self._log_and_audit(AuditRecord.for_result(command, result, admission.payload))
        except AuditUnavailable:
            # It ran, and its dispatch is on record: the caller gets the true outcome, not UNAVAILABLE.
            log.error("outcome of command %s not audited: %s", admission.payload.command_id, self.audit.problem)
        return result

    def _run(self, command: pb.SignedCommand, admission: Admission, started: float) -> pb.CommandResult:
        payload = admission.payload
        try:
            message = self.act(payload)
        except Exception as exc:  # every failure becomes an audited outcome, never a lost one
            return self._result(exc, command, started, payload=payload)
        return pb.CommandResult(command_id=payload.command_id, host=self.host, outcome=pb.OUTCOME_EXECUTED,
                                message=message, payload_sha256=admission.payload_sha256, started_at=started,
                                finished_at=time.time())

    def _rejected(self, raw: bytes, command: pb.SignedCommand | None, exc: Rejected,
                  started: float, peer: str) -> pb.CommandResult:
        verdict = outcome_of(exc, self.site)
        result = pb.CommandResult(host=self.host, outcome=verdict.outcome, reason=verdict.reason,
                                  message=verdict.message, started_at=started, finished_at=time.time())
        if command is not None:
            result.payload_sha256 = payload_sha256(command)
            record = AuditRecord.for_result(command, result)
        else:  # not even an envelope: identify the bytes themselves
            record = replace(AuditRecord.for_result(pb.SignedCommand(), result), payload_sha256="",
                             message=f"{exc.detail} (request sha256 {hashlib.sha256(raw).hexdigest()})")
        self._audit_rejection(peer, replace(record, peer=peer))
        return result

    def _audit_rejection(self, peer: str, record: AuditRecord) -> None:
        """Write ``record`` in full if it is its (peer, reason)'s first in the interval; else count it."""
        full, ended = self.rejections.admit(peer, record.reason)
        self._write_summaries(ended)
        if full:
            self._log_and_audit(record)

    def _write_summaries(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            self._log_and_audit(AuditRecord(host=self.host, outcome=pb.Outcome.Name(pb.OUTCOME_REJECTED),
                                            reason=summary.reason, message=summary.message, peer=summary.peer,
                                            count=summary.count, since=summary.started))

    def _log_and_audit(self, record: AuditRecord) -> None:
        with self._audit_lock:
            try:
                self._resume_audit()
                self.audit.append(record)
                self._log_record(record)
            except AuditUnavailable:
                if self._unavailable_since is None:
                    self._unavailable_since = time.time()
                    log.error("%s", self.audit.problem)
                raise

    def _resume_audit(self) -> None:
        """After the audit could not be written, put on record for how long (the first write that works)."""
        if self._unavailable_since is None:
            return
        self.audit.append(AuditRecord(host=self.host, outcome="AUDIT_RESUMED", message=(
            f"the audit log could not be written from {self._unavailable_since:.3f} to {time.time():.3f}; "
            "commands in between were answered UNAVAILABLE and not executed")))
        self._unavailable_since = None

    def _log_record(self, record: AuditRecord) -> None:
        log.info("command %s %s %s: %s%s", record.command_id or "-", record.action or "-", record.target or "-",
                 record.outcome, f" {record.reason}" if record.reason else "")
