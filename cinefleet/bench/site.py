"""``cinefleet bench site``: what the site adds on top of the work itself.

1. Dispatch overhead: N no-op stages through the scheduler and two worker processes, against
   N no-op messages through plain dramatiq (an in-process worker with two threads) on the
   same Redis, in the same run. The goal is a ratio, site ≥ 0.9 x plain dramatiq.
2. The reference episode through the site with two workers, against ``cinefleet render``
   (two workers) of the same project, each into a fresh store.
3. Drain latency: from the drain call to the worker refusing new work (the scheduler has
   applied it and set the key the worker checks before every message), and to the worker
   reporting ``drained``.
4. Cancel latency: from the cancel call, while the pilot's shots encode, to no ffmpeg left
   under either worker (the tests only check that it happens, within a generous bound).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import dramatiq
import psutil
import redis
from dramatiq.brokers.redis import RedisBroker

from cinefleet.bench.render import reference_project
from pipeline.render import RenderRequest, render
from pipeline.testing import pilot_project, wait_for
from site_scheduler.client import SiteClient
from site_scheduler.testing import Site

SITE = "bench"
#: The site's dispatch goal: the no-op stage rate at least this share of plain dramatiq's message
#: rate on the same workers in the same run (an absolute rate says more about the machine).
DISPATCH_TARGET_RATIO = 0.9


def _plain_dramatiq(url: str, count: int) -> float:
    """Seconds for ``count`` no-op messages through plain dramatiq: enqueue, process, ack."""
    client = redis.Redis.from_url(url)
    counter = "bench-plain:done"
    client.delete(counter)
    broker = RedisBroker(url=url, namespace="bench-plain")

    def noop() -> None:
        client.incr(counter)

    actor = dramatiq.actor(actor_name="noop", queue_name="plain", broker=broker, max_retries=0)(noop)
    worker = dramatiq.Worker(broker, queues={"plain"}, worker_threads=2, worker_timeout=100)
    began = time.perf_counter()
    for _ in range(count):
        actor.send()
    worker.start()
    wait_for(lambda: int(client.get(counter) or 0) >= count, "plain dramatiq", timeout=120, poll=0.01)
    elapsed = time.perf_counter() - began
    worker.stop()
    broker.close()
    return elapsed


PARTS = ("dispatch", "episode", "drain", "cancel")


def _dispatch(client: SiteClient, redis_url: str, stages: int) -> dict[str, float]:
    plain_s = _plain_dramatiq(redis_url, stages)
    began = time.perf_counter()
    client.wait(client.submit_probe(stages), timeout=600, poll=0.05)
    site_s = time.perf_counter() - began
    plain_rate, site_rate = stages / plain_s, stages / site_s
    print(f"dispatch: {stages} no-op stages through the site  {site_rate:8.0f} stages/s ({site_s:.2f} s)")
    print(f"          {stages} no-op messages, plain dramatiq {plain_rate:8.0f} msgs/s   ({plain_s:.2f} s)")
    ratio = site_rate / plain_rate
    verdict = "met" if ratio >= DISPATCH_TARGET_RATIO else "NOT met"
    print(f"          ratio site/plain = {ratio:.2f}   (target: ≥ {DISPATCH_TARGET_RATIO} x plain dramatiq: {verdict})")
    return {"site_rate": site_rate, "plain_rate": plain_rate, "dispatch_ratio": ratio}


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
    wait_for(lambda: any(w["name"] == "w1" and w["status"] == "drained" for w in client.workers()), "drained",
             timeout=10, poll=0.01)
    drained_s = time.perf_counter() - began
    print(f"drain:    refusing new work after {refusing_s * 1000:.0f} ms, reported drained after "
          f"{drained_s * 1000:.0f} ms   (target ≤ 1 s)")
    return {"refusing_s": refusing_s, "drained_s": drained_s}


def _ffmpeg_under(pids: list[int]) -> list[int]:
    """The ffmpeg processes anywhere below ``pids``."""
    found = []
    for pid in pids:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if "ffmpeg" in child.name():
                    found.append(child.pid)
            except psutil.NoSuchProcess:
                continue
    return found


def _cancel(running: Site, folder: Path) -> dict[str, float]:
    client = running.client
    pids = [process.pid for process in running.workers.values()]
    run_id = client.submit(pilot_project(folder / "cancel" / "pilot.json"), folder / "cancel-out")
    wait_for(lambda: _ffmpeg_under(pids), "an encode to start", timeout=300, poll=0.01)
    began = time.perf_counter()
    client.control("cancel-run", run=run_id)
    answered_s = time.perf_counter() - began
    wait_for(lambda: not _ffmpeg_under(pids), "the encoders to be killed", timeout=60, poll=0.01)
    gone_s = time.perf_counter() - began
    print(f"cancel:   answered after {answered_s * 1000:.0f} ms, every ffmpeg gone after {gone_s * 1000:.0f} ms   "
          "(target ≤ 2 s)")
    return {"cancel_answered_s": answered_s, "cancel_ffmpeg_gone_s": gone_s}


def run_benchmark(workdir: Path | None = None, stages: int = 1000, shots: int = 40,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-site-")) if own else workdir
    assert folder is not None
    data = folder / "site"
    shutil.rmtree(data, ignore_errors=True)
    running = Site(data_dir=data, logs=folder / "logs", site_id=SITE)
    try:
        running.start_scheduler()
        client = running.client
        for name in ("w1", "w2"):
            running.start_worker(name)
        wait_for(lambda: len([w for w in client.workers() if w["status"] == "idle"]) == 2, "two workers", timeout=30)

        figures: dict[str, float] = {}
        if "dispatch" in parts:
            figures |= _dispatch(client, client.endpoints.redis_url, stages)
        if "episode" in parts:
            figures |= _episode(client, folder, shots)
        if "drain" in parts:
            figures |= _drain(client)
        if "cancel" in parts:
            if "drain" in parts:
                client.control("undrain-worker", worker="w1")
            figures |= _cancel(running, folder)
        return figures
    finally:
        running.close()
        if own:
            shutil.rmtree(folder, ignore_errors=True)

