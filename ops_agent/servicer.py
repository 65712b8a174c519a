"""The gRPC face of the agent: ``OpsAgent`` (Execute, GetHealth, WatchHealth) over the command service.

Thin on purpose: ``Execute`` reads the request as raw bytes (so the size cap and the parse
happen in the command service, before anything else), checks the caller's mTLS identity, and
hands the bytes to :class:`~ops_agent.service.CommandService`; the health calls read the
:class:`~ops_agent.board.HealthBoard`. A refusal is a ``CommandResult``, never a gRPC error;
only a caller without the control plane's identity gets ``PERMISSION_DENIED``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from ops_agent import pki
from ops_agent.board import HealthBoard
from ops_agent.service import CommandService
from protos import ops_agent_pb2 as pb
from protos import telemetry_pb2

#: The service's full name, as clients and reflection see it.
SERVICE = pb.DESCRIPTOR.services_by_name["OpsAgent"].full_name
#: How many ``WatchHealth`` streams may hold an RPC thread at once.
MAX_WATCHERS = 8


class OpsAgentServicer:
    """``OpsAgent``: Execute (raw bytes in, CommandResult out), GetHealth and WatchHealth.

    Parameters:
        commands: verifies, executes and audits commands.
        board: the latest health sample.
        control_plane_ids: with mutual TLS, the SPIFFE IDs allowed to call Execute; None without TLS.
    """

    def __init__(self, commands: CommandService, board: HealthBoard,
                 control_plane_ids: frozenset[str] | None = None) -> None:
        self.commands, self.board, self.control_plane_ids = commands, board, control_plane_ids
        self._watchers = threading.BoundedSemaphore(MAX_WATCHERS)

    def Execute(self, raw: bytes, context: grpc.ServicerContext) -> pb.CommandResult:
        if self.control_plane_ids is not None:
            peers = pki.peer_spiffe_ids(context)
            if not self.control_plane_ids.intersection(peers):
                message = (f"peer {', '.join(peers) or 'without a SPIFFE ID'} may not send commands; expected "
                           f"{', '.join(sorted(self.control_plane_ids))}")
                self.commands.refuse_caller(raw, message)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        return self.commands.execute(raw)

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
