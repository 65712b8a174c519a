"""The agent process: its parts wired together, the health loop, and a clean start and shutdown.

One process per host (``cinefleet agent serve``). It serves ``OpsAgent``
(``protos/ops_agent.proto``; :mod:`ops_agent.servicer` over the transport-free
:mod:`ops_agent.service`), the standard health service (``grpc.health.v1``; ``NOT_SERVING``
while shutting down) and server reflection, with mutual TLS when given a PKI folder and on a
loopback address only otherwise.

The main thread samples the host once per interval (:class:`~ops_agent.health.HealthMonitor`),
publishes the sample to ``GetHealth`` and ``WatchHealth``, polls the worker
:class:`~ops_agent.supervisor.Supervisor`, reloads the trust bundle when its file changes (a
lower version is refused: no rollback), and hands the host state to a small thread that
pushes it to the site with ``mark-host`` whenever it changes, so a degraded or offline host
takes no new jobs. With ``--control`` a :class:`~ops_agent.reporter.Reporter` thread sends the
latest sample to the control plane every report interval. SIGTERM or SIGINT: health goes
``NOT_SERVING``, health streams end, RPCs in flight get a grace period, the supervised workers
are stopped, and the files are closed.

gRPC is served by ``grpc.aio`` on an event loop of its own thread, so a call whose request
never arrives holds no thread (see :mod:`ops_agent.servicer`), and every connection is bounded
(:data:`SERVER_OPTIONS`): streams at once, handshake time, idle time, age, keepalive and pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ops_agent import actions, pki
from ops_agent.audit import AuditLog
from ops_agent.board import HealthBoard
from ops_agent.config import AGENT_FILE, NONCES_FILE, TRUST_FLOOR_FILE, AgentConfig, AgentConfigError, check_listen
from ops_agent.envelope import Verifier
from ops_agent.errors import AgentError
from ops_agent.files import write_file
from ops_agent.health import HealthMonitor
from ops_agent.keys import TrustBundle
from ops_agent.nonces import NonceStore
from ops_agent.rejections import RejectionWindows
from ops_agent.reporter import CONTROL_TOKEN_FILE, Reporter, read_token
from ops_agent.service import CommandService
from ops_agent.servicer import SERVICE, OpsAgentServicer, add_servicer
from ops_agent.site_link import HostStatePusher, SiteLink
from ops_agent.supervisor import Supervisor
from ops_agent.trust import TrustFile
from protos import telemetry_pb2

log = logging.getLogger(__name__)

#: gRPC refuses bigger requests before the agent reads them (RESOURCE_EXHAUSTED, not audited);
#: anything between the envelope cap (4 KiB) and this is read and refused as REJECT_OVERSIZE.
MAX_RECEIVE_BYTES = 64 * 1024
#: Seconds RPCs in flight may still take when the agent stops.
SHUTDOWN_GRACE_S = 5.0
#: Seconds the agent waits for its event loop to start serving or to stop.
LOOP_TIMEOUT_S = 30.0
#: What one connection may hold (option names from gRPC core's ``channel_arg_names.h``). A call
#: that never sends its request costs a coroutine, not a thread; these bound how many such calls a
#: connection carries and for how long, and free what dead or silent peers hold.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.max_concurrent_streams", 16),  # calls at once per connection (a gRPC client queues the rest)
    ("grpc.server_handshake_timeout_ms", 10_000),  # a TLS handshake that stalls is dropped
    ("grpc.max_connection_idle_ms", 5 * 60_000),  # a connection without calls is closed
    ("grpc.max_connection_age_ms", 30 * 60_000),  # every connection is renewed, stalled calls with it...
    ("grpc.max_connection_age_grace_ms", 5 * 60_000),  # ...after its calls had this long to finish
    ("grpc.keepalive_time_ms", 60_000),  # a peer that has gone away is found within keepalive time+timeout
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # a ping flood earns strikes...
    ("grpc.http2.max_ping_strikes", 2),  # ...and a GOAWAY
)

T = TypeVar("T")

STATE_NAMES = {telemetry_pb2.HOST_STATE_HEALTHY: "healthy", telemetry_pb2.HOST_STATE_DEGRADED: "degraded",
               telemetry_pb2.HOST_STATE_OFFLINE: "offline"}


# -- the agent ----------------------------------------------------------------------------------


class Agent:
    """The whole agent in one process: :meth:`start`, then :meth:`run` until ``stop`` is set, then :meth:`close`."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        check_listen(config.listen, config.tls_dir is not None)
        if not 0.05 <= config.interval <= 60:
            raise AgentConfigError(f"--interval: value {config.interval!r}: expected 0.05 to 60 seconds")
        if not 0.1 <= config.rejection_interval <= 3600:
            raise AgentConfigError(f"--rejection-interval: value {config.rejection_interval!r}: expected 0.1 to "
                                   "3600 seconds")
        if config.audit_max_bytes < 64 * 1024:
            raise AgentConfigError(f"--audit-max-bytes: value {config.audit_max_bytes!r}: expected at least 65536")
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
        self.audit = AuditLog(config.audit_file, max_bytes=config.audit_max_bytes)
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
        self.reporter = (Reporter(config.control, read_token(config.control_token_file or
                                                             config.data_dir / CONTROL_TOKEN_FILE),
                                  config.report_interval, config.tls_dir is not None)
                         if config.control else None)
        control_plane = (frozenset({pki.control_plane_id(pki.trust_domain(config.tls_dir))})
                         if config.tls_dir is not None else None)
        self.commands = CommandService(config.host, self.verifier,
                                       lambda payload: self.link.call(lambda site: actions.execute(payload, site)),
                                       self.audit, self.trust, RejectionWindows(config.rejection_interval))
        self.servicer = OpsAgentServicer(self.commands, self.board, control_plane)

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
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._loop_thread.start()
        self.address = self._on_loop(self._serve())
        self.pusher.start()
        if self.reporter is not None:
            self.reporter.agent_address = self.address
            self.reporter.start()
        self._write_agent_file()
        log.info("agent %s of site %s listening on %s (%s), %d worker(s), trust bundle %s version %s",
                 config.host, config.site, self.address, "mutual TLS" if config.tls_dir else "insecure, loopback",
                 len(config.workers), self.trust.path, self.trust.bundle.version)
        return self.address

    def _on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the gRPC event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(LOOP_TIMEOUT_S)

    async def _serve(self) -> str:
        """Make, bind and start the aio server on the event loop (an aio server belongs to the loop it is made on)."""
        config = self.config
        self.health = health.aio.HealthServicer()
        self.server = aio.server(options=list(SERVER_OPTIONS))
        add_servicer(self.servicer, self.server)
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
        await self.server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return f"{config.listen.rpartition(':')[0]}:{port}"

    async def _stop_serving(self) -> None:
        await self.health.enter_graceful_shutdown()
        self.board.close()  # health streams end now rather than at the grace period's end
        await self.server.stop(SHUTDOWN_GRACE_S)

    def sample(self) -> telemetry_pb2.HostHealth:
        """One health sample, published to the streams; the state is handed to the pusher."""
        sample = self.monitor.sample([self.audit.problem] if self.audit.problem else [])
        sample.trusted_key_ids.extend(self.trust.usable_key_ids(time.time()))
        sample.trust_bundle_version = self.trust.bundle.version
        sample.trust_problem = self.trust.problem or ""
        self.board.publish(sample)
        state = STATE_NAMES.get(sample.state)
        if state is not None:
            self.pusher.want(state)
        if self.reporter is not None:
            self.reporter.want(sample)
        return sample

    def run(self, stop: threading.Event) -> None:
        """The health loop: supervisor, trust bundle, sample; once per interval until ``stop`` is set."""
        interval = self.config.interval
        due = time.monotonic() + interval
        while not stop.wait(max(0.0, due - time.monotonic())):
            if self.supervisor is not None:
                self.supervisor.poll()
            self.trust.refresh()
            self.commands.flush_audit()
            try:
                self.sample()
            except Exception:  # a bug in sampling must not stop the agent serving commands
                log.exception("health sample failed")
            due = max(due + interval, time.monotonic())

    def close(self) -> None:
        """Stop serving (health NOT_SERVING first), end the streams, stop the workers, close the files."""
        loop = getattr(self, "_loop", None)
        if loop is not None:
            if getattr(self, "server", None) is not None:
                self._on_loop(self._stop_serving())
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(LOOP_TIMEOUT_S)
            loop.close()
        self.board.close()
        self.servicer.close()
        self.commands.flush_audit(stopping=True)
        self.pusher.stop()
        if self.reporter is not None:
            self.reporter.stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        (self.state_dir / AGENT_FILE).unlink(missing_ok=True)
        self._close_files()
        log.info("agent %s stopped", self.config.host)

    def _write_agent_file(self) -> None:
        data = {"host": self.config.host, "site": self.config.site, "listen": self.address, "pid": os.getpid(),
                "tls": self.config.tls_dir is not None, "audit": str(self.config.audit_file)}
        write_file(self.state_dir / AGENT_FILE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o644)


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
