"""A drain put back after Redis loses its data keeps its deadline (issue 9), on a real site."""

from __future__ import annotations

import json
import os
import shutil
import signal

import redis

from site_scheduler.testing import Site


def test_a_drain_put_back_after_redis_loses_its_data_keeps_its_deadline(site: Site) -> None:
    site.start_worker("w1")
    site.cli("site", "drain-worker", "w1", "--deadline", "600")
    keys, client = site.client.keys, site.client.redis
    raw = client.get(keys.drain("w1"))
    assert isinstance(raw, bytes), raw
    until = json.loads(raw)["until"]
    [w1] = [w for w in site.client.workers() if w["name"] == "w1"]
    assert w1["drain_until"] == until, "the deadline is recorded with the drain"
    # Redis dies and comes back without its data (its append-only files are gone).
    for persisted in (site.data_dir / "redis").glob("appendonly*"):  # a file (Redis 6) or a folder (7)
        shutil.rmtree(persisted) if persisted.is_dir() else persisted.unlink()
    os.kill(site.redis_pid(), signal.SIGKILL)

    def drain_back() -> dict[str, float] | None:
        try:
            raw = client.get(keys.drain("w1"))
        except redis.exceptions.RedisError:
            return None  # not back yet
        return None if raw is None else json.loads(raw)

    drain = site.wait_until(drain_back, "the drain back in Redis", timeout=30)
    assert drain.get("until") == until, drain
    [w1] = [w for w in site.client.workers() if w["name"] == "w1"]
    assert w1["status"] in ("draining", "drained") and w1["drain_until"] == until, w1

    site.cli("site", "undrain-worker", "w1")
    [w1] = [w for w in site.client.workers() if w["name"] == "w1"]
    assert w1["drain_until"] is None
