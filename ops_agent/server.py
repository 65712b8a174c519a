"""The running agent: the gRPC service, the health loop, and a clean shutdown.

One process per host (``cinefleet agent serve``). It serves ``OpsAgent`` (``protos/ops_agent.proto``),
the standard health service (``grpc.health.v1``; ``NOT_SERVING`` while shutting down) and server
reflection, with mutual TLS when given a PKI folder and on a loopback address only otherwise.

``Execute`` reads the request as raw bytes, so the size cap and the parse happen in
:func:`~ops_agent.envelope.parse_envelope` before anything else; then
:meth:`~ops_agent.envelope.Verifier.admit` runs every check in its fixed order. A command that
passes runs through the fixed handler table (:mod:`ops_agent.actions`); its result is stored
with its nonce, so the same command sent again returns that first result
(``replayed_result``) instead of running twice. Every command the agent reads, whatever
became of it, is one entry of the hash-chained audit log, written (and fsynced) before the
answer goes back.

The main thread samples the host once per interval (:class:`~ops_agent.health.HealthMonitor`),
publishes the sample to ``GetHealth`` and ``WatchHealth``, polls the worker
:class:`~ops_agent.supervisor.Supervisor`, reloads the trust bundle when its file changes (a
lower version is refused: no rollback), and hands the host state to a small thread that
pushes it to the site with ``mark-host`` whenever it changes, so a degraded or offline host
takes no new jobs. SIGTERM or SIGINT: health goes ``NOT_SERVING``, health streams end, RPCs in
flight get a grace period, the supervised workers are stopped, and the files are closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from ops_agent import actions, pki
from ops_agent.audit import AuditLog, AuditRecord
from ops_agent.config import AGENT_FILE, NONCES_FILE, TRUST_FLOOR_FILE, AgentConfig, AgentConfigError, check_listen
from ops_agent.envelope import Admission, Verifier, parse_envelope, payload_sha256
from ops_agent.errors import AgentError, Rejected
from ops_agent.health import HealthMonitor
from ops_agent.keys import TrustBundle
from ops_agent.nonces import NonceStore
from ops_agent.site_link import SITE_ERRORS, HostStatePusher, SiteLink, short_error
from ops_agent.supervisor import Supervisor
from ops_agent.trust import TrustFile
from protos import ops_agent_pb2 as pb
from protos import telemetry_pb2
from site_scheduler.errors import ControlRefused

log = logging.getLogger(__name__)

#: The service's full name, as clients and reflection see it.
SERVICE = pb.DESCRIPTOR.services_by_name["OpsAgent"].full_name
#: gRPC refuses bigger requests before the agent reads them (RESOURCE_EXHAUSTED, not audited);
#: anything between the envelope cap (4 KiB) and this is read and refused as REJECT_OVERSIZE.
MAX_RECEIVE_BYTES = 64 * 1024
#: Threads serving RPCs, and how many of them health streams may hold at once.
RPC_THREADS = 16
MAX_WATCHERS = 8
#: Seconds RPCs in flight may still take when the agent stops.
SHUTDOWN_GRACE_S = 5.0

STATE_NAMES = {telemetry_pb2.HOST_STATE_HEALTHY: "healthy", telemetry_pb2.HOST_STATE_DEGRADED: "degraded",
               telemetry_pb2.HOST_STATE_OFFLINE: "offline"}

# -- the pieces -------------------------------------------------------------------------------


class HealthBoard:
    """The latest health sample, for ``GetHealth``, and a condition ``WatchHealth`` streams wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest = telemetry_pb2.HostHealth()
        self._seq = 0
        self.closed = False

    def publish(self, sample: telemetry_pb2.HostHealth) -> None:
        with self._cond:
            self._latest, self._seq = sample, self._seq + 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, telemetry_pb2.HostHealth]:
        with self._cond:
            return self._seq, self._latest

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, telemetry_pb2.HostHealth] | None:
        """The next sample after ``seq``; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._seq > seq, timeout)
            return None if self.closed or self._seq <= seq else (self._seq, self._latest)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


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


# -- the service --------------------------------------------------------------------------------


class OpsAgentServicer:
    """``OpsAgent``: Execute (raw bytes in, CommandResult out), GetHealth and WatchHealth.

    Parameters:
        host: this agent's host id (the ``host`` of every result).
        verifier: decides which commands may run.
        link: the site, for the actions.
        audit: the agent's audit log.
        board: the latest health sample.
        trust: reloaded before each command, so a revocation counts from the next command on.
        control_plane_ids: with mutual TLS, the SPIFFE IDs allowed to call Execute; None without TLS.
    """

    def __init__(self, host: str, verifier: Verifier, link: SiteLink, audit: AuditLog, board: HealthBoard,
                 trust: TrustFile, control_plane_ids: frozenset[str] | None = None) -> None:
        self.host, self.verifier, self.link, self.audit, self.board, self.trust = (
            host, verifier, link, audit, board, trust)
        self.control_plane_ids = control_plane_ids
        self._inflight = _InFlight()
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)

    # -- Execute ------------------------------------------------------------------------------

    def Execute(self, raw: bytes, context: grpc.ServicerContext) -> pb.CommandResult:
        started = time.time()
        if self.control_plane_ids is not None:
            peers = pki.peer_spiffe_ids(context)
            if not self.control_plane_ids.intersection(peers):
                message = (f"peer {', '.join(peers) or 'without a SPIFFE ID'} may not send commands; expected "
                           f"{', '.join(sorted(self.control_plane_ids))}")
                digest = hashlib.sha256(raw).hexdigest()
                self._log_and_audit(AuditRecord(host=self.host, outcome=pb.Outcome.Name(pb.OUTCOME_REJECTED),
                                                message=f"{message} (request sha256 {digest})"))
                context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        self.trust.refresh()
        command: pb.SignedCommand | None = None
        try:
            command = parse_envelope(raw)
            with self._inflight.hold(payload_sha256(command)):
                return self._admit_and_run(command, len(raw), started)
        except Rejected as exc:
            return self._rejected(raw, command, exc, started)

    def _admit_and_run(self, command: pb.SignedCommand, size: int, started: float) -> pb.CommandResult:
        try:
            admission = self.verifier.admit(command, size)
        except SITE_ERRORS as exc:
            # The target could not be looked up: nothing ran and the nonce is still unused, so the
            # same command may be sent again once the site is back.
            result = pb.CommandResult(host=self.host, outcome=pb.OUTCOME_FAILED,
                                      message=f"cannot check the target: site unreachable ({short_error(exc)})",
                                      payload_sha256=payload_sha256(command), started_at=started,
                                      finished_at=time.time())
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
        self._log_and_audit(replace(AuditRecord.for_result(command, dispatched, admission.payload),
                                    outcome="DISPATCHED", message="sent to the site"))
        result = self._run(admission, started)
        try:
            self.verifier.remember_result(admission, result)
        except sqlite3.Error:  # the outcome is still answered and audited; a resend is refused as claimed
            log.exception("result of command %s not stored", admission.payload.command_id)
        self._log_and_audit(AuditRecord.for_result(command, result, admission.payload))
        return result

    def _run(self, admission: Admission, started: float) -> pb.CommandResult:
        payload = admission.payload
        try:
            message = self.link.call(lambda site: actions.execute(payload, site))
            outcome = pb.OUTCOME_EXECUTED
        except ControlRefused as exc:
            outcome, message = pb.OUTCOME_REFUSED, f"refused by site {self.verifier.site}: {exc}"
        except actions.UnknownAction as exc:
            outcome, message = pb.OUTCOME_FAILED, str(exc)
        except SITE_ERRORS as exc:
            outcome, message = pb.OUTCOME_FAILED, f"site {self.verifier.site} unreachable: {short_error(exc)}"
        except Exception as exc:  # a bug or an unexpected answer: reported and audited, never a lost outcome
            log.exception("command %s failed", payload.command_id)
            outcome, message = pb.OUTCOME_FAILED, f"internal error: {short_error(exc)}"
        return pb.CommandResult(command_id=payload.command_id, host=self.host, outcome=outcome, message=message,
                                payload_sha256=admission.payload_sha256, started_at=started,
                                finished_at=time.time())

    def _rejected(self, raw: bytes, command: pb.SignedCommand | None, exc: Rejected,
                  started: float) -> pb.CommandResult:
        result = pb.CommandResult(host=self.host, outcome=pb.OUTCOME_REJECTED, reason=exc.reason, message=exc.detail,
                                  started_at=started, finished_at=time.time())
        if command is not None:
            result.payload_sha256 = payload_sha256(command)
            record = AuditRecord.for_result(command, result)
        else:  # not even an envelope: identify the bytes themselves
            record = replace(AuditRecord.for_result(pb.SignedCommand(), result), payload_sha256="",
                             message=f"{exc.detail} (request sha256 {hashlib.sha256(raw).hexdigest()})")
        self._log_and_audit(record)
        return result

    def _log_and_audit(self, record: AuditRecord) -> None:
        self.audit.append(record)
        log.info("command %s %s %s: %s%s", record.command_id or "-", record.action or "-", record.target or "-",
                 record.outcome, f" {record.reason}" if record.reason else "")

    # -- health -------------------------------------------------------------------------------

    def GetHealth(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> telemetry_pb2.HostHealth:
        return self.board.latest()[1]

    def WatchHealth(self, request: pb.HealthRequest,
                    context: grpc.ServicerContext) -> Iterator[telemetry_pb2.HostHealth]:
        if not self._watchers.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"at most {MAX_WATCHERS} health streams at once; use GetHealth")
        try:
            context.add_callback(self.board.wake)  # a client that goes away wakes its stream at once
            seq, sample = self.board.latest()
            yield sample
            while context.is_active() and not self.board.closed:
                newer = self.board.wait_newer(seq, timeout=1.0)
                if newer is not None:
                    seq, sample = newer
                    yield sample
        finally:
            self._watchers.release()


def add_servicer(servicer: OpsAgentServicer, server: grpc.Server) -> None:
    """Register ``servicer``; Execute takes the request's raw bytes (the agent parses them itself)."""
    handlers = {
        "Execute": grpc.unary_unary_rpc_method_handler(
            servicer.Execute, request_deserializer=None, response_serializer=pb.CommandResult.SerializeToString),
        "GetHealth": grpc.unary_unary_rpc_method_handler(
            servicer.GetHealth, request_deserializer=pb.HealthRequest.FromString,
            response_serializer=telemetry_pb2.HostHealth.SerializeToString),
        "WatchHealth": grpc.unary_stream_rpc_method_handler(
            servicer.WatchHealth, request_deserializer=pb.HealthRequest.FromString,
            response_serializer=telemetry_pb2.HostHealth.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _control_plane_ids(tls_dir: Path) -> frozenset[str]:
    """The control plane's SPIFFE ID in the trust domain of ``tls_dir``'s CA (its URI SAN)."""
    try:
        ca = x509.load_pem_x509_certificate(pki.read(tls_dir / "ca.pem"))
    except ValueError as exc:
        raise pki.PkiError(f"{tls_dir / 'ca.pem'}: not a PEM certificate ({exc}); expected the CA made by "
                           "`cinefleet pki init`") from None
    try:
        uris = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    domains = [u.removeprefix("spiffe://").split("/")[0] for u in uris if u.startswith("spiffe://")]
    if not domains:
        raise pki.PkiError(f"{tls_dir / 'ca.pem'}: no spiffe:// URI SAN naming the trust domain; expected a CA "
                           "made by `cinefleet pki init`")
    return frozenset(pki.control_plane_id(d) for d in domains)


# -- the agent ----------------------------------------------------------------------------------


class Agent:
    """The whole agent in one process: :meth:`start`, then :meth:`run` until ``stop`` is set, then :meth:`close`."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        check_listen(config.listen, config.tls_dir is not None)
        if not 0.05 <= config.interval <= 60:
            raise AgentConfigError(f"--interval: value {config.interval!r}: expected 0.05 to 60 seconds")
        self.state_dir = config.state
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.address = ""
        self._closers: list[Callable[[], None]] = []
        try:
            self._open()
        except BaseException:
            self._close_files()
            raise

    def _open(self) -> None:
        config = self.config
        self.audit = AuditLog(config.audit_file)
        self._closers.append(self.audit.close)
        self.nonces = NonceStore(self.state_dir / NONCES_FILE)
        self._closers.append(self.nonces.close)
        self.link = SiteLink(config.site, config.data_dir)
        self._closers.append(self.link.close)
        targets = actions.Targets(config.host, config.site, self.link.client)
        # Through the link, so a site error drops its client and the next lookup finds the site anew.
        self.verifier = Verifier(config.host, config.site, TrustBundle(0, ()), self.nonces,
                                 lambda payload: self.link.call(lambda _site: targets(payload)))
        self.trust = TrustFile(config.trust_file, self._install_trust, config.state / TRUST_FLOOR_FILE)
        self.supervisor = (Supervisor(config.site, config.data_dir, config.host, config.workers,
                                      log_dir=self.state_dir) if config.workers else None)
        self.monitor = HealthMonitor(config.host, config.site, config.data_dir, link=self.link,
                                     thresholds=config.thresholds,
                                     supervisor=self.supervisor)
        self._closers.append(self.monitor.close)
        self.board = HealthBoard()
        self.pusher = HostStatePusher(config.host, self.link, config.interval)
        self.health = health.HealthServicer()
        control_plane = _control_plane_ids(config.tls_dir) if config.tls_dir is not None else None
        self.servicer = OpsAgentServicer(config.host, self.verifier, self.link, self.audit, self.board, self.trust,
                                         control_plane)

    def _install_trust(self, bundle: TrustBundle) -> None:
        self.verifier.trust = bundle

    def _close_files(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()

    def start(self) -> str:
        """Start the workers, take the first sample, then serve; returns the address listened on."""
        config = self.config
        if self.supervisor is not None:
            self.supervisor.start()
        self.sample()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="rpc"),
                                  options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                                           ("grpc.so_reuseport", 0)])
        add_servicer(self.servicer, self.server)
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if config.reflection:
            reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        try:
            if config.tls_dir is not None:
                port = self.server.add_secure_port(config.listen, pki.server_credentials(config.tls_dir, config.host))
            else:
                port = self.server.add_insecure_port(config.listen)
        except RuntimeError as exc:
            raise AgentError(f"--listen: cannot listen on {config.listen}: {exc}") from None
        if not port:
            raise AgentError(f"--listen: cannot listen on {config.listen}")
        self.address = f"{config.listen.rpartition(':')[0]}:{port}"
        self.server.start()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.pusher.start()
        self._write_agent_file()
        log.info("agent %s of site %s listening on %s (%s), %d worker(s), trust bundle %s version %s",
                 config.host, config.site, self.address, "mutual TLS" if config.tls_dir else "insecure, loopback",
                 len(config.workers), self.trust.path, self.trust.bundle.version)
        return self.address

    def sample(self) -> telemetry_pb2.HostHealth:
        """One health sample, published to the streams; the state is handed to the pusher."""
        sample = self.monitor.sample()
        sample.trusted_key_ids.extend(self.trust.usable_key_ids(time.time()))
        self.board.publish(sample)
        state = STATE_NAMES.get(sample.state)
        if state is not None:
            self.pusher.want(state)
        return sample

    def run(self, stop: threading.Event) -> None:
        """The health loop: supervisor, trust bundle, sample; once per interval until ``stop`` is set."""
        interval = self.config.interval
        due = time.monotonic() + interval
        while not stop.wait(max(0.0, due - time.monotonic())):
            if self.supervisor is not None:
                self.supervisor.poll()
            self.trust.refresh()
            try:
                self.sample()
            except Exception:  # a bug in sampling must not stop the agent serving commands
                log.exception("health sample failed")
            due = max(due + interval, time.monotonic())

    def close(self) -> None:
        """Stop serving (health NOT_SERVING first), end the streams, stop the workers, close the files."""
        self.health.enter_graceful_shutdown()
        self.board.close()
        server = getattr(self, "server", None)
        if server is not None:
            server.stop(SHUTDOWN_GRACE_S).wait()
        self.pusher.stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        (self.state_dir / AGENT_FILE).unlink(missing_ok=True)
        self._close_files()
        log.info("agent %s stopped", self.config.host)

    def _write_agent_file(self) -> None:
        data = {"host": self.config.host, "site": self.config.site, "listen": self.address, "pid": os.getpid(),
                "tls": self.config.tls_dir is not None, "audit": str(self.config.audit_file)}
        path = self.state_dir / AGENT_FILE
        tmp = path.with_name(f".{AGENT_FILE}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def serve(config: AgentConfig) -> None:
    """Run an agent until SIGTERM or SIGINT, then shut it down cleanly."""
    stop = threading.Event()
    agent = Agent(config)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.start()
        agent.run(stop)
    finally:
        agent.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
