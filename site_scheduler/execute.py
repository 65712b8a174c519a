"""What a worker does with one stage message: run the stage kind's function, report what it made.

The stage runs against the site's artifact store through a workspace whose registry lives in
memory; the rows it would have written travel back with the result, and the scheduler, the
site database's only writer, records them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import redis

from pipeline import steps
from pipeline.kinds import KINDS
from pipeline.workspace import DerivationHints, Workspace
from site_scheduler.keys import Keys
from site_scheduler.rows import registry_rows


class RedisHints:
    """Derivations made inside a stage (the AAC chunks of a mix), shared by the site's workers in Redis.

    The scheduler's registry knows them too (the rows travel back with each result), but a
    worker never reads the site database; without these hints a worker would encode every
    chunk of a mix again after a one-line edit.
    """

    STAGES = (steps.ChunkCache.STAGE,)

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    def get(self, tenant_id: str, stage: str, key: str) -> str | None:
        """The artifact a peer derived for ``key``, or None: also when Redis does not answer (a hint
        only saves work, so an outage costs a chunk's encode, never the stage)."""
        if stage not in self.STAGES:
            return None
        try:
            found = self.redis.hget(self.keys.hints(tenant_id, stage), key)
        except redis.exceptions.RedisError:
            return None
        # redis-py types replies bytes | str; this client (no decode_responses) gets bytes.
        return None if found is None else found.decode()  # type: ignore[union-attr]

    def put(self, tenant_id: str, stage: str, key: str, output: str) -> None:
        """Share a derivation with the site's workers; lost when Redis does not answer (the scheduler's
        registry gets it with the result anyway)."""
        if stage in self.STAGES:
            with contextlib.suppress(redis.exceptions.RedisError):
                self.redis.hset(self.keys.hints(tenant_id, stage), key, output)


def run_stage(store: Path, site_id: str, tenant_id: str, kind: str, args: dict[str, Any],
              hints: DerivationHints | None = None) -> dict[str, Any]:
    """Run one stage; returns ``{"outputs": {...}, "rows": {...}, "hits": {...}}``. Pipeline errors propagate."""
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    run = KINDS[kind].run
    if run is None:  # a kind that does no work needs no workspace either
        return {"outputs": {}, "rows": {}}
    ws = Workspace(store, tenant_id, site_id, registry_url="sqlite://", hints=hints)
    try:
        outputs = run(ws, args)
        return {"outputs": outputs, "rows": registry_rows(ws), "hits": dict(ws.hits), "misses": dict(ws.misses)}
    finally:
        ws.close()
