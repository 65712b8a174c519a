"""The signer: the one process that holds the centre's signing key, answering on a local Unix socket.

Why a separate process: the HTTP process faces the network; if it is taken over, it must still not
be able to sign an arbitrary command. So the signer is asked only "sign command ID", reads that
command's row, its audit rows and its people itself, and signs only a command recorded as
requested (by an enabled operator allowed its tenant), confirmed when destructive, approved by a
second such person when the row or the signer's own policy says so, and not signed before. The
payload's actor and approved_by come from those rows, never from the caller. Everything else is
refused and audited. The key lives in ``DATA_DIR/keys`` (0600, made on first start by
``ops_agent.keys.init``, with the public key and a trust bundle for the agents beside it); the
socket is 0600. The signer also signs the audit chain's checkpoints.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from control_plane.audit import DEFAULT_CHECKPOINT_EVERY, AuditLog, Checkpoint, writing
from control_plane.commands import (
    APPROVED,
    AWAITING_APPROVAL,
    REQUESTED,
    SIGNED,
    SignatureRefused,
    SignerUnavailable,
    action_row,
    parse_policy,
)
from control_plane.errors import ControlError, ControlInputError
from control_plane.people import Role
from control_plane.tables import AuditRow, CommandRow, UserRow
from ops_agent import keys
from ops_agent.envelope import ID_PATTERN, new_payload, payload_sha256, sign
from protos import ops_agent_pb2 as pb

log = logging.getLogger(__name__)

#: The signer's socket and its ready file in the centre's data folder.
SOCKET_FILE = "signer.sock"
SIGNER_FILE = "signer.json"
KEYS_FOLDER = "keys"
#: Largest request line the signer reads.
MAX_REQUEST_BYTES = 4096
#: Seconds between the signer's own checkpoints of rows others appended.
DEFAULT_CHECKPOINT_INTERVAL_S = 30.0
ACTOR = "signer"
_commands, _audit, _users = CommandRow.__table__, AuditRow.__table__, UserRow.__table__


def load_or_create_key(folder: Path) -> keys.SigningKey:
    """The signing key in ``folder``; made (with its public key and a trust bundle) on first start."""
    files = keys.KeyFolder(folder)
    if not files.signing_key.exists():
        key, _ = keys.init(folder)
        return key
    return keys.SigningKey.load(files.signing_key)


class CommandSigner:
    """Decides, from the database alone, whether a command may be signed, and signs it.

    Parameters:
        engine: the fleet database.
        key: the centre's signing key.
        policy: action names that need approval whatever the row says.
        checkpoint_every: audit rows between checkpoints.
    """

    def __init__(self, engine: Engine, key: keys.SigningKey, policy: Iterable[str] = (),
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        self.engine, self.key, self.policy = engine, key, parse_policy(policy)
        self.audit = AuditLog(key, every=checkpoint_every)

    def sign(self, command_id: str) -> pb.SignedCommand:
        """Sign the recorded command ``command_id``; ``SignatureRefused`` (audited) when the records do not allow it."""
        refusal: str | None = None
        with writing(self.engine) as connection:
            row = connection.execute(select(_commands).where(_commands.c.command_id == command_id)
                                     .with_for_update()).first()
            refusal = self._refusal(connection, command_id, row)
            if row is not None and refusal is None:
                user = connection.execute(select(_users).where(_users.c.name == row.requester)).one()
                operator = action_row(row.action)
                payload = new_payload(audience_host=row.host, site_id=row.site_id, action=operator.action,
                                      target=operator.make_target(json.loads(row.target)), actor=row.requester,
                                      actor_role=user.role, approved_by=row.approver or "", command_id=command_id)
                envelope = sign(payload, self.key)
                digest = payload_sha256(envelope).hex()
                now = time.time()
                connection.execute(update(_commands).where(_commands.c.command_id == command_id).values(
                    status=SIGNED, envelope=envelope.SerializeToString(), payload_sha256=digest, signed_at=now,
                    updated_at=now))
                self.audit.append(connection, ACTOR, "signature", command_id,
                                  {"key_id": self.key.key_id, "payload_sha256": digest, "host": row.host,
                                   "actor": row.requester, "approved_by": row.approver,
                                   "expires_at": payload.expires_at})
                return envelope
        with writing(self.engine) as connection:
            self.audit.append(connection, ACTOR, "refused", command_id, {"step": "sign", "reason": refusal})
        raise SignatureRefused(f"signer refused command {command_id}: {refusal}")

    def _refusal(self, connection: Any, command_id: str, row: Any) -> str | None:
        """Why ``row`` may not be signed, or None. Checks the row against the audit rows and people tables."""
        if row is None:
            return "no such command"
        if row.signed_at is not None or row.status not in (REQUESTED, AWAITING_APPROVAL, APPROVED):
            return f"status {row.status}: already signed or finished"
        try:
            operator = action_row(row.action)
        except ControlInputError as exc:
            return str(exc)
        steps = {(r.kind, r.actor): json.loads(r.detail) for r in connection.execute(
            select(_audit.c.kind, _audit.c.actor, _audit.c.detail).where(_audit.c.subject == command_id))}
        request = steps.get(("request", row.requester))
        if request is None or (request.get("action"), request.get("target"), request.get("site"),
                               request.get("tenant")) != (row.action, json.loads(row.target), row.site_id, row.tenant):
            return "no audit row records this request as the command row states it"
        problem = self._person_problem(connection, row.requester, row.tenant, "requester")
        if problem:
            return problem
        if operator.destructive and not (row.confirmed and ("confirmation", row.requester) in steps):
            return f"{row.action} is destructive and no confirmation is recorded"
        if row.needs_approval or row.action in self.policy:
            if row.status != APPROVED or not row.approver:
                return f"{row.action} needs a second person's approval; none is recorded"
            if row.approver == row.requester:
                return "the approver is the requester; a second person must approve"
            if ("approval", row.approver) not in steps:
                return f"no audit row records {row.approver!r}'s approval"
            problem = self._person_problem(connection, row.approver, row.tenant, "approver")
            if problem:
                return problem
        elif row.status != REQUESTED:
            return f"status {row.status}: expected {REQUESTED}"
        if not row.host:
            return "no agent host is recorded for it"
        return None

    def _person_problem(self, connection: Any, name: str, tenant: str | None, what: str) -> str | None:
        person = connection.execute(select(_users).where(_users.c.name == name)).first()
        if person is None or person.disabled:
            return f"{what} {name!r} is unknown or disabled"
        if Role.parse(person.role) < Role.OPERATOR:
            return f"{what} {name!r} is {person.role}; expected operator or above"
        tenants = None if person.tenants is None else set(json.loads(person.tenants))
        if tenants is not None and (tenant is None or tenant not in tenants):
            return f"{what} {name!r} is not allowed tenant {tenant!r}"
        return None

    def checkpoint(self) -> Checkpoint | None:
        """Sign the audit chain's head now (after checking the rows since the last checkpoint)."""
        with writing(self.engine) as connection:
            return self.audit.checkpoint(connection)


class SignerRunning(ControlError):
    """Raised when a signer is already serving on the socket a new one was given."""


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class _Handler(socketserver.StreamRequestHandler):
    server: SignerServer

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
        try:
            answer = self.server.answer(line)
        except Exception:  # a bug must not kill the signer; the caller gets a refusal it can report
            log.exception("signer: request failed")
            answer = {"ok": False, "error": "internal error in the signer (see its log)"}
        self.wfile.write(json.dumps(answer).encode("utf-8") + b"\n")


class SignerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The socket front of a :class:`CommandSigner`: one JSON line in, one out, per connection."""

    daemon_threads = True

    def __init__(self, path: Path, signer: CommandSigner) -> None:
        self.signer = signer
        if path.exists():
            if _answers(path):
                raise SignerRunning(f"--socket: {path}: another signer is serving on it; expected one signer "
                                    "per socket (nothing was changed)")
            path.unlink()  # left by a signer that died
        old = os.umask(0o177)  # the socket is born 0600: no moment when others could connect
        try:
            super().__init__(str(path), _Handler)
        except OSError as exc:
            raise ControlInputError(f"--socket: value {str(path)!r}: cannot listen there: {exc}") from None
        finally:
            os.umask(old)
        path.chmod(0o600)

    def answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST_BYTES:
            return {"ok": False, "error": f"request: longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request: expected one JSON object on one line"}
        op = request.get("op") if isinstance(request, dict) else None
        if op == "sign":
            command_id = request.get("command_id")
            if not isinstance(command_id, str) or not ID_PATTERN.fullmatch(command_id):
                return {"ok": False, "error": f"command_id: value {command_id!r}: expected a command id"}
            try:
                envelope = self.signer.sign(command_id)
            except SignatureRefused as exc:
                return {"ok": False, "refused": True, "error": str(exc)}
            return {"ok": True, "envelope": base64.b64encode(envelope.SerializeToString()).decode("ascii")}
        if op == "checkpoint":
            made = self.signer.checkpoint()
            return {"ok": True, "seq": made.seq if made is not None else None}
        if op == "public_key":
            return {"ok": True, "public_key": self.signer.key.public_document()}
        return {"ok": False, "error": f"op: value {op!r}: expected 'sign', 'checkpoint' or 'public_key'"}


@dataclass(frozen=True)
class SignerClient:
    """Asks the signer process over its socket; what the HTTP process uses as its ``Signer``."""

    path: Path
    timeout: float = 10.0

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout)
                connection.connect(str(self.path))
                connection.sendall(json.dumps(request).encode("utf-8") + b"\n")
                with connection.makefile("rb") as reader:
                    line = reader.readline()
        except OSError as exc:
            raise SignerUnavailable(f"signer at {self.path}: {exc.strerror or exc}") from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise SignerUnavailable(f"signer at {self.path}: no answer (it may have stopped)") from None
        if not answer.get("ok"):
            raise (SignatureRefused if answer.get("refused") else ControlError)(answer.get("error", "refused"))
        return dict(answer)

    def sign(self, command_id: str) -> pb.SignedCommand:
        answer = self._ask({"op": "sign", "command_id": command_id})
        return pb.SignedCommand.FromString(base64.b64decode(answer["envelope"]))

    def checkpoint(self) -> int | None:
        seq = self._ask({"op": "checkpoint"})["seq"]
        return int(seq) if seq is not None else None


def serve(data_dir: Path, engine: Engine, *, socket_path: Path | None = None, policy: Iterable[str] = (),
          checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
          checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL_S) -> None:
    """Run the signer until SIGTERM or SIGINT: socket up, ``DATA_DIR/signer.json`` written, checkpoints on a timer."""
    key = load_or_create_key(data_dir / KEYS_FOLDER)
    signer = CommandSigner(engine, key, policy, checkpoint_every)
    path = socket_path or data_dir / SOCKET_FILE
    server = SignerServer(path, signer)
    stop = threading.Event()

    def stopping(_signum: int, _frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    def checkpoints() -> None:
        while not stop.wait(checkpoint_interval):
            try:
                signer.checkpoint()
            except ControlError:
                log.exception("signer: checkpoint refused")

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    ready = data_dir / SIGNER_FILE
    files = keys.KeyFolder(data_dir / KEYS_FOLDER)
    ready.write_text(json.dumps({"pid": os.getpid(), "socket": str(path), "key_id": key.key_id,
                                 "public_key": str(files.public_key), "bundle": str(files.bundle)}))
    timer = threading.Thread(target=checkpoints, name="checkpoints", daemon=True)
    timer.start()
    log.info("signer serving", extra={"socket": str(path), "key_id": key.key_id})
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()
        path.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
