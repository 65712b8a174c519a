"""``cinefleet bench site``: what the site adds on top of the work itself.

1. Dispatch overhead: N no-op stages through the scheduler and two worker processes, against
   N no-op messages through plain dramatiq (an in-process worker with two threads) on the
   same Redis, in the same run.
2. The reference episode through the site with two workers, against ``cinefleet render``
   (two workers) of the same project, each into a fresh store.
3. Drain latency: from the drain call to the worker refusing new work (the scheduler has
   applied it and set the key the worker checks before every message), and to the worker
   reporting ``drained``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from pipeline.render import RenderRequest, render
from site_scheduler.client import SiteClient
from site_scheduler.config import read_endpoints
from tests.bench.render import reference_project

SITE = "bench"


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "cinefleet", *args], stdout=handle, stderr=handle,
                            start_new_session=True)


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def _plain_dramatiq(url: str, count: int) -> float:
    """Seconds for ``count`` no-op messages through plain dramatiq: enqueue, process, ack."""
    client = redis.Redis.from_url(url)
    counter = "bench-plain:done"
    client.delete(counter)
    broker = RedisBroker(url=url, namespace="bench-plain")

    def noop() -> None:
        client.incr(counter)

    actor = dramatiq.actor(noop, actor_name="noop", queue_name="plain", broker=broker, max_retries=0)
    worker = dramatiq.Worker(broker, queues={"plain"}, worker_threads=2, worker_timeout=100)
    began = time.perf_counter()
    for _ in range(count):
        actor.send()
    worker.start()
    _wait(lambda: int(client.get(counter) or 0) >= count, 120, "plain dramatiq")
    elapsed = time.perf_counter() - began
    worker.stop()
    broker.close()
    return elapsed


PARTS = ("dispatch", "episode", "drain")


def _dispatch(client: SiteClient, redis_url: str, stages: int) -> dict[str, float]:
    plain_s = _plain_dramatiq(redis_url, stages)
    began = time.perf_counter()
    client.wait(client.submit_probe(stages), timeout=600, poll=0.05)
    site_s = time.perf_counter() - began
    plain_rate, site_rate = stages / plain_s, stages / site_s
    print(f"dispatch: {stages} no-op stages through the site  {site_rate:8.0f} stages/s ({site_s:.2f} s)")
    print(f"          {stages} no-op messages, plain dramatiq {plain_rate:8.0f} msgs/s   ({plain_s:.2f} s)")
    print(f"          ratio site/plain = {site_rate / plain_rate:.2f}   (targets: ≥ 1000 stages/s, ratio ≥ 0.2)")
    return {"site_rate": site_rate, "plain_rate": plain_rate}


def _episode(client: SiteClient, folder: Path, shots: int) -> dict[str, float]:
    project = reference_project(folder / "project", shots)
    began = time.perf_counter()
    render(RenderRequest(project=project, out=folder / "render-out", store=folder / "render-store", workers=2))
    render_s = time.perf_counter() - began
    began = time.perf_counter()
    run = client.wait(client.submit(project, folder / "site-out"), timeout=1200, poll=0.1)
    site_render_s = time.perf_counter() - began
    same = (folder / "render-out" / "episode.mp4").read_bytes() == Path(run["episode"]).read_bytes()
    print(f"episode:  cinefleet render {render_s:6.1f} s   site, two workers {site_render_s:6.1f} s   "
          f"ratio {site_render_s / render_s:.2f}   (target ≤ 1.15)   identical bytes: {same}")
    return {"render_s": render_s, "site_render_s": site_render_s}


def _drain(client: SiteClient) -> dict[str, float]:
    began = time.perf_counter()
    client.control("drain-worker", worker="w1")
    refusing_s = time.perf_counter() - began
    _wait(lambda: any(w["name"] == "w1" and w["status"] == "drained" for w in client.workers()), 10, "drained")
    drained_s = time.perf_counter() - began
    print(f"drain:    refusing new work after {refusing_s * 1000:.0f} ms, reported drained after "
          f"{drained_s * 1000:.0f} ms   (target ≤ 1 s)")
    return {"refusing_s": refusing_s, "drained_s": drained_s}


def run_benchmark(workdir: Path | None = None, stages: int = 1000, shots: int = 40,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-site-")) if own else workdir
    assert folder is not None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        data = folder / "site"
        shutil.rmtree(data, ignore_errors=True)
        processes.append(_spawn(["site", "serve", "--site", SITE, "--data-dir", str(data)], folder / "serve.log"))
        _wait(lambda: (data / "site.json").exists(), 30, "the site")
        endpoints = read_endpoints(SITE, data)
        client = SiteClient(endpoints)
        for name in ("w1", "w2"):
            processes.append(_spawn(["worker", "--site", SITE, "--data-dir", str(data), "--name", name],
                                    folder / f"{name}.log"))
        _wait(lambda: len([w for w in client.workers() if w["status"] == "idle"]) == 2, 30, "two workers")

        figures: dict[str, float] = {}
        if "dispatch" in parts:
            figures |= _dispatch(client, endpoints.redis_url, stages)
        if "episode" in parts:
            figures |= _episode(client, folder, shots)
        if "drain" in parts:
            figures |= _drain(client)
        client.close()
        return figures
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        if own:
            shutil.rmtree(folder, ignore_errors=True)

