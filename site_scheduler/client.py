"""What the site commands use to talk to a running site: Redis for requests, the database to read.

Nothing here writes the site database: submissions and controls are requests the scheduler
applies and answers.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
import sqlalchemy.exc
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.errors import InputError
from site_scheduler import outbox
from site_scheduler.config import SiteEndpoints
from site_scheduler.database import open_engine
from site_scheduler.errors import ControlRefused, SiteError, SiteUnreachable, SubmissionRefused
from site_scheduler.keys import DOORBELL, QUEUES, Keys
from site_scheduler.messages import Control, ControlReply, PlannedStage, SiteMessage, Submission
from site_scheduler.status import LIVE_RUN, RunStatus, StageStatus
from site_scheduler.tables import QueueRow, RunRow, StageRow, WorkerRow, row_dict

CONTROL_TIMEOUT_S = 15

F = TypeVar("F", bound=Callable[..., Any])


def _site_errors(method: F) -> F:
    """Make the site's own failures one family: Redis and database errors become :class:`SiteUnreachable`.

    Callers (the agent, the CLI, the API) then map one error root, :class:`SiteError`.
    """

    @functools.wraps(method)
    def wrapped(self: SiteClient, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise SiteUnreachable(f"site {self.endpoints.site_id}: its Redis did not answer: {exc}") from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SiteUnreachable(f"site {self.endpoints.site_id}: its database did not answer: "
                                  f"{type(exc).__name__}: {exc}") from exc

    return wrapped  # type: ignore[return-value]


class SiteClient:
    """A site seen from outside: requests through its Redis, reads from its database.

    Every method raises only :class:`SiteError` subclasses: :class:`SubmissionRefused` for bad
    input (nothing was sent), :class:`ControlRefused` for a control the site refused,
    :class:`SiteUnreachable` when its Redis or database cannot be reached.
    """

    @_site_errors
    def __init__(self, endpoints: SiteEndpoints) -> None:
        self.endpoints = endpoints
        self.keys = Keys(endpoints.namespace)
        self.redis = redis.Redis.from_url(endpoints.redis_url, socket_timeout=endpoints.redis_timeout_s)
        self.engine = open_engine(endpoints.db_url)

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()

    # -- requests --------------------------------------------------------------------------

    @_site_errors
    def submit(self, project: Path, out: Path | None = None, profile: str = "preview_local") -> str:
        """Validate the project here, put it in the site's store as a bundle, then submit the bundle's hash.

        The run renders for the site's tenant (``site serve --tenant``), not the ``tenant_id`` the
        project file claims: the submitter decides whose cache and store folder a run uses.

        Raises:
            SubmissionRefused: bad input (it names file, field, value and expectation); nothing was sent.
            SiteUnreachable: the site's store, Redis or database could not be reached.
        """
        # The project's models and the store come only with a submission: every other site command
        # (controls, listings, the outbox) starts a second sooner without them.
        from pipeline.bundle import gather, put_bundle
        from pipeline.documents import load_project
        from pipeline.stages.render_plan import check_profile
        from pipeline.workspace import Workspace
        from site_scheduler.rows import registry_rows

        try:
            check_profile(profile)
            gathered = gather(load_project(project))
        except InputError as exc:
            raise SubmissionRefused(str(exc)) from None
        tenant_id = self.endpoints.tenant
        # The bundle goes into the site's store now; its registry rows travel with the request,
        # for the scheduler (the site database's only writer) to record.
        ws = Workspace(Path(self.endpoints.store), tenant_id, self.endpoints.site_id, registry_url="sqlite://")
        try:
            bundle = put_bundle(ws, gathered)
            rows = registry_rows(ws)
        except OSError as exc:
            raise SiteUnreachable(f"site {self.endpoints.site_id}: cannot write its store "
                                  f"{self.endpoints.store}: {exc}") from exc
        finally:
            ws.close()
        from pipeline.kinds import first_stages  # the stage table brings the media stack: only when submitting

        run_id = uuid.uuid4().hex[:16]
        out = out or Path(self.endpoints.data_dir) / "out" / run_id
        request = Submission(run_id=run_id, project=str(gathered.loaded.path), out=str(out.resolve()), profile=profile,
                             tenant_id=tenant_id, project_hash=bundle, rows=rows,
                             stages=tuple(map(PlannedStage.of, first_stages(bundle, profile))))
        self._request(self.keys.submissions, request)
        return run_id

    @_site_errors
    def submit_probe(self, stages: int) -> str:
        """A run of ``stages`` no-op stages: measures dispatch overhead (``cinefleet bench site``)."""
        from pipeline.kinds import probe_stages

        run_id = f"probe-{uuid.uuid4().hex[:10]}"
        out = Path(self.endpoints.data_dir) / "out" / run_id
        request = Submission(run_id=run_id, out=str(out), tenant_id=self.endpoints.tenant,
                             stages=tuple(map(PlannedStage.of, probe_stages(stages))))
        self._request(self.keys.submissions, request)
        return run_id

    @_site_errors
    def control(self, action: str, **args: Any) -> str:
        """Apply a control and return the site's answer; it expires unapplied if the site does not take it in time.

        Raises:
            ControlRefused: the site refused it (missing target, wrong state); nothing changed.
            SiteError: no answer in time. The message says whether the control was withdrawn
                unapplied or was taken and its outcome is unknown.
        """
        request_id = uuid.uuid4().hex
        raw = self._request(self.keys.controls, Control(id=request_id, action=action, args=args,
                                                        expires=time.time() + CONTROL_TIMEOUT_S))
        answer = self.redis.blpop([self.keys.reply(request_id)], timeout=CONTROL_TIMEOUT_S)
        if answer is None:
            if self.redis.lrem(self.keys.controls, 1, raw):
                raise SiteUnreachable(f"site {self.endpoints.site_id} did not take {action} within "
                                      f"{CONTROL_TIMEOUT_S} s; it was withdrawn unapplied. "
                                      "Is `cinefleet site serve` running?")
            raise SiteUnreachable(f"site {self.endpoints.site_id} took {action} but did not answer within "
                                  f"{CONTROL_TIMEOUT_S} s; its outcome is unknown: "
                                  "check `cinefleet site workers|queues`")
        try:
            reply = ControlReply.model_validate_json(answer[1])
        except ValidationError as exc:
            raise SiteError(f"site {self.endpoints.site_id} answered {action} with a malformed reply: {exc}") from None
        if not reply.ok:
            raise ControlRefused(reply.message)
        return reply.message

    def _request(self, source: str, request: SiteMessage) -> str:
        """Queue a request for the scheduler and ring its doorbell, so an idle scheduler takes it now."""
        raw = request.encode()
        pipe = self.redis.pipeline()
        pipe.rpush(source, raw)
        pipe.rpush(self.keys.results, DOORBELL)
        pipe.execute()
        return raw

    # -- reading ---------------------------------------------------------------------------

    @_site_errors
    def run(self, run_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            run = session.get(RunRow, run_id)
            if run is None:
                return None
            stages = session.scalars(select(StageRow).where(StageRow.run_id == run_id).order_by(StageRow.stage_id))
            return {**row_dict(run), "stages": [
                {"stage_id": s.stage_id, "kind": s.kind, "queue": s.queue, "status": s.status,
                 "identity": s.identity, "attempts": s.attempts, "worker": s.worker, "error": s.error,
                 "output": s.output, "seconds": s.seconds}
                for s in stages
            ]}

    @_site_errors
    def runs(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [row_dict(r) for r in session.scalars(select(RunRow).order_by(RunRow.submitted_seq))]

    def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run is not None and RunStatus(run["status"]).final:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise SiteError(f"run {run_id} not finished after {timeout} s (status {run and run['status']})")
            time.sleep(poll)

    @_site_errors
    def workers(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [row_dict(w) for w in session.scalars(select(WorkerRow).order_by(WorkerRow.name))]

    @_site_errors
    def queues(self) -> list[dict[str, Any]]:
        """Depth, in flight, delayed and dead per queue, read from dramatiq's own Redis keys."""
        ns = self.endpoints.namespace
        figures = []
        with Session(self.engine) as session:
            rows = {q.name: q for q in session.scalars(select(QueueRow))}
            waiting = dict(session.execute(
                select(StageRow.queue, func.count()).join(RunRow, RunRow.run_id == StageRow.run_id)
                .where(StageRow.status == StageStatus.WAITING, RunRow.status.in_(LIVE_RUN))
                .group_by(StageRow.queue)
            ).all())
        now = time.time()
        # One keyspace scan for every worker's ack set (named ...__acks__.<worker>.<queue>), then
        # the figures of all queues in one round trip.
        acks: dict[str, list[bytes]] = {queue: [] for queue in QUEUES}
        for key in self.redis.scan_iter(f"{ns}:__acks__.*"):
            queue = key.decode().rsplit(".", 1)[-1]
            if queue in acks:
                acks[queue].append(key)
        pipe = self.redis.pipeline(transaction=False)
        for queue in QUEUES:
            for key in acks[queue]:
                pipe.scard(key)
            pipe.llen(f"{ns}:{queue}")
            pipe.zcount(self.keys.completed(queue), now - 3600, now)
            pipe.hlen(f"{ns}:{queue}.DQ.msgs")
            pipe.zcard(f"{ns}:{queue}.XQ")
        replies = iter(pipe.execute())
        for queue in QUEUES:
            in_flight = sum(next(replies) for _ in acks[queue])
            depth, per_hour, delayed, dead = (next(replies) for _ in range(4))
            row = rows.get(queue)
            left = depth + in_flight + waiting.get(queue, 0)
            figures.append({
                "queue": queue,
                "paused": bool(row and row.paused),
                "waiting": waiting.get(queue, 0),
                "depth": depth,
                "in_flight": in_flight,
                "delayed": delayed,
                "dead": dead,
                "completed": row.completed if row else 0,
                "throughput_per_hour": per_hour,
                # At the last hour's rate; None when nothing finished in that hour.
                "drain_eta_s": round(left * 3600 / per_hour, 1) if per_hour else (0.0 if left == 0 else None),
            })
        return figures

    @_site_errors
    def host_state(self, host: str) -> str | None:
        """The state workers on ``host`` obey (None: never marked, which counts as healthy)."""
        state = self.redis.get(self.keys.host_state(host))
        # redis-py types replies bytes | str; this client (no decode_responses) gets bytes.
        return None if state is None else state.decode()  # type: ignore[union-attr]

    @_site_errors
    def outbox(self, since: int) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [outbox.event_dict(row) for row in outbox.since(session, since)]
