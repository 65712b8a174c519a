"""The states a run, a stage and a worker go through, each defined once.

The values are the strings the site database, the outbox and the API have always carried, so
a reader of either sees no change; code compares against these members, never a literal.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """A final run changes no more (a retry of a failed stage reopens it)."""
        return self in FINAL_RUN


#: The states a run ends in; every other state is live and its stages may still be sent.
FINAL_RUN = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.BLOCKED, RunStatus.CANCELLED})
LIVE_RUN = frozenset(RunStatus) - FINAL_RUN


class StageStatus(StrEnum):
    WAITING = "waiting"  # for its dependencies, or for room on its queue
    QUEUED = "queued"  # sent to a worker
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # killed while running, its run cancelled
    SKIPPED = "skipped"  # never run: its run failed or was cancelled first

    @property
    def in_flight(self) -> bool:
        """Sent and not yet answered: the only states a worker's result may change."""
        return self in (StageStatus.QUEUED, StageStatus.RUNNING)


class WorkerStatus(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"
    OFFLINE = "offline"

    @property
    def draining(self) -> bool:
        return self in (WorkerStatus.DRAINING, WorkerStatus.DRAINED)
