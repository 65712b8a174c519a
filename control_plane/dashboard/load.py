"""How loaded each site's queues are: jobs waiting, in flight, finished in the last hour, and a drain ETA.

The fleet read model (:class:`control_plane.fleet.Fleet`) knows a queue's paused flag and its
completed counter, not what is on it; this adds the stage counts the queues page and the fleet
page show. Both queries are bounded by live work, not history, and read indexes only: the live
stages are counted per site and queue in ``ix_stages_status_site_queue`` (status, site, queue: an
index range per live status, no table row read), and the last hour's finished stages are an index
range of ``ix_stages_status_updated``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.tables import StageRow

#: A stage on a queue that has not finished: waiting for room or its inputs, sent, running.
PENDING = ("waiting", "queued")
RUNNING = "running"
DONE = "done"
HOUR_S = 3600.0


@dataclass(frozen=True)
class QueueLoad:
    site_id: str
    queue: str
    waiting: int = 0
    running: int = 0
    done_last_hour: int = 0

    @property
    def drain_eta_s(self) -> float | None:
        """Seconds to finish what is on the queue at the last hour's pace; None when nothing finished."""
        if not self.waiting + self.running:
            return 0.0
        return (self.waiting + self.running) / self.done_last_hour * HOUR_S if self.done_last_hour else None


def queue_loads(session: Session, now: float) -> dict[tuple[str, str], QueueLoad]:
    """Load per ``(site_id, queue)`` for every queue that has live or recently finished stages."""
    count = func.count()
    live: dict[tuple[str, str], dict[str, int]] = {}
    for site_id, queue, status, n in session.execute(
            select(StageRow.site_id, StageRow.queue, StageRow.status, count)
            .where(StageRow.status.in_((*PENDING, RUNNING)))
            .group_by(StageRow.site_id, StageRow.queue, StageRow.status)):
        counts = live.setdefault((site_id, queue), {})
        key = "running" if status == RUNNING else "waiting"
        counts[key] = counts.get(key, 0) + n
    for site_id, queue, n in session.execute(
            select(StageRow.site_id, StageRow.queue, count)
            .where(StageRow.status == DONE, StageRow.updated_at >= now - HOUR_S)
            .group_by(StageRow.site_id, StageRow.queue)):
        live.setdefault((site_id, queue), {})["done_last_hour"] = n
    return {key: QueueLoad(key[0], key[1], **counts) for key, counts in live.items()}
