"""``cinefleet bench dashboard``: every dashboard page's answer time with a big fleet in the database.

The fleet database (SQLite, the default) is filled straight through the tables, as ``bench
control``'s runs list is (its ``_fill_runs``: ``runs`` runs over 20 sites, 40 tenants of skewed
size, six statuses, 90 days), plus what the pages read besides: each run's stages (six, their
statuses following the run's), a cost per finished stage, ``hosts`` hosts (two workers each, a
sample every 5 s of the last hour each), the sites' queues, two runs of one project with a full
artifact graph for the lineage pages, and a few hundred commands and audit rows. Then a real
``control serve`` (the :class:`~control_plane.testing.Centre` harness) serves it; the bench signs in
through the login form, as a person does, and fetches every page ``requests`` times (after one
untimed fetch), sequentially, over HTTP/1.1 keep-alive.

Printed per page: p50 and p95 in ms and the ratio of p95 to the goal (150 ms), and the baseline
measured in the same run on the same server: a static file (``/static/dash.css``: the HTTP stack
alone) and ``GET /api/v1/fleet`` (the JSON summary, what the fleet page adds HTML to).
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cinefleet.bench.control import SITES, _fill_runs, _percentile
from control_plane.dashboard_testing import sign_in
from control_plane.ingest import roll_up_costs
from control_plane.people import People
from control_plane.tables import (
    ArtifactRow,
    CommandRow,
    CostRow,
    HostRow,
    HostSampleRow,
    QueueRow,
    RunRow,
    SiteRow,
    StageRow,
    WorkerRow,
)
from control_plane.testing import Centre
from protos.actions import QUEUES

GOAL_MS = 150.0
BATCH = 10_000
#: The stages every seeded run has, in order, with their queues.
STAGES = (("script", "local_ai_queue"), ("shotlist", "cpu_queue"), ("assets", "media_queue"),
          ("render_plan", "cpu_queue"), ("shot:s01", "cpu_queue"), ("finish", "cpu_queue"))
#: The seeded lineage pair: a project of this many shots, the second run after a one-line edit of shot 3.
LINEAGE_SHOTS = 12
SAMPLE_EVERY_S = 5.0
COMMANDS = 300


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert(engine: Engine, table: Any, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    for batch in _batches(rows):
        with engine.begin() as connection:
            connection.execute(insert(table.__table__), batch)
        count += len(batch)
    return count


def _stage_status(run_status: str, index: int) -> str:
    """A stage's status consistent with its run's: a live run is part way through its chain."""
    if run_status == "completed":
        return "done"
    if run_status == "queued":
        return "waiting" if index else "queued"
    if run_status == "running":
        return "done" if index < 3 else "running" if index == 3 else "waiting"
    if run_status == "failed":
        return "done" if index < 4 else "failed" if index == 4 else "skipped"
    return "done" if index < 2 else "skipped"


def _stages_and_costs(engine: Engine, now: float) -> tuple[int, int]:
    """Six stages per run and a cost per finished attempt, read back from the runs just filled."""
    with engine.connect() as connection:
        runs = connection.execute(RunRow.__table__.select().with_only_columns(
            RunRow.site_id, RunRow.run_id, RunRow.tenant_id, RunRow.status, RunRow.submitted_at)).all()
    rng = random.Random(11)

    def stages() -> Iterator[dict[str, Any]]:
        for site_id, run_id, tenant, status, submitted in runs:
            for index, (stage_id, queue) in enumerate(STAGES):
                state = _stage_status(status, index)
                yield {"site_id": site_id, "run_id": run_id, "stage_id": stage_id, "tenant_id": tenant,
                       "kind": stage_id.split(":")[0], "queue": queue, "identity": _digest(run_id, stage_id)[:32],
                       "status": state, "depends_on": [STAGES[index - 1][0]] if index else [], "args": {},
                       "output": _digest(run_id, stage_id) if state == "done" else None, "outputs": {},
                       "attempts": 1 if state in ("done", "failed", "running") else 0,
                       "worker": f"w{rng.randrange(2000):04d}" if state != "waiting" else None, "message_id": None,
                       "error": "ffmpeg exited 1" if state == "failed" else "", "seconds": 2.0 + 30 * rng.random(),
                       "cache_hits": None, "cache_misses": None, "replicated_seq": 0,
                       "updated_at": min(now, submitted + 60 * (index + 1))}

    def cost_rows() -> Iterator[dict[str, Any]]:
        for site_id, run_id, tenant, status, submitted in runs:
            for index, (stage_id, _queue) in enumerate(STAGES):
                if _stage_status(status, index) not in ("done", "failed"):
                    continue
                yield {"site_id": site_id, "run_id": run_id, "stage_id": stage_id, "attempt": 1, "tenant_id": tenant,
                       "kind": stage_id.split(":")[0], "worker": None, "origin": "local", "provider": "local",
                       "compute_seconds": 2.0 + 30 * rng.random(), "usd": 0.0, "outcome": "done",
                       "committed_at": min(now, submitted + 60 * (index + 1)), "replicated_seq": 0,
                       "updated_at": now}

    return _insert(engine, StageRow, stages()), _insert(engine, CostRow, cost_rows())


def _hosts(engine: Engine, hosts: int, now: float) -> int:
    """``hosts`` hosts over the sites (two workers each), each with the last hour's samples; returns samples."""
    rng = random.Random(12)
    disk = [{"mount": "/", "used_bytes": 400 << 30, "total_bytes": 1 << 40, "high_water": 0.9,
             "over_high_water": False}]

    def host_rows() -> Iterator[dict[str, Any]]:
        for n in range(hosts):
            workers = [{"name": f"w{2 * n + k:04d}", "status": "idle", "current_job": ""} for k in range(2)]
            yield {"site_id": f"site{n % SITES:02d}", "host": f"h{n:04d}",
                   "agent_address": f"10.0.{n // 250}.{n % 250}:50151", "agent_tls": True, "interval_s": 5.0,
                   "reported_state": "degraded" if n % 97 == 0 else "healthy",
                   "reasons": ["load 9.1 per cpu over 4.0"] if n % 97 == 0 else [], "first_seen_at": now - 86_400,
                   "last_report_at": now - 5 * rng.random(), "sampled_at": now, "load_1m": 4 * rng.random(),
                   "load_5m": 4 * rng.random(), "cpu_count": 16, "memory_used_bytes": 20 << 30,
                   "memory_total_bytes": 64 << 30, "disks": disk, "temperatures": [], "workers": workers,
                   "trusted_key_ids": ["k1"], "trust_bundle_version": 1, "trust_problem": "", "pruned_at": now}

    def worker_rows() -> Iterator[dict[str, Any]]:
        for n in range(2 * hosts):
            yield {"site_id": f"site{(n // 2) % SITES:02d}", "name": f"w{n:04d}", "host": f"h{n // 2:04d}",
                   "pid": 1000 + n, "status": "active" if n % 5 == 0 else "idle", "queues": list(QUEUES),
                   "current_job": None,
                   "since": now - 600, "started_at": now - 3600, "replicated_seq": 0, "updated_at": now}

    def samples() -> Iterator[dict[str, Any]]:
        per_host = int(3600 / SAMPLE_EVERY_S)
        for n in range(hosts):
            for k in range(per_host):
                yield {"site_id": f"site{n % SITES:02d}", "host": f"h{n:04d}",
                       "received_at": now - 3600 + k * SAMPLE_EVERY_S, "state": "healthy", "load_1m": 4 * rng.random(),
                       "memory_used_bytes": 20 << 30, "memory_total_bytes": 64 << 30,
                       "disk_used_fraction": 0.4, "workers_busy": k % 3}

    _insert(engine, HostRow, host_rows())
    _insert(engine, WorkerRow, worker_rows())
    _insert(engine, QueueRow, ({"site_id": f"site{s:02d}", "name": q, "paused": s == 3 and q == "media_queue",
                                "completed": 1000, "replicated_seq": 0, "updated_at": now}
                               for s in range(SITES) for q in QUEUES))
    _insert(engine, SiteRow, ({"site_id": f"site{s:02d}", "cursor": 10_000, "first_seen_at": now - 86_400,
                               "last_push_at": now, "site_head": 10_000, "applied_total": 10_000,
                               "newest_committed_at": now, "lag_s": 0.2, "events_per_s": 5.0, "rate_at": now}
                              for s in range(SITES)))
    return _insert(engine, HostSampleRow, samples())


def _lineage_pair(engine: Engine, now: float) -> tuple[str, str]:
    """Two runs of one project at site00, the second after a one-line edit: a full graph each."""
    site, tenant = "site00", "tenant00"
    recorded: set[str] = set()  # an artifact both runs made is recorded once
    refs = []
    for version in (0, 1):
        run_id = f"lineage{version}"
        refs.append(f"{site}/{run_id}")
        _insert(engine, RunRow, iter([{
            "site_id": site, "run_id": run_id, "tenant_id": tenant, "project_path": "projects/pilot.json",
            "project_hash": _digest("bundle", version), "out_dir": f"out/{run_id}", "status": "completed",
            "detail": "", "episode": None, "submitted_seq": 0, "submitted_at": now - 3600 + version,
            "finished_at": now - 3000, "replicated_seq": 0, "updated_at": now}]))
        stages, artifacts = _graph(version)
        common = {"site_id": site, "run_id": run_id, "tenant_id": tenant, "queue": "cpu_queue", "identity": "",
                  "status": "done", "args": {}, "attempts": 1, "worker": "w0000", "message_id": None, "error": "",
                  "seconds": 1.0, "cache_hits": None, "cache_misses": None, "replicated_seq": 0, "updated_at": now}
        _insert(engine, StageRow, ({**common, **stage} for stage in stages))
        new = {digest: kind for digest, kind in artifacts if digest not in recorded}
        recorded |= new.keys()
        _insert(engine, ArtifactRow, ({
            "site_id": site, "tenant_id": tenant, "hash": digest, "kind": kind, "schema_version": None, "parents": [],
            "params": {}, "compute_origin": "local", "license": None, "size": 1000,
            "recorded_at": "2026-11-30T00:00:00+00:00", "replicated_seq": 0, "updated_at": now}
            for digest, kind in new.items()))
    return refs[0], refs[1]


def _graph(version: int) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """A run's stages (id, kind, dependencies, outputs) and its artifacts (hash, kind); shot 3 is the edited one."""
    stages: list[dict[str, Any]] = []

    def made(stage_id: str, kind: str, needs: list[str], outputs: dict[str, str]) -> None:
        stages.append({"stage_id": stage_id, "kind": kind, "depends_on": needs, "outputs": outputs,
                       "output": next(iter(outputs.values()))})

    previous: list[str] = []
    for stage_id, outputs in (("script", ("project", "canon", "script")), ("shotlist", ("shotlist",)),
                              ("assets", ("manifest",)), ("render_plan", ("plan",))):
        made(stage_id, stage_id, previous, {o: _digest(o, version if o != "canon" else 0) for o in outputs})
        previous = [stage_id]
    shots = [f"shot:s{k:02d}" for k in range(LINEAGE_SHOTS)]
    for k, shot in enumerate(shots):
        made(shot, "shot", ["render_plan"], {"file": _digest(shot, version if k == 3 else 0)})
    made("finish", "finish", shots, {"episode": _digest("episode", version), "output": _digest("out", version)})
    return stages, [(digest, name) for stage in stages for name, digest in stage["outputs"].items()]


def _commands(engine: Engine, now: float) -> None:
    _insert(engine, CommandRow, ({
        "command_id": f"c{n:08d}", "site_id": f"site{n % SITES:02d}", "tenant": None, "action": "drain-worker",
        "target": f'["w{n:04d}"]', "requester": "bench-operator", "requester_role": "operator", "confirmed": False,
        "needs_approval": False, "approver": None, "status": "succeeded", "host": f"h{n // 2:04d}", "address": None,
        "envelope": None, "payload_sha256": None, "outcome": "OUTCOME_EXECUTED", "detail": "", "created_at": now - n,
        "updated_at": now - n, "approved_at": None, "signed_at": None, "dispatched_at": None, "finished_at": now - n}
        for n in range(COMMANDS)))


def seed(engine: Engine, runs: int, hosts: int, now: float) -> dict[str, Any]:
    """Fill the fleet database; returns what was made and a few ids the pages are fetched with."""
    began = time.perf_counter()
    _fill_runs(engine, runs, now)
    stages, costs = _stages_and_costs(engine, now)
    with Session(engine) as session, session.begin():  # the costs went in beside the ingest: sum them as it would
        roll_up_costs(session)
    samples = _hosts(engine, hosts, now)
    pair = _lineage_pair(engine, now)
    _commands(engine, now)
    with engine.connect() as connection:
        failed = connection.execute(RunRow.__table__.select().with_only_columns(RunRow.site_id, RunRow.run_id)
                                    .where(RunRow.status == "failed").limit(1)).one()
    return {"stages": stages, "costs": costs, "samples": samples, "pair": pair, "run": f"{failed[0]}/{failed[1]}",
            "seconds": time.perf_counter() - began}


def pages(seeded: dict[str, Any]) -> dict[str, str]:
    """Every page, by a short name: the URL it is fetched at."""
    (a, b), run = seeded["pair"], seeded["run"]
    return {"fleet": "/", "runs": "/runs", "runs (failed, site03)": "/runs?status=failed&site=site03",
            "run detail": f"/runs/{run}", "queues": "/queues", "workers": "/workers", "hosts": "/hosts",
            "host": "/hosts/site05/h0005", "commands": "/commands", "command": "/commands/c00000007",
            "audit": "/audit", "lineage": f"/runs/{b}/lineage", "lineage diff": f"/lineage?a={a}&b={b}",
            "cost (7 days)": "/cost", "cost (30 days, site01)": "/cost?days=30&site=site01", "alerts": "/alerts"}


def _time(client: httpx.Client, url: str, requests: int) -> list[float]:
    answer = client.get(url)
    if answer.status_code != 200:
        raise AssertionError(f"GET {url}: {answer.status_code}: {answer.text[:300]}")
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        answer = client.get(url)
        samples.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise AssertionError(f"GET {url}: {answer.status_code}")
    return samples


def run_benchmark(workdir: Path | None = None, runs: int = 100_000, hosts: int = 1_000, requests: int = 50
                  ) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-dashboard-")) if own else workdir
    assert folder is not None
    logging.getLogger("httpx").setLevel(logging.WARNING)
    figures: dict[str, float] = {}
    try:
        shutil.rmtree(folder / "centre-dashboard", ignore_errors=True)
        with Centre(folder / "centre-dashboard", folder / "logs") as centre:
            now = time.time()
            seeded = seed(centre.engine, runs, hosts, now)
            people = People(centre.engine)
            people.add_user("bench-admin", "admin")
            token = people.create_token("bench-admin").token
            print(f"dashboard, fleet database (SQLite) with {runs:,} runs, {seeded['stages']:,} stages, "
                  f"{seeded['costs']:,} costs, {hosts:,} hosts, {seeded['samples']:,} host samples "
                  f"(seeded in {seeded['seconds']:.1f} s); {requests} sequential requests per page, ms:")
            with httpx.Client(base_url=centre.url, timeout=60) as client, \
                    httpx.Client(base_url=centre.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api:
                sign_in(client, token)
                figures |= _print("static file /static/dash.css", _time(client, "/static/dash.css", requests),
                                  "baseline")
                figures |= _print("GET /api/v1/fleet (JSON)", _time(api, "/api/v1/fleet", requests), "baseline")
                worst = 0.0
                for label, url in pages(seeded).items():
                    shown = _print(label, _time(client, url, requests), "page")
                    figures |= shown
                    worst = max(worst, shown[f"{label} p95_ms"])
            figures["worst_page_p95_ms"] = worst
            print(f"worst page p95 {worst:.1f} ms: ratio to the goal (150 ms) {worst / GOAL_MS:.2f}")
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return figures


def _print(label: str, samples: list[float], what: str) -> dict[str, float]:
    p50, p95 = statistics.median(samples) * 1000, _percentile(samples, 0.95) * 1000
    ratio = f"ratio to goal {p95 / GOAL_MS:.2f}" if what == "page" else "baseline"
    print(f"  {label:<34} p50 {p50:7.1f}  p95 {p95:7.1f}  ({ratio})")
    return {f"{label} p50_ms": p50, f"{label} p95_ms": p95}
