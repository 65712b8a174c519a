"""The operator's command path at the centre: request → (confirmation) → (approval) → signature → dispatch →
outcome, each step a command-row state and an audit row. No transport here: the HTTP API and the CLI
are adapters over :class:`Commands`.

Only actions of the one operator-actions table (``protos.actions``) can be requested. A destructive
action needs the target's id typed as confirmation; an action the policy names needs a second
person's approval (another user, operator or above, allowed the command's tenant). This process
never signs: it asks the signer (:mod:`control_plane.signer`), which re-reads the row and the people
tables itself and signs only what they show requested, confirmed and approved. The agent to send to
comes from an injected :class:`AgentDirectory` (the fleet tables know which host runs what).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from control_plane.audit import AuditLog, canonical, writing
from control_plane.errors import Conflict, ControlError, ControlInputError, Forbidden, NotFound
from control_plane.people import Principal, Role, check_name
from control_plane.tables import CommandRow
from ops_agent.client import DEFAULT_TIMEOUT_S, AgentClient
from ops_agent.envelope import ID_PATTERN
from protos import ops_agent_pb2 as pb
from protos.actions import BY_CLI, BadTarget, OperatorAction, Target

REQUESTED, AWAITING_APPROVAL, APPROVED = "requested", "awaiting_approval", "approved"
SIGNED, DISPATCHED, SUCCEEDED, FAILED, REFUSED = "signed", "dispatched", "succeeded", "failed", "refused"
#: Every status a command row can have, in the order a command passes through them.
STATUSES = (REQUESTED, AWAITING_APPROVAL, APPROVED, SIGNED, DISPATCHED, SUCCEEDED, FAILED, REFUSED)
#: Largest page a listing returns.
MAX_PAGE = 500
_commands = CommandRow.__table__


class SignatureRefused(ControlError):
    """Raised when the signer refuses a command (not recorded as requested, confirmed or approved; signed already)."""


class SignerUnavailable(ControlError):
    """Raised when the signer process cannot be reached; nothing was signed."""


class AgentDirectory(Protocol):
    """Where a command goes and whose it is; the fleet tables implement it (the host running a worker,
    a healthy host of the site for queue, run and stage targets)."""

    def agent_for(self, site_id: str, action: str, target: Target) -> tuple[str, str]:
        """``(host id, agent address)`` for ``action`` on ``target`` at ``site_id``; ``NotFound`` when none."""
        ...

    def tenant_of(self, site_id: str, target: Target) -> str | None:
        """The tenant a run or stage target belongs to; None for site-wide targets (workers, queues)."""
        ...


class Signer(Protocol):
    """Signs a recorded command by id (the signer process over its socket, or its core in tests)."""

    def sign(self, command_id: str) -> pb.SignedCommand: ...


def action_row(action: str) -> OperatorAction:
    """The operator-actions row for a command name such as ``drain-worker``."""
    found = BY_CLI.get(action) if isinstance(action, str) else None
    if found is None:
        raise ControlInputError(f"action: value {action!r}: expected one of {', '.join(BY_CLI)}")
    return found


def build_target(row: OperatorAction, values: Sequence[str]) -> Target:
    """The typed target from its ids, each checked as the agent will check it."""
    for value in values:
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            raise ControlInputError(f"target: value {value!r}: expected an id matching {ID_PATTERN.pattern}")
    try:
        return row.make_target(list(values))
    except BadTarget as exc:
        raise ControlInputError(f"target: {exc}") from None


def confirmation_of(values: Sequence[str]) -> str:
    """What an operator types to confirm a destructive action: the target's id (ids joined by a space)."""
    return " ".join(values)


def parse_policy(actions: Iterable[str]) -> frozenset[str]:
    """The set of action names that need a second person's approval, each checked against the table."""
    return frozenset(action_row(a).cli for a in actions)


@dataclass(frozen=True)
class Command:
    """A command row as callers see it (never the envelope's bytes)."""

    command_id: str
    site_id: str
    tenant: str | None
    action: str
    target: tuple[str, ...]
    requester: str
    approver: str | None
    status: str
    needs_approval: bool
    confirmed: bool
    host: str | None
    outcome: str | None
    detail: str | None
    payload_sha256: str | None
    created_at: float
    updated_at: float
    approved_at: float | None
    signed_at: float | None
    dispatched_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, row: Any) -> Command:
        return cls(row.command_id, row.site_id, row.tenant, row.action, tuple(json.loads(row.target)), row.requester,
                   row.approver, row.status, bool(row.needs_approval), bool(row.confirmed), row.host, row.outcome,
                   row.detail, row.payload_sha256, row.created_at, row.updated_at, row.approved_at, row.signed_at,
                   row.dispatched_at, row.finished_at)

    def as_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in vars(self).items()}


def _locked(connection: Connection, command_id: str) -> Any:
    row = connection.execute(select(_commands).where(_commands.c.command_id == command_id).with_for_update()).first()
    if row is None:
        raise NotFound(f"command {command_id!r}: no such command")
    return row


class Commands:
    """Requests, approvals and execution of operator commands.

    Parameters:
        engine: the fleet database.
        directory: picks the agent for a command and tells a target's tenant.
        signer: signs recorded commands.
        policy: action names that need a second person's approval.
        audit: the audit log (without a key: this process makes no checkpoints).
        tls_dir: a ``cinefleet pki init`` folder for mTLS to the agents; None for plain loopback gRPC.
        agent_timeout: seconds a dispatch may take.
    """

    def __init__(self, engine: Engine, directory: AgentDirectory, signer: Signer, *,
                 policy: Iterable[str] = (), audit: AuditLog | None = None, tls_dir: Path | None = None,
                 agent_timeout: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.directory, self.signer = engine, directory, signer
        self.policy = parse_policy(policy)
        self.audit = audit or AuditLog()
        self.tls_dir, self.agent_timeout, self._clock = tls_dir, agent_timeout, clock

    def _refuse(self, actor: str, subject: str, error: ControlError, **detail: Any) -> ControlError:
        """Record a refused request (in its own transaction, so it stays) and return the error to raise."""
        with writing(self.engine) as connection:
            self.audit.append(connection, actor, "refused", subject,
                              {**detail, "error": type(error).__name__, "reason": str(error)})
        return error

    def request(self, principal: Principal, action: str, target: str | Sequence[str], site: str,
                confirm: str | None = None) -> Command:
        """Record a request; it then awaits approval (policy) or is ready for :meth:`execute`.

        Raises:
            ControlInputError: unknown action, bad target or site, missing or wrong confirmation.
            Forbidden: below operator, or the target's tenant is not the principal's.
        """
        values = [target] if isinstance(target, str) else list(target)
        asked = {"action": action, "target": values, "site": site}
        try:
            principal.require(Role.OPERATOR, any_tenant=True)
            check_name(site, "site")
            row = action_row(action)
            typed = build_target(row, values)
            tenant = self.directory.tenant_of(site, typed)
            principal.require(Role.OPERATOR, tenant)
            expected = confirmation_of(values)
            if row.destructive and confirm != expected:
                raise ControlInputError(f"confirm: value {confirm!r}: {row.cli} is destructive; expected the target's "
                                        f"id {expected!r} typed as confirmation")
        except ControlError as exc:
            raise self._refuse(principal.user, "request", exc, **asked) from None
        needs_approval = row.cli in self.policy
        now = self._clock()
        command_id = uuid.uuid4().hex
        with writing(self.engine) as connection:
            connection.execute(insert(_commands).values(
                command_id=command_id, site_id=site, tenant=tenant, action=row.cli, target=canonical(values),
                requester=principal.user, requester_role=principal.role.label, confirmed=row.destructive,
                needs_approval=needs_approval, status=AWAITING_APPROVAL if needs_approval else REQUESTED,
                created_at=now, updated_at=now))
            self.audit.append(connection, principal.user, "request", command_id,
                              {**asked, "tenant": tenant, "role": principal.role.label,
                               "needs_approval": needs_approval})
            if row.destructive:
                self.audit.append(connection, principal.user, "confirmation", command_id, {"typed": confirm})
        return self.get(command_id)

    def approve(self, principal: Principal, command_id: str) -> Command:
        """Approve a command awaiting approval: another person than the requester, operator or above, same tenant.

        Raises:
            NotFound, Conflict (not awaiting approval), Forbidden (the requester, a viewer, another tenant).
        """
        refusal: ControlError | None = None
        with writing(self.engine) as connection:
            try:
                principal.require(Role.OPERATOR, any_tenant=True)
                row = _locked(connection, command_id)
                principal.require(Role.OPERATOR, row.tenant)
                if row.status != AWAITING_APPROVAL:
                    raise Conflict(f"command {command_id}: status {row.status}: expected {AWAITING_APPROVAL}")
                if row.requester == principal.user:
                    raise Forbidden(f"command {command_id}: approver {principal.user!r} is its requester; expected "
                                    "a second person")
            except ControlError as exc:
                refusal = exc
            else:
                now = self._clock()
                connection.execute(update(_commands).where(_commands.c.command_id == command_id).values(
                    status=APPROVED, approver=principal.user, approved_at=now, updated_at=now))
                self.audit.append(connection, principal.user, "approval", command_id, {"role": principal.role.label})
        if refusal is not None:
            raise self._refuse(principal.user, command_id, refusal, step="approve")
        return self.get(command_id)

    def execute(self, command_id: str) -> Command:
        """Pick the agent, have the command signed, send it and record the outcome (a failure is a status).

        Raises:
            NotFound; Conflict when the command is not ready (awaiting approval, or already past signing).
        """
        command = self.get(command_id)
        ready = APPROVED if command.needs_approval else REQUESTED
        if command.status != ready:
            raise Conflict(f"command {command_id}: status {command.status}: expected {ready} to execute it")
        row = action_row(command.action)
        try:
            host, address = self.directory.agent_for(command.site_id, row.cli, row.make_target(command.target))
        except NotFound as exc:  # the target, or the site, is unknown to the centre: nothing to send
            return self._finish(command_id, FAILED, "UNKNOWN_TARGET", str(exc), unsigned_only=True)
        except ControlError as exc:
            return self._finish(command_id, FAILED, "NO_AGENT", str(exc), unsigned_only=True)
        with writing(self.engine) as connection:
            connection.execute(update(_commands).where(_commands.c.command_id == command_id,
                                                       _commands.c.signed_at.is_(None)).values(
                host=host, address=address, updated_at=self._clock()))
        try:
            envelope = self.signer.sign(command_id)
        except SignatureRefused as exc:
            return self._finish(command_id, REFUSED, "SIGNATURE_REFUSED", str(exc), unsigned_only=True)
        except SignerUnavailable as exc:
            return self._finish(command_id, FAILED, "SIGNER_UNAVAILABLE", str(exc), unsigned_only=True)
        except ControlError as exc:  # the signer answered with an error of its own (its log says more)
            return self._finish(command_id, FAILED, "SIGNER_ERROR", str(exc), unsigned_only=True)
        # Send to the agent the signature names (a concurrent execute may have chosen another before it)
        with self.engine.connect() as connection:
            host, address = connection.execute(select(_commands.c.host, _commands.c.address)
                                               .where(_commands.c.command_id == command_id)).one()
        digest = hashlib.sha256(envelope.payload).hexdigest()
        with writing(self.engine) as connection:
            connection.execute(update(_commands).where(_commands.c.command_id == command_id).values(
                status=DISPATCHED, dispatched_at=self._clock(), updated_at=self._clock()))
            self.audit.append(connection, "centre", "dispatch", command_id,
                              {"host": host, "address": address, "payload_sha256": digest})
        try:
            with AgentClient(address, self.tls_dir, host=host if self.tls_dir is not None else None,
                             timeout=self.agent_timeout) as client:
                result = client.send(envelope)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return self._finish(command_id, FAILED, f"UNREACHABLE_{code}", f"agent {host} at {address}: {details}")
        outcome = pb.Outcome.Name(result.outcome)
        if result.outcome == pb.OUTCOME_REJECTED:
            outcome = f"{outcome}:{pb.RejectReason.Name(result.reason)}"
        return self._finish(command_id, SUCCEEDED if result.outcome == pb.OUTCOME_EXECUTED else FAILED, outcome,
                            result.message)

    def _finish(self, command_id: str, status: str, outcome: str, detail: str, *,
                unsigned_only: bool = False) -> Command:
        """Record the outcome. ``unsigned_only``: a failure before signing, recorded only if no concurrent
        execute of the same command got it signed meanwhile (whose outcome that one records)."""
        now = self._clock()
        with writing(self.engine) as connection:
            query = update(_commands).where(_commands.c.command_id == command_id)
            if unsigned_only:
                query = query.where(_commands.c.signed_at.is_(None))
            if connection.execute(query.values(status=status, outcome=outcome, detail=detail, finished_at=now,
                                               updated_at=now)).rowcount:
                self.audit.append(connection, "centre", "outcome", command_id,
                                  {"status": status, "outcome": outcome, "detail": detail})
        return self.get(command_id)

    def get(self, command_id: str) -> Command:
        with self.engine.connect() as connection:
            row = connection.execute(select(_commands).where(_commands.c.command_id == command_id)).first()
        if row is None:
            raise NotFound(f"command {command_id!r}: no such command")
        return Command.of(row)

    def visible(self, principal: Principal, command: Command) -> bool:
        return principal.allows_tenant(command.tenant)

    def list(self, principal: Principal, *, site: str | None = None, status: str | None = None,
             tenant: str | None = None, action: str | None = None, after: str | None = None,
             limit: int = 50) -> list[Command]:
        """Commands newest first, filtered, only of the principal's tenants; keyset on ``after`` (a command id)."""
        if status is not None and status not in STATUSES:
            raise ControlInputError(f"status: value {status!r}: expected one of {', '.join(STATUSES)}")
        if action is not None:
            action_row(action)
        if not 1 <= limit <= MAX_PAGE:
            raise ControlInputError(f"limit: value {limit!r}: expected 1..{MAX_PAGE}")
        c = _commands.c
        query = select(_commands).order_by(c.created_at.desc(), c.command_id.desc()).limit(limit)
        for column, value in ((c.site_id, site), (c.status, status), (c.tenant, tenant), (c.action, action)):
            if value is not None:
                query = query.where(column == value)
        if principal.tenants is not None:
            query = query.where(c.tenant.in_(sorted(principal.tenants)))
        with self.engine.connect() as connection:
            if after is not None:
                anchor = connection.execute(select(c.created_at, c.command_id).where(c.command_id == after)).first()
                if anchor is None:
                    raise ControlInputError(f"after: value {after!r}: expected the id of a listed command")
                query = query.where((c.created_at < anchor.created_at) |
                                    ((c.created_at == anchor.created_at) & (c.command_id < anchor.command_id)))
            return [Command.of(r) for r in connection.execute(query)]
