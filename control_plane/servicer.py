"""The ``Replication`` gRPC service: a thin adapter over :class:`~control_plane.ingest.Ingest` and
:class:`~control_plane.health.Telemetry`, with one error mapping (:data:`STATUS`, applied in :func:`_answer`).

Every call names a site and carries that site's token (``authorization: Bearer TOKEN``); the
:class:`~control_plane.sites.Gate` decides before anything is read from the request's events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc
from sqlalchemy.exc import OperationalError

from control_plane.errors import ControlError, Refused
from control_plane.health import Report, ReportRejected, Telemetry
from control_plane.ingest import Batch, BatchRejected, Event, Ingest, Outcome
from control_plane.sites import Gate
from protos import replication_pb2 as pb
from protos import replication_pb2_grpc, telemetry_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

_OUTCOMES = {Outcome.APPLIED: pb.PUSH_RESULT_APPLIED, Outcome.GAP: pb.PUSH_RESULT_GAP,
             Outcome.DUPLICATE: pb.PUSH_RESULT_DUPLICATE}
_STATES = {telemetry_pb2.HOST_STATE_HEALTHY: "healthy", telemetry_pb2.HOST_STATE_DEGRADED: "degraded",
           telemetry_pb2.HOST_STATE_OFFLINE: "offline"}
#: The one mapping from the centre's errors to gRPC status codes (the most specific first).
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Refused, grpc.StatusCode.PERMISSION_DENIED),
    (BatchRejected, grpc.StatusCode.INVALID_ARGUMENT),
    (ReportRejected, grpc.StatusCode.INVALID_ARGUMENT),
    (OperationalError, grpc.StatusCode.UNAVAILABLE),  # the fleet database is down: the caller retries
    (ControlError, grpc.StatusCode.FAILED_PRECONDITION),
)


def _token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


def _event(event: pb.OutboxEvent) -> Event:
    try:
        row = json.loads(event.row_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BatchRejected(f"event seq {event.seq}: row_json is not JSON ({exc}); expected a JSON object") from None
    if not isinstance(row, dict):
        raise BatchRejected(f"event seq {event.seq}: row_json is {type(row).__name__}; expected a JSON object")
    return Event(seq=event.seq, entity=event.entity, key=tuple(event.key), op=event.op, row=row,
                 tenant_id=event.tenant_id, committed_at=event.committed_at or None)


def _report(request: pb.HostReport) -> Report:
    h = request.health
    if h.state not in _STATES:
        raise ReportRejected(f"health.state: value {h.state}: expected HOST_STATE_HEALTHY, _DEGRADED or _OFFLINE")
    return Report(
        site_id=h.site_id, host=h.host, state=_STATES[h.state], agent_address=request.agent_address,
        agent_tls=request.agent_tls, interval_s=request.interval_seconds, reasons=tuple(h.reasons),
        sampled_at=h.sampled_at, load_1m=h.load_1m, load_5m=h.load_5m, cpu_count=h.cpu_count,
        memory_used_bytes=h.memory_used_bytes, memory_total_bytes=h.memory_total_bytes,
        disks=tuple({"mount": d.mount, "used_bytes": d.used_bytes, "total_bytes": d.total_bytes,
                     "high_water": d.high_water, "over_high_water": d.over_high_water} for d in h.disks),
        temperatures=tuple({"sensor": t.sensor, "celsius": t.celsius} for t in h.temperatures),
        workers=tuple({"name": w.name, "status": w.status, "pid": w.pid, "queues": list(w.queues),
                       "current_job": w.current_job, "supervised": w.supervised, "restarts": w.restarts}
                      for w in h.workers),
        trusted_key_ids=tuple(h.trusted_key_ids), trust_bundle_version=h.trust_bundle_version,
        trust_problem=h.trust_problem)


def _answer(context: grpc.ServicerContext, method: str, work: Callable[[], T]) -> T:
    """Run ``work``; turn the centre's errors into a status and its message; anything else is a bug and says so."""
    try:
        return work()
    except Exception as exc:
        code = next((code for kind, code in STATUS if isinstance(exc, kind)), None)
        if code is None:
            log.exception("%s failed", method)
            code, message = grpc.StatusCode.INTERNAL, f"{method}: internal error ({type(exc).__name__})"
        else:
            message = str(exc).splitlines()[0] if isinstance(exc, OperationalError) else str(exc)
            log.warning("%s: %s: %s", method, code.name, message)
        context.abort(code, message)
        raise  # abort raises; this line only tells the type checker so


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, ingest: Ingest, telemetry: Telemetry, gate: Gate) -> None:
        self.ingest, self.telemetry, self.gate = ingest, telemetry, gate

    def PushOutbox(self, request: pb.OutboxBatch, context: grpc.ServicerContext) -> pb.PushAck:
        def push() -> pb.PushAck:
            self.gate.admit(request.site_id, _token(context), "PushOutbox", context.peer())
            ack = self.ingest.apply(Batch(request.site_id, [_event(e) for e in request.events], request.site_head))
            return pb.PushAck(result=_OUTCOMES[ack.outcome], cursor=ack.cursor, next_seq=ack.next_seq,
                              applied=ack.applied)

        return _answer(context, "PushOutbox", push)

    def ReportHealth(self, request: pb.HostReport, context: grpc.ServicerContext) -> pb.HealthAck:
        def report() -> pb.HealthAck:
            self.gate.admit(request.health.site_id, _token(context), "ReportHealth", context.peer())
            return pb.HealthAck(received_at=self.telemetry.record(_report(request)))

        return _answer(context, "ReportHealth", report)
