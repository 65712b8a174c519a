"""Intake: requests taken from the site's Redis lists with a hand-over that loses none, and submissions.

An item is moved to a processing list, applied, then dropped, so a crash in between loses
nothing; an item applied twice is harmless (runs are keyed by id, results by stage attempt).
A malformed item is logged and dropped: applying it again after every restart would stop the site.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from site_scheduler.context import SiteContext
from site_scheduler.graph import RunGraph
from site_scheduler.messages import SiteMessage, Submission, read
from site_scheduler.rows import record_rows
from site_scheduler.status import RunStatus
from site_scheduler.tables import RunRow

M = TypeVar("M", bound=SiteMessage)


class Intake:
    def __init__(self, site: SiteContext, graph: RunGraph) -> None:
        self.site = site
        self.graph = graph

    def take(self, source: str, cls: type[M], handle: Callable[[M], None]) -> bool:
        """Take one item of ``source`` and apply it; returns False when the list was empty."""
        client, processing = self.site.redis, self.site.keys.processing(source)
        raw = client.lmove(source, processing, "LEFT", "RIGHT")
        if raw is None:
            return False
        message = read(cls, raw, source)
        if message is not None:
            handle(message)
        client.lrem(processing, 1, raw)  # type: ignore[arg-type]  # redis-py types the value str; bytes are sent as is
        return True

    def put_back(self) -> None:
        """On start-up (or after losing Redis): what a previous scheduler took but did not finish goes back."""
        keys, client = self.site.keys, self.site.redis
        for source in (keys.controls, keys.submissions, keys.results):
            while client.lmove(keys.processing(source), source, "RIGHT", "LEFT") is not None:
                pass

    def submit(self, request: Submission) -> None:
        """Create the run and its first stages; the project's bundle is in the store already."""
        with Session(self.site.engine) as session, session.begin():
            if session.get(RunRow, request.run_id) is not None:
                return  # a resubmitted request: the run exists already
            run = RunRow(run_id=request.run_id, site_id=self.site.site_id, tenant_id=request.tenant_id,
                         project_path=request.project, project_hash=request.project_hash, out_dir=request.out,
                         status=RunStatus.QUEUED, detail="", episode=None, submitted_seq=0,
                         submitted_at=time.time(), finished_at=None)
            session.add(run)
            run.submitted_seq = self.site.emit(session, "run", run)
            record_rows(session, request.rows, self.site.site_id, self.site.emit)
            for planned in request.stages:
                self.graph.add_stage(session, run, planned.planned())
