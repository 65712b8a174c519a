"""The messages a site's processes exchange through its Redis, as typed models validated when read.

Submissions and controls go from clients to the scheduler, results from workers to the
scheduler, heartbeats from workers to whoever reads them. Whoever reads a message validates it
here: a malformed one is logged and dropped (:func:`read`), so a bad sender can never stop the
scheduler, which would meet the same message again after every restart.
"""

from __future__ import annotations

import json
import logging
import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from site_scheduler.rows import Rows
from site_scheduler.status import WorkerStatus

if TYPE_CHECKING:
    from pipeline.kinds import Planned

log = logging.getLogger(__name__)

M = TypeVar("M", bound="SiteMessage")



class SiteMessage(BaseModel):
    """A message on the site's Redis: unknown fields are ignored (a newer sender), missing ones refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def encode(self) -> str:
        return self.model_dump_json()


def read(cls: type[M], raw: bytes | str, source: str) -> M | None:
    """The message ``raw`` holds, or None (logged) when it is not a valid ``cls``."""
    try:
        return cls.model_validate_json(raw)
    except ValidationError as exc:
        shown = raw[:200] if isinstance(raw, str) else raw[:200].decode("utf-8", "replace")
        log.warning("dropped a malformed %s from %s: %s; message: %s", cls.__name__, source,
                    "; ".join(f"{'.'.join(map(str, e['loc'])) or '(message)'}: {e['msg']}"
                              for e in exc.errors(include_url=False)), shown)
        return None


class PlannedStage(SiteMessage):
    stage_id: str = Field(min_length=1, max_length=128)
    kind: str
    needs: tuple[str, ...] = ()
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        # Imported here: the stage table brings the media stack, which a CLI command sending a
        # control (and importing this module) has no use for.
        from pipeline.kinds import KINDS

        if value not in KINDS:
            raise ValueError(f"a stage kind, one of {', '.join(KINDS)}")
        return value

    @classmethod
    def of(cls, planned: Planned) -> PlannedStage:
        return cls(stage_id=planned.stage_id, kind=planned.kind, needs=planned.needs, args=planned.args)

    def planned(self) -> Planned:
        from pipeline.kinds import Planned

        return Planned(self.stage_id, self.kind, self.needs, dict(self.args))


class Submission(SiteMessage):
    """A run to create: its project bundle (by hash, already in the store) and its first stages."""

    run_id: str = Field(min_length=1, max_length=64)
    tenant_id: str = Field(min_length=1, max_length=64)
    out: str = Field(min_length=1)
    project: str = Field(default="", description="Where the project file was; informational only.")
    project_hash: str = Field(default="", description="The ProjectBundle's hash; empty for no-op stages.")
    profile: str = "preview_local"
    rows: Rows = Field(default_factory=dict, description="Registry rows of the bundle, for the scheduler to record.")
    stages: tuple[PlannedStage, ...] = Field(min_length=1)


class ResultStatus(StrEnum):
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    #: The worker gave the attempt up, not the stage: its heartbeat could not be sent for longer
    #: than its TTL (Redis unreachable), so the site may be running the stage elsewhere. The
    #: scheduler sends the stage again; an infrastructure error is never a stage failure.
    ABANDONED = "abandoned"


class StageResult(SiteMessage):
    """What a worker reports of one attempt of a stage."""

    run_id: str
    stage_id: str
    attempt: int
    worker: str | None = None
    status: ResultStatus
    seconds: float | None = Field(default=None, description="Run time of the attempt; None when not measured.")
    error: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    rows: Rows = Field(default_factory=dict)
    hits: dict[str, int] = Field(default_factory=dict)
    misses: dict[str, int] = Field(default_factory=dict)


class StagePayload(SiteMessage):
    """The body of a stage's dramatiq message: what a worker needs to run one attempt."""

    run_id: str
    stage_id: str
    attempt: int
    kind: str
    tenant_id: str
    args: dict[str, Any] = Field(default_factory=dict)


class Control(SiteMessage):
    """An operator control for the scheduler to apply; unapplied after ``expires`` (unix seconds)."""

    id: str = Field(min_length=1, max_length=64)
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    expires: float = math.inf


class ControlReply(SiteMessage):
    ok: bool
    message: str


class Heartbeat(SiteMessage):
    """A worker's status, kept in a Redis hash that expires unless the worker renews it."""

    name: str
    host: str
    pid: int
    status: WorkerStatus
    queues: list[str]
    since: float
    heartbeat: float
    started_at: float | None = None
    current_job: str = ""
    #: Its ffmpeg and espeak-ng builds (tool -> build), and why it takes no media work ("" if it does).
    builds: dict[str, str] = Field(default_factory=dict)
    refused: str = ""

    def to_hash(self) -> dict[str, str | int | float]:
        """Redis hash fields hold strings: the queues and builds go as JSON, an absent start as 0."""
        return {**self.model_dump(mode="json", exclude={"queues", "started_at", "builds"}),
                "queues": json.dumps(self.queues), "builds": json.dumps(self.builds),
                "started_at": self.started_at or 0}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes], source: str) -> Heartbeat | None:
        """The heartbeat a hash holds, or None (logged) when it is malformed."""
        try:
            fields: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
            fields["queues"] = json.loads(fields.get("queues", "null"))
            fields["builds"] = json.loads(fields.get("builds", "{}"))
            fields["started_at"] = float(fields.get("started_at") or 0) or None
            return cls.model_validate(fields)
        except (ValidationError, ValueError, UnicodeDecodeError) as exc:
            log.warning("dropped a malformed heartbeat from %s: %s", source, exc)
            return None
