"""The client of an ops agent: sign a command, send it, read the result; read and watch host health.

``AgentClient.execute`` builds the payload at send time (the validity window starts then),
signs exactly its bytes with the caller's key and calls ``Execute``. A refusal comes back as a
``CommandResult`` with its outcome and reason, never as an exception; gRPC errors (agent down,
TLS refused, deadline) raise ``grpc.RpcError``.

Without ``tls_dir`` the channel is plain (agents serve plain gRPC on loopback only); with it the
client presents ``tls_dir/<client>.pem`` (default the operator's), trusts only ``tls_dir/ca.pem``,
and checks that the agent's certificate names the ``host`` it was made for
(``<host>.agent.<trust domain>``, :func:`~ops_agent.pki.agent_dns_name`), whatever address it
dials: a holder of another agent's key cannot pose as this one (issue 8). A client made for one
host refuses, before sending anything, a command whose audience is another host.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ops_agent import pki
from ops_agent.envelope import DEFAULT_TTL_S, new_payload, sign
from ops_agent.errors import AgentInputError
from ops_agent.keys import SigningKey
from protos import ops_agent_pb2 as pb
from protos import ops_agent_pb2_grpc, telemetry_pb2
from protos.actions import Target, lookup

#: The full method name of Execute, for sending raw bytes.
EXECUTE_METHOD = "/cinefleet.ops_agent.v1.OpsAgent/Execute"
#: A control waits up to 15 s for the site's answer; the call may take that plus the agent's work.
DEFAULT_TIMEOUT_S = 30.0


class AgentClient:
    """One channel to one agent.

    Parameters:
        address: ``HOST:PORT`` of the agent.
        tls_dir: a ``cinefleet pki init`` folder; None for a plain channel.
        host: the host id of the agent at ``address``; required with ``tls_dir`` (its certificate must
            name this host), and then the only audience this client sends commands to.
        client_name: whose certificate to present from ``tls_dir`` (default the operator's).
        timeout: seconds each call may take.

    Raises:
        AgentInputError: ``tls_dir`` without ``host``.
    """

    def __init__(self, address: str, tls_dir: Path | None = None, *, host: str | None = None,
                 client_name: str = pki.OPERATOR, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.address, self.host, self.timeout = address, host, timeout
        options: list[tuple[str, Any]] = []
        if tls_dir is not None:
            if host is None:
                raise AgentInputError(f"--host: missing for the agent at {address}: with --tls-dir the agent's "
                                      "certificate is checked against the host it should be")
            options.append(("grpc.ssl_target_name_override",
                            pki.agent_dns_name(pki.trust_domain(Path(tls_dir)), host)))
            self.channel = grpc.secure_channel(address, pki.channel_credentials(Path(tls_dir), client_name), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self._stub = ops_agent_pb2_grpc.OpsAgentStub(self.channel)
        self._raw = self.channel.unary_unary(EXECUTE_METHOD, request_serializer=None,
                                             response_deserializer=pb.CommandResult.FromString)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def execute(self, action: pb.Action | str, target: Target | str | Sequence[str], key: SigningKey, host: str,
                site: str, *, actor: str = "", actor_role: str = "", approved_by: str = "", ttl_s: int = DEFAULT_TTL_S,
                command_id: str | None = None) -> pb.CommandResult:
        """Sign ``action`` on ``target`` for ``host`` of ``site`` with ``key`` and send it.

        ``action`` is an ``Action`` value or a name such as ``pause-queue``; ``target`` a typed
        target, or its ids (a worker, queue or run name; ``(RUN, STAGE)`` for a stage).
        """
        if isinstance(action, str):
            action = lookup(action).action
        if not isinstance(target, pb.WorkerRef | pb.QueueRef | pb.RunRef | pb.StageRef):
            target = lookup(action).make_target([target] if isinstance(target, str) else list(target))
        payload = new_payload(audience_host=host, site_id=site, action=action, target=target, actor=actor,
                              actor_role=actor_role, approved_by=approved_by, ttl_s=ttl_s, command_id=command_id)
        return self.send(sign(payload, key))

    def send(self, command: pb.SignedCommand) -> pb.CommandResult:
        """Send a signed command as it is; refused unsent if it is for another host than this client's.

        Raises:
            AgentInputError: the command's audience is not :attr:`host` (nothing was sent).
        """
        if self.host is not None:
            try:
                audience = pb.CommandPayload.FromString(command.payload).audience_host
            except DecodeError:
                audience = None  # not a payload the agent could run either; it rejects it as malformed
            if audience is not None and audience != self.host:
                raise AgentInputError(f"host {audience!r}: this client is for the agent of host {self.host!r} at "
                                      f"{self.address}; a command for {audience!r} goes only to an agent proven to "
                                      "be that host; nothing was sent")
        return self._stub.Execute(command, timeout=self.timeout)

    def send_bytes(self, raw: bytes) -> pb.CommandResult:
        """Send any bytes as an Execute request (the agent parses them itself)."""
        return self._raw(raw, timeout=self.timeout)

    def get_health(self) -> telemetry_pb2.HostHealth:
        return self._stub.GetHealth(pb.HealthRequest(), timeout=self.timeout)

    def watch_health(self, timeout: float | None = None) -> Iterator[telemetry_pb2.HostHealth]:
        """One HostHealth now, then one per sample; ``cancel()`` the returned call to stop."""
        return self._stub.WatchHealth(pb.HealthRequest(), timeout=timeout)

    def check(self, service: str = "") -> int:
        """The standard health check's status for ``service`` (``HealthCheckResponse.SERVING`` = 1)."""
        return int(self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout).status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
