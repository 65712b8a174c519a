"""What every part of the scheduler shares: the site's identity, database, Redis and store."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.workspace import Workspace
from site_scheduler import outbox
from site_scheduler.config import SiteEndpoints
from site_scheduler.keys import Keys


class SiteContext:
    def __init__(self, endpoints: SiteEndpoints, engine: Engine) -> None:
        self.endpoints = endpoints
        self.site_id = endpoints.site_id
        self.engine = engine
        self.redis = redis.Redis.from_url(endpoints.redis_url, socket_timeout=endpoints.redis_timeout_s)
        self.keys = Keys(endpoints.namespace)
        self._workspaces: dict[str, Workspace] = {}
        self.health = Health(self.redis, self.keys)

    def workspace(self, tenant_id: str) -> Workspace:
        """A tenant's view of the site store; the scheduler only reads the registry through it."""
        if tenant_id not in self._workspaces:
            self._workspaces[tenant_id] = Workspace(Path(self.endpoints.store), tenant_id, self.site_id,
                                                    registry_url=self.engine)
        return self._workspaces[tenant_id]

    def emit(self, session: Session, entity: str, row: Any) -> int:
        """Append a row's new state to the outbox, in the transaction that changed it."""
        return outbox.append(session, entity, row, site_id=self.site_id, tenant_id=getattr(row, "tenant_id", "-"))


class Health:
    """The scheduler's own state for operators (:attr:`Keys.scheduler`): ok, or which dependency is unavailable.

    An outage is ridden out rather than fatal, so without this an operator would see a site that
    simply stopped moving. Kept in Redis, written whenever Redis answers; while Redis itself is
    down the scheduler's log says so.
    """

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self.state: dict[str, str] = {}

    def ok(self) -> None:
        self._publish({"status": "ok", "error": "", "since": str(time.time())})

    def down(self, what: str, error: BaseException) -> None:
        status = f"{what} unavailable"
        if self.state.get("status") != status:
            text = str(error).splitlines()[0] if str(error) else ""
            self._publish({"status": status, "error": f"{type(error).__name__}: {text}"[:300],
                           "since": str(time.time())})

    def _publish(self, state: dict[str, str]) -> None:
        self.state = state
        with contextlib.suppress(redis.exceptions.RedisError):  # Redis down: the log is the status
            # redis-py's mapping type takes no dict[str, str] (Mapping is invariant in its key).
            self.redis.hset(self.keys.scheduler, mapping=state)  # type: ignore[arg-type]
