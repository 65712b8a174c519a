"""The gRPC face of the agent: ``OpsAgent`` (Execute, GetHealth, WatchHealth) over the command service.

Thin on purpose, and asynchronous (``grpc.aio``): a call costs a thread only once its request
has arrived whole. A peer that opens calls and never sends their request (or sends it a byte at
a time) holds a coroutine, not one of a fixed pool of threads, so it cannot silence the agent:
``Execute``, ``GetHealth`` and the standard health check keep answering whatever other peers
hold open (issue 8). The blocking work of a command (verification, the site's answer, the
fsynced audit) runs in a bounded pool of :data:`COMMAND_THREADS` threads.

``Execute`` reads the request as raw bytes (so the size cap and the parse happen in the command
service, before anything else), checks the caller's mTLS identity, and hands the bytes to
:class:`~ops_agent.service.CommandService`; the health calls read the
:class:`~ops_agent.board.HealthBoard`. A refusal is a ``CommandResult``, never a gRPC error;
only a caller without the control plane's identity gets ``PERMISSION_DENIED``, and a command
the agent cannot put on record gets ``UNAVAILABLE`` (nothing was executed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc import aio

from ops_agent import pki
from ops_agent.board import HealthBoard
from ops_agent.errors import AuditUnavailable
from ops_agent.service import CommandService
from protos import ops_agent_pb2 as pb
from protos import telemetry_pb2

log = logging.getLogger(__name__)

#: The service's full name, as clients and reflection see it.
SERVICE = pb.DESCRIPTOR.services_by_name["OpsAgent"].full_name
#: How many ``WatchHealth`` streams may be open at once (each waits for samples on a thread of its own).
MAX_WATCHERS = 8
#: Threads running commands once their request has arrived; more commands wait their turn.
COMMAND_THREADS = 4

T = TypeVar("T")


def peer_label(context: aio.ServicerContext[Any, Any]) -> str:
    """Who is calling, as rejections are counted: the SPIFFE ID under mTLS, else the peer's address without port.

    The port is left out on purpose: a new connection costs a local client nothing, so a label with
    the port would give each connection a fresh allowance of audit lines.
    """
    ids = pki.peer_spiffe_ids(context)
    if ids:
        return ",".join(ids)
    peer = context.peer() or "unknown"
    family, _, rest = peer.partition(":")
    if family in ("ipv4", "ipv6"):
        return f"{family}:{rest.rpartition(':')[0]}"
    return peer


class OpsAgentServicer:
    """``OpsAgent``: Execute (raw bytes in, CommandResult out), GetHealth and WatchHealth, for ``grpc.aio``.

    Parameters:
        commands: verifies, executes and audits commands.
        board: the latest health sample.
        control_plane_ids: with mutual TLS, the SPIFFE IDs allowed to call Execute; None without TLS.
    """

    def __init__(self, commands: CommandService, board: HealthBoard,
                 control_plane_ids: frozenset[str] | None = None) -> None:
        self.commands, self.board, self.control_plane_ids = commands, board, control_plane_ids
        self._commands = futures.ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="command")
        self._waits = futures.ThreadPoolExecutor(MAX_WATCHERS, thread_name_prefix="watch")
        self._watching = 0  # only touched on the event loop's thread

    async def _in_pool(self, pool: futures.ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call, *args)

    async def Execute(self, raw: bytes, context: aio.ServicerContext[bytes, pb.CommandResult]) -> pb.CommandResult:
        peer = peer_label(context)
        if self.control_plane_ids is not None:
            peers = pki.peer_spiffe_ids(context)
            if not self.control_plane_ids.intersection(peers):
                message = (f"peer {', '.join(peers) or 'without a SPIFFE ID'} may not send commands; expected "
                           f"{', '.join(sorted(self.control_plane_ids))}")
                try:
                    await self._in_pool(self._commands, self.commands.refuse_caller, raw, message, peer)
                except AuditUnavailable:
                    log.error("refused caller %s not audited: the audit log cannot be written", peer)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        try:
            return await self._in_pool(self._commands, self.commands.execute, raw, peer)
        except AuditUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # abort raises; this line only tells the type checker so

    async def GetHealth(self, request: pb.HealthRequest,
                        context: aio.ServicerContext[pb.HealthRequest, telemetry_pb2.HostHealth]
                        ) -> telemetry_pb2.HostHealth:
        return self.board.latest()[1]

    async def WatchHealth(self, request: pb.HealthRequest,
                          context: aio.ServicerContext[pb.HealthRequest, telemetry_pb2.HostHealth]
                          ) -> AsyncIterator[telemetry_pb2.HostHealth]:
        if self._watching >= MAX_WATCHERS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {MAX_WATCHERS} health streams at once; use GetHealth")
        self._watching += 1
        try:
            seq, sample = self.board.latest()
            yield sample
            # A client that goes away cancels this coroutine; its wait ends within a second.
            while not self.board.closed:
                newer = await self._in_pool(self._waits, self.board.wait_newer, seq, 1.0)
                if newer is not None:
                    seq, sample = newer
                    yield sample
        finally:
            self._watching -= 1

    def close(self) -> None:
        """Let the command and stream threads end (after the server has stopped)."""
        self._commands.shutdown(wait=True, cancel_futures=True)
        self._waits.shutdown(wait=True, cancel_futures=True)


def add_servicer(servicer: OpsAgentServicer, server: aio.Server) -> None:
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
