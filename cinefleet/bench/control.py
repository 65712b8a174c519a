"""``cinefleet bench control``: what the centre's ingest sustains, against a real ``control serve``.

1. ``ingest`` (telemetry): ``hosts`` simulated agents (default 10,000) of 20 sites report at one
   report per 5 s each, i.e. ``hosts / 5`` reports/s (2,000/s by default), for ``seconds``, paced
   by one client process's gRPC futures against one centre on SQLite. Printed: the rate
   sustained, its ratio to the offered rate, and p50/p99 latency per report (send to answer).
   Then the cost of judging every host once (``Fleet.summary``) and of listing them all
   (``Fleet.hosts``, every host's latest sample); and, on a
   centre of its own with 20 hosts reporting every 5 s, the time from one host's last report
   until the centre reads it ``offline`` while its peers keep reporting (goal ≤ 15 s).
2. ``replication``: four sites, each a real site database whose outbox grows by ``rate`` events/s
   (500 by default, written in 20 transactions a second), each shipped by the site's real
   :class:`~site_scheduler.shipper.Shipper` thread. Printed: the replication lag the centre
   records (now - commit time of the newest applied event), sampled every 100 ms, p50/p99
   (goal p99 ≤ 2 s). Then catch-up: one site with a ``backlog`` of events written while no
   centre listened, shipped from zero: events/s, and the time a 1,000,000-event backlog would
   take at that rate (goal ≤ 60 s).
3. ``command``: an operator's command through the centre, API → signer → agent → site → result:
   ``commands`` (100 by default) drain-worker / undrain-worker of a real idle worker, each a
   ``POST /api/v1/commands`` over HTTP that answers once the agent has answered. Interleaved with
   them, the same commands straight to the agent (``AgentClient.execute`` with the key, what
   ``cinefleet ops`` does), so the centre's overhead is measured in the same run on the same load.
   Printed: p50/p99 of each (goal p99 ≤ 50 ms through the centre), the difference and the ratio.
4. ``runs``: ``GET /api/v1/runs`` over HTTP with ``runs`` rows (100,000 by default) in the fleet
   database (SQLite), spread over 20 sites, 40 tenants of skewed size, six statuses and 90 days:
   the first page, a status filter, a tenant filter, a user limited to two tenants, and a deep
   keyset page (following ``next`` 50 pages). Printed: p95 of each (goal ≤ 150 ms).

Everything runs on this machine's cores at once (clients, shippers, centre); the figures are
what one centre process does here, not what a fleet's network would add.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from control_plane.fleet import Fleet, Liveness
from control_plane.people import People
from control_plane.sites import add_site
from control_plane.tables import RunRow, SiteRow
from control_plane.testing import Centre
from ops_agent import keys
from ops_agent.client import AgentClient
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from protos import ops_agent_pb2, replication_pb2_grpc, telemetry_pb2
from protos import replication_pb2 as pb
from site_scheduler import outbox
from site_scheduler.database import migrate as migrate_site
from site_scheduler.database import open_engine as open_site_engine
from site_scheduler.keys import QUEUES
from site_scheduler.shipper import Shipper
from site_scheduler.testing import Site

PARTS = ("ingest", "replication", "command", "runs")
INTERVAL_S = 5.0
SITES = 20
#: Reports in flight at once from the bench's client, at most.
IN_FLIGHT = 64


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def _report(site: str, host: str) -> pb.HostReport:
    health = telemetry_pb2.HostHealth(host=host, site_id=site, sampled_at=time.time(),
                                      state=telemetry_pb2.HOST_STATE_HEALTHY, load_1m=random.random(), cpu_count=8,
                                      memory_used_bytes=2**33, memory_total_bytes=2**35)
    health.disks.add(mount="/", used_bytes=2**36, total_bytes=2**38, high_water=0.9)
    return pb.HostReport(health=health, agent_address="127.0.0.1:50151", interval_seconds=INTERVAL_S)


def bench_ingest(folder: Path, hosts: int, seconds: float) -> dict[str, float]:
    with Centre(folder / "centre-ingest", folder / "logs", interval_s=INTERVAL_S) as centre:
        tokens = {f"site{i:02d}": add_site(centre.engine, f"site{i:02d}")[0] for i in range(SITES)}
        names = [(f"site{i % SITES:02d}", f"host{i:05d}") for i in range(hosts)]
        offered = hosts / INTERVAL_S
        latencies: list[float] = []
        failures = [0]
        slots = threading.Semaphore(IN_FLIGHT)
        with grpc.insecure_channel(centre.address) as channel:
            stub = replication_pb2_grpc.ReplicationStub(channel)

            def send(site: str, host: str, sent: list[int]) -> None:
                slots.acquire()
                began = time.perf_counter()
                call = stub.ReportHealth.future(_report(site, host), timeout=30,
                                                metadata=(("authorization", f"Bearer {tokens[site]}"),))

                def done(finished: grpc.Future) -> None:
                    slots.release()
                    if finished.exception() is None:
                        latencies.append(time.perf_counter() - began)
                    else:
                        failures[0] += 1

                call.add_done_callback(done)
                sent[0] += 1

            # Every host reports once first (the centre learns them all), then the paced run.
            sent = [0]
            for site, host in names:
                send(site, host, sent)
            wait_for(lambda: len(latencies) + failures[0] >= hosts, "the first report of every host", 600)
            warm, warm_failed = len(latencies), failures[0]
            sent = [0]
            start = time.perf_counter()
            index = 0
            while (elapsed := time.perf_counter() - start) < seconds:
                due = int(elapsed * offered)
                # Bounded by the clock too: a centre slower than the offered rate holds the sender at the
                # in-flight cap, and the reports due would otherwise be sent long after ``seconds``.
                while sent[0] < due and time.perf_counter() - start < seconds:
                    site, host = names[index % hosts]
                    send(site, host, sent)
                    index += 1
                time.sleep(0.002)
            wait_for(lambda: len(latencies) + failures[0] >= warm + warm_failed + sent[0], "reports in flight", 120)
            took = time.perf_counter() - start
        latencies = latencies[warm:]  # the warm-up's are not the paced run's
        failures[0] -= warm_failed
        answered = len(latencies)
        with Session(centre.engine) as session:
            began = time.perf_counter()
            summary = Fleet(session, Liveness(INTERVAL_S)).summary()
            judge_s = time.perf_counter() - began
            began = time.perf_counter()
            listed = Fleet(session, Liveness(INTERVAL_S)).hosts()
            list_s = time.perf_counter() - began
        assert sum(summary.hosts.values()) == len(listed) == hosts, f"{len(listed)} hosts listed, expected {hosts}"
    offline_after = bench_offline(folder)
    figures = {"offered_per_s": offered, "sustained_per_s": answered / took, "failed": failures[0],
               "p50_ms": _percentile(latencies, 0.5) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000,
               "judge_all_ms": judge_s * 1000, "list_all_ms": list_s * 1000, "offline_after_s": offline_after}
    print(f"telemetry ingest, {hosts} hosts at 1 report / {INTERVAL_S:g} s: offered {offered:,.0f}/s, sustained "
          f"{figures['sustained_per_s']:,.0f}/s ({figures['sustained_per_s'] / offered:.2f} of the load), "
          f"{failures[0]} failed; latency p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")
    print(f"judging all {hosts} hosts once (Fleet.summary): {figures['judge_all_ms']:.0f} ms; listing them all "
          f"with their latest samples (Fleet.hosts): {figures['list_all_ms']:.0f} ms")
    print(f"a host that stops reporting reads offline after {offline_after:.1f} s (goal <= 15 s; "
          f"ratio {offline_after / 15:.2f})")
    return figures


def bench_offline(folder: Path, hosts: int = 20) -> float:
    """Seconds from a host's last report until the centre reads it offline, while its peers keep reporting."""
    with Centre(folder / "centre-offline", folder / "logs", interval_s=INTERVAL_S) as centre:
        token = add_site(centre.engine, "site")[0]
        metadata = (("authorization", f"Bearer {token}"),)
        due = {f"h{i:02d}": time.monotonic() + INTERVAL_S * i / hosts for i in range(hosts)}
        last_heard: float | None = None
        with grpc.insecure_channel(centre.address) as channel, Session(centre.engine) as session:
            stub = replication_pb2_grpc.ReplicationStub(channel)
            deadline = time.monotonic() + 20 * INTERVAL_S
            while time.monotonic() < deadline:
                for host, at in due.items():
                    if time.monotonic() >= at and not (host == "h00" and last_heard is not None):
                        ack = stub.ReportHealth(_report("site", host), timeout=10, metadata=metadata)
                        due[host] = at + INTERVAL_S
                        if host == "h00":
                            last_heard = ack.received_at  # its only report: then it falls silent
                if last_heard is not None:
                    session.expire_all()
                    states = {h.host: h.state for h in Fleet(session, Liveness(INTERVAL_S)).hosts()}
                    if states["h00"] == "offline":
                        return time.time() - last_heard
                time.sleep(0.1)
        raise AssertionError("the silenced host never read offline")


def _site_engine(folder: Path, site: str) -> Engine:
    folder.mkdir(parents=True, exist_ok=True)
    engine = open_site_engine(f"sqlite:///{folder / f'{site}.sqlite'}")
    migrate_site(engine)
    return engine


def _write(engine: Engine, site: str, count: int, first: int) -> None:
    with Session(engine) as session, session.begin():
        for n in range(first, first + count):
            run_id = f"r{n // 100}"
            data = {"run_id": run_id, "stage_id": "shot", "attempt": n, "kind": "shot", "worker": "w1",
                    "origin": "local", "provider": "local", "compute_seconds": 0.1, "usd": 0.0, "outcome": "done"}
            outbox.append_event(session, "cost", [run_id, "shot", str(n)], data, site_id=site,
                                tenant_id="bench", op="insert")


def bench_replication(folder: Path, rate: int, seconds: float, backlog: int) -> dict[str, float]:
    with Centre(folder / "centre-replication", folder / "logs") as centre:
        sites = [f"site{i}" for i in range(4)]
        tokens = {site: add_site(centre.engine, site)[0] for site in sites}
        engines = {site: _site_engine(folder / "sites", site) for site in sites}
        stop = threading.Event()

        def produce(site: str) -> None:
            written, start = 0, time.perf_counter()
            while not stop.is_set():
                due = int((time.perf_counter() - start) * rate)
                if due > written:
                    _write(engines[site], site, due - written, written + 1)
                    written = due
                stop.wait(0.05)

        producers = [threading.Thread(target=produce, args=(site,), daemon=True) for site in sites]
        shippers = [Shipper(site, engines[site], centre.address, tokens[site]) for site in sites]
        for thread in [*producers, *shippers]:
            thread.start()
        lags: list[float] = []
        time.sleep(2.0)  # warm-up
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            with Session(centre.engine) as session:
                lags += [lag for lag in session.scalars(select(SiteRow.lag_s)) if lag is not None]
            time.sleep(0.1)
        stop.set()
        for shipper in shippers:
            shipper.stop()
        for thread in [*producers, *shippers]:
            thread.join(30)
        print(f"replication, 4 sites at {rate} events/s each: lag p50 {statistics.median(lags):.2f} s, "
              f"p99 {_percentile(lags, 0.99):.2f} s (goal p99 <= 2 s; ratio {_percentile(lags, 0.99) / 2:.2f})")

        site = "backlog"
        token = add_site(centre.engine, site)[0]
        engine = _site_engine(folder / "sites", site)
        for first in range(1, backlog + 1, 10_000):
            _write(engine, site, min(10_000, backlog - first + 1), first)
        shipper = Shipper(site, engine, centre.address, token)
        began = time.perf_counter()
        shipper.start()

        def caught_up() -> bool:
            with Session(centre.engine) as session:
                return session.scalar(select(SiteRow.cursor).where(SiteRow.site_id == site)) == backlog

        wait_for(caught_up, "the backlog applied", 3600, poll=0.1)
        took = time.perf_counter() - began
        shipper.stop()
        shipper.join(30)
        per_s = backlog / took
        print(f"catch-up of a {backlog:,}-event backlog: {took:.1f} s, {per_s:,.0f} events/s; a 1,000,000-event "
              f"backlog would take {1e6 / per_s:.0f} s (goal <= 60 s; ratio {1e6 / per_s / 60:.2f})")
        for each in [*engines.values(), engine]:
            each.dispose()
    return {"lag_p50_s": statistics.median(lags), "lag_p99_s": _percentile(lags, 0.99), "catchup_per_s": per_s}


#: The command part's site, host and worker; the worker takes every queue, so it is a real idle worker.
COMMAND_SITE, COMMAND_HOST, COMMAND_WORKER = "bench", "bench-host", "w1"
#: Loose health thresholds for the command part's agent: a loaded machine must not make its host unhealthy.
LOOSE = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]
#: Commands through each path before the timed ones: connections, caches, the signer's first key load.
COMMAND_WARMUP = 6


def _ms(samples: list[float], q: float) -> float:
    return _percentile(samples, q) * 1000


def bench_command(folder: Path, commands: int) -> dict[str, float]:
    """p50/p99 of a command through the centre (HTTP API, signer, agent, site) and straight to the agent.

    The two paths take turns in the order centre-drain, agent-undrain, agent-drain, centre-undrain,
    so each path sends as many drains as undrains and every command changes the worker's state.
    """
    key_dir, data, state = folder / "keys-command", folder / "site-command", folder / "agent-command"
    for old in (key_dir, data, state, folder / "centre-command"):
        shutil.rmtree(old, ignore_errors=True)
    key = keys.init(key_dir)[0]
    data.mkdir(parents=True, mode=0o700)
    with Centre(folder / "centre-command", folder / "logs", interval_s=0.5, keys=key_dir) as centre:
        centre.add_site(COMMAND_SITE, data / "control.token")
        people = People(centre.engine)
        people.add_user("bench", "operator")
        token = people.create_token("bench").token
        with Site(data_dir=data, logs=folder / "logs", site_id=COMMAND_SITE, options=["--control", centre.address]):
            agent = AgentProcess(COMMAND_HOST, COMMAND_SITE, data, state, keys.KeyFolder(key_dir).bundle,
                                 folder / "logs" / "agent-command.log", workers=f"{COMMAND_WORKER}={','.join(QUEUES)}",
                                 options=[*LOOSE, "--control", centre.address, "--report-interval", "0.5"])
            agent.start()
            try:
                centre.wait_until(lambda fleet: any(h.host == COMMAND_HOST and h.state == "healthy"
                                                    for h in fleet.hosts()), "the agent's host healthy", 60)
                centre.wait_until(lambda fleet: any(w.name == COMMAND_WORKER for w in fleet.workers()),
                                  "the worker replicated to the centre", 60)
                with httpx.Client(base_url=centre.url, headers={"Authorization": f"Bearer {token}"},
                                  timeout=30) as api, AgentClient(agent.address) as direct:

                    def via_centre(action: str) -> None:
                        answer = api.post("/api/v1/commands", json={"site": COMMAND_SITE, "action": action,
                                                                    "target": [COMMAND_WORKER]})
                        if answer.status_code != 201 or answer.json()["status"] != "succeeded":
                            raise AssertionError(f"{action} through the centre: {answer.status_code} {answer.text}")
                        rows.append(answer.json())

                    def via_agent(action: str) -> None:
                        result = direct.execute(action, COMMAND_WORKER, key, COMMAND_HOST, COMMAND_SITE, actor="bench")
                        if result.outcome != ops_agent_pb2.OUTCOME_EXECUTED:
                            raise AssertionError(f"{action} straight to the agent: {result}")

                    order = ((via_centre, "drain-worker"), (via_agent, "undrain-worker"),
                             (via_agent, "drain-worker"), (via_centre, "undrain-worker"))
                    timed: dict[object, list[float]] = {via_centre: [], via_agent: []}
                    rows: list[dict[str, Any]] = []  # the command rows the API answered with: their timestamps
                    load_before = os.getloadavg()[0]
                    for i in range(2 * COMMAND_WARMUP + 2 * commands):
                        path, action = order[i % len(order)]
                        began = time.perf_counter()
                        path(action)
                        if i >= 2 * COMMAND_WARMUP:
                            timed[path].append(time.perf_counter() - began)
                        elif path is via_centre:
                            rows.pop()
                    load = (load_before + os.getloadavg()[0]) / 2
            finally:
                agent.close()
    centre_s, agent_s = timed[via_centre], timed[via_agent]
    figures = {"command_p50_ms": _ms(centre_s, 0.5), "command_p99_ms": _ms(centre_s, 0.99),
               "command_direct_p50_ms": _ms(agent_s, 0.5), "command_direct_p99_ms": _ms(agent_s, 0.99)}
    print(f"command via the centre (API -> signer -> agent -> site -> result), {len(centre_s)} drain/undrain-worker: "
          f"p50 {figures['command_p50_ms']:.1f} ms, p99 {figures['command_p99_ms']:.1f} ms (goal p99 <= 50 ms; "
          f"ratio {figures['command_p99_ms'] / 50:.2f}); load average {load:.1f}")
    print(f"the same straight to the agent (cinefleet ops), {len(agent_s)} commands: "
          f"p50 {figures['command_direct_p50_ms']:.1f} ms, p99 {figures['command_direct_p99_ms']:.1f} ms; the centre "
          f"adds p50 {figures['command_p50_ms'] - figures['command_direct_p50_ms']:+.1f} ms "
          f"(x{figures['command_p50_ms'] / figures['command_direct_p50_ms']:.2f}), "
          f"p99 {figures['command_p99_ms'] - figures['command_direct_p99_ms']:+.1f} ms "
          f"(x{figures['command_p99_ms'] / figures['command_direct_p99_ms']:.2f})")
    # Where the centre's time goes, from the timestamps it records (its clock): median of each step
    steps = {"HTTP, token check, recording the request": [t - (r["finished_at"] - r["created_at"])
                                                         for t, r in zip(centre_s, rows, strict=True)],
             "picking the agent and signing": [r["signed_at"] - r["created_at"] for r in rows],
             "recording the dispatch": [r["dispatched_at"] - r["signed_at"] for r in rows],
             "agent and site (a new gRPC channel each), recording the outcome": [r["finished_at"] - r["dispatched_at"]
                                                                                 for r in rows]}
    print("  of which, median: " + "; ".join(f"{name} {statistics.median(spent) * 1000:.1f} ms"
                                             for name, spent in steps.items()))
    return figures


#: Run statuses and their share of a fleet's runs (most are finished).
RUN_STATUSES = {"completed": 0.80, "failed": 0.06, "cancelled": 0.04, "blocked": 0.01, "running": 0.04,
                "queued": 0.05}
TENANTS = 40
RUN_DAYS = 90
#: Requests timed per query of the runs list; pages followed for the deep keyset page.
RUNS_REPEAT, DEEP_PAGES = 30, 50
RUNS_BATCH = 10_000
#: The tenants of the runs list's tenant-limited user.
LIMITED_TENANTS = ["tenant03", "tenant07"]


def _fill_runs(engine: Engine, count: int, now: float) -> None:
    """``count`` runs over 20 sites and 40 tenants (tenant k weighs 1/(k+1)), six statuses, the last 90 days.

    Submitted in order, as a fleet's runs arrive (a random order costs SQLite twice the insert time
    and tells nothing more about the reads); a run's number and site follow from its place.
    """
    rng = random.Random(10)
    tenants = rng.choices([f"tenant{k:02d}" for k in range(TENANTS)], [1 / (k + 1) for k in range(TENANTS)], k=count)
    statuses = rng.choices(list(RUN_STATUSES), list(RUN_STATUSES.values()), k=count)
    step = RUN_DAYS * 86_400 / count
    table = RunRow.__table__
    for first in range(0, count, RUNS_BATCH):
        rows = []
        for n in range(first, min(count, first + RUNS_BATCH)):
            submitted, status = now - RUN_DAYS * 86_400 + (n + rng.random()) * step, statuses[n]
            finished = submitted + 60 + 7200 * rng.random() if status not in ("running", "queued") else None
            project = f"{n % 500:064x}"
            rows.append({"site_id": f"site{n % SITES:02d}", "run_id": f"run{n:07d}", "tenant_id": tenants[n],
                         "project_path": f"projects/p{n % 500}.yaml", "project_hash": project,
                         "out_dir": f"out/run{n:07d}", "status": status,
                         "detail": "stage shot failed" if status == "failed" else "", "episode": None,
                         "submitted_seq": n, "submitted_at": submitted, "finished_at": finished,
                         "replicated_seq": n, "updated_at": finished or submitted})
        with engine.begin() as connection:
            connection.execute(insert(table), rows)


def _page_times(fetch: Callable[[dict[str, str]], str | None], params: dict[str, str]) -> list[float]:
    """Seconds of ``RUNS_REPEAT`` fetches of one page (after one untimed: connections, SQLite's page cache)."""
    fetch(params)
    samples = []
    for _ in range(RUNS_REPEAT):
        start = time.perf_counter()
        fetch(params)
        samples.append(time.perf_counter() - start)
    return samples


def _walk_times(fetch: Callable[[dict[str, str]], str | None]) -> list[float]:
    """Seconds of each page of a walk from the first page, following ``next``, ``DEEP_PAGES`` at most."""
    samples: list[float] = []
    after: str | None = None
    while len(samples) < DEEP_PAGES:
        start = time.perf_counter()
        after = fetch({"after": after} if after else {})
        samples.append(time.perf_counter() - start)
        if after is None:
            break
    return samples


def bench_runs(folder: Path, count: int) -> dict[str, float]:
    """p95 of ``GET /api/v1/runs`` for five kinds of query with ``count`` runs in the fleet database: over HTTP,
    and the read model's query alone in-process (``Fleet.runs``), so the database's share is plain."""
    shutil.rmtree(folder / "centre-runs", ignore_errors=True)
    with Centre(folder / "centre-runs", folder / "logs") as centre:
        began = time.perf_counter()
        _fill_runs(centre.engine, count, time.time())
        fill_s = time.perf_counter() - began
        people = People(centre.engine)
        people.add_user("viewer", "viewer")
        people.add_user("limited", "viewer", LIMITED_TENANTS)
        tokens = {name: people.create_token(name).token for name in ("viewer", "limited")}
        queries = {"first": ("first page", "viewer", {}),
                   "status": ("status filter (failed)", "viewer", {"status": "failed"}),
                   "tenant": ("tenant filter (tenant05)", "viewer", {"tenant": "tenant05"}),
                   "limited": (f"user of 2 tenants ({', '.join(LIMITED_TENANTS)})", "limited", {})}
        http: dict[str, list[float]] = {}
        alone: dict[str, list[float]] = {}
        with httpx.Client(base_url=centre.url, timeout=60) as api, Session(centre.engine) as session:
            for key, (_, user, params) in queries.items():

                def over_http(params: dict[str, str], user: str = user) -> str | None:
                    answer = api.get("/api/v1/runs", params=params,
                                     headers={"Authorization": f"Bearer {tokens[user]}"})
                    if answer.status_code != 200:
                        raise AssertionError(f"GET /api/v1/runs {params}: {answer.status_code} {answer.text}")
                    after: str | None = answer.json()["next"]
                    return after

                def in_process(params: dict[str, str], user: str = user) -> str | None:
                    status = [params["status"]] if "status" in params else ()
                    page = Fleet(session).runs(LIMITED_TENANTS if user == "limited" else None, status=status,
                                               tenant_id=params.get("tenant"), after=params.get("after"))
                    session.expunge_all()
                    return page.next

                http[key], alone[key] = _page_times(over_http, params), _page_times(in_process, params)
                if key == "first":
                    http["deep"], alone["deep"] = _walk_times(over_http), _walk_times(in_process)
    labels = {key: label for key, (label, _, _) in queries.items()}
    labels["deep"] = f"keyset pages 1 to {len(http['deep'])}, following next"
    print(f"runs list, {count:,} runs in the fleet database (filled in {fill_s:.1f} s), GET /api/v1/runs p95 over "
          f"{RUNS_REPEAT} requests each (goal <= 150 ms), and Fleet.runs alone in-process:")
    figures: dict[str, float] = {"runs_deep_pages": len(http["deep"])}
    for key, label in labels.items():
        figures[f"runs_{key}_p95_ms"], figures[f"runs_{key}_query_p95_ms"] = _ms(http[key], 0.95), _ms(alone[key], 0.95)
        print(f"  {label}: {figures[f'runs_{key}_p95_ms']:.1f} ms (ratio {figures[f'runs_{key}_p95_ms'] / 150:.2f}); "
              f"the query alone {figures[f'runs_{key}_query_p95_ms']:.1f} ms")
    return figures


def run_benchmark(workdir: Path | None = None, hosts: int = 10_000, seconds: float = 20.0, rate: int = 500,
                  backlog: int = 100_000, commands: int = 100, runs: int = 100_000,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-control-")) if own else workdir
    assert folder is not None
    figures: dict[str, float] = {}
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its line per API request would drown the figures
    try:
        if "ingest" in parts:
            figures |= bench_ingest(folder, hosts, seconds)
        if "replication" in parts:
            figures |= bench_replication(folder, rate, seconds, backlog)
        if "command" in parts:
            figures |= bench_command(folder, commands)
        if "runs" in parts:
            figures |= bench_runs(folder, runs)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return figures
