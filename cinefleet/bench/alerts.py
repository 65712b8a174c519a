"""``cinefleet bench alerts``: how fast an alert reaches a phone's ntfy server, and what a burst costs.

Every part sends to a real HTTP receiver on loopback
(:class:`~control_plane.alerts.testing.RecordingReceiver`, ntfy-compatible) and times *arrival at the
receiver*, each against a same-run baseline:

1. ``delivery``: ``messages`` critical messages (default 200), one at a time, through the
   :class:`~control_plane.alerts.delivery.Deliverer` (submit → the request at the receiver), and
   interleaved with them the same JSON publish as one raw ``requests.post``. Printed: p50/p99 of
   each and their difference (what apprise, the worker thread and the per-message notifier cost).
2. ``burst``: 20 distinct critical messages submitted at once to one ntfy URL: time until the last
   arrives (goal ≪ 5 s), against 20 raw POSTs in a row; and what apprise alone does with one
   ``Apprise`` object (its 5.5 s gap per plugin instance): ``naive`` messages (default 3, 0 skips
   it) through ``Apprise.notify``, and the 20 extrapolated from that gap.
3. ``event``: an event in the centre's database (a stage failing, written as replication applies
   it) → the emitter's next tick (every ``tick`` s, 0.5 by default, in its loop as ``alerts serve``
   runs it) → the first delivery attempt at the receiver: p50/p99 over ``events`` (default 100)
   distinct critical alerts, each at a random moment of a tick (goal p99 ≤ 1 s). Beside it, what
   one tick takes, and a raw POST to the receiver.
4. ``dedup``: one failing stage failing again and again → exactly one notification at the
   receiver. First ``ticked`` duplicates (default 1,000) each written then ticked on its own (the
   worst case: every repeat is evaluated), against ticks that see nothing new; then ``duplicates``
   (default 10,000) written as replication applies them, 100 per transaction, while the emitter
   ticks every 0.5 s: the time until a tick has seen the last one.

Everything shares this machine's cores; the figures are what one emitter does here.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import apprise
import requests
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from control_plane.alerts.config import AlertConfig, ReceiverConfig, Route, TypeRule
from control_plane.alerts.delivery import Attempt, Deliverer, Message, Receiver
from control_plane.alerts.engine import Emitter, TickReport, receivers_of
from control_plane.alerts.serve import run
from control_plane.alerts.testing import RecordingReceiver
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.tables import AlertRow, NotificationRow, RunRow, StageRow

PARTS = ("delivery", "burst", "event", "dedup")
SITE = "site-bench"
TENANT = "tenant-bench"
BURST = 20
#: apprise's default gap between two sends of one plugin instance (NotifyBase.request_rate_per_sec).
APPRISE_GAP_S = 5.5
#: The emitter's tick while duplicates stream in (``alerts serve``'s default).
DEDUP_TICK_S = 0.5
#: Duplicate events per transaction, as replication applies a pushed batch.
DUPLICATE_BATCH = 100
#: Seconds any single wait of the bench may take before it fails loudly.
WAIT_S = 60.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def _ms(samples: list[float], q: float) -> float:
    return _percentile(samples, q) * 1000


def _message(n: int) -> Message:
    return Message(notification_id=n, alert_id=n, event="firing", severity="critical", title=f"host_down h{n}",
                   body=f"host h{n} is offline\nhttps://centre.example/hosts/h{n}",
                   click_url=f"https://centre.example/hosts/h{n}",
                   ack_url=f"https://centre.example/api/v1/alerts/{n}/ack?t=bench")


def _raw_post(rx: RecordingReceiver, topic: str, message: Message) -> None:
    """The baseline: the same publish apprise makes, as one plain HTTP request."""
    response = requests.post(rx.base_url, timeout=10, headers={"X-Priority": "5", "X-Click": message.click_url or ""},
                             data=json.dumps({"topic": topic, "title": message.title, "message": message.body}))
    response.raise_for_status()


def _check_sent(attempts: list[Attempt], expected: int) -> None:
    sent = sum(a.final and a.outcome == "sent" for a in attempts)
    if sent != expected:
        raise AssertionError(f"expected {expected} messages sent, the deliverer recorded {sent}: "
                             f"{[a for a in attempts if a.outcome != 'sent'][:3]}")


def bench_delivery(messages: int) -> dict[str, float]:
    """Submit → arrival of one message at a time, interleaved with raw POSTs of the same."""
    attempts: list[Attempt] = []
    via: list[float] = []
    raw: list[float] = []
    with RecordingReceiver() as rx:
        deliverer = Deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, attempts.append)
        try:
            for n in range(1, messages + 1):
                started = time.time()
                deliverer.submit("ops", _message(n))
                via.append(rx.wait_for(n, WAIT_S, "/ops")[-1].at - started)
                started = time.time()
                _raw_post(rx, "raw", _message(n))
                raw.append(rx.wait_for(n, WAIT_S, "/raw")[-1].at - started)
            if not deliverer.wait_idle(WAIT_S):
                raise AssertionError("the deliverer did not settle its messages")
        finally:
            deliverer.close()
    _check_sent(attempts, messages)
    figures = {"delivery_p50_ms": _ms(via, 0.5), "delivery_p99_ms": _ms(via, 0.99),
               "delivery_raw_p50_ms": _ms(raw, 0.5), "delivery_raw_p99_ms": _ms(raw, 0.99)}
    print(f"delivery, {messages} critical messages one at a time, submit -> request at the ntfy receiver: "
          f"p50 {figures['delivery_p50_ms']:.1f} ms, p99 {figures['delivery_p99_ms']:.1f} ms; a raw HTTP POST: "
          f"p50 {figures['delivery_raw_p50_ms']:.1f} ms, p99 {figures['delivery_raw_p99_ms']:.1f} ms "
          f"(apprise and the worker: {figures['delivery_p50_ms'] - figures['delivery_raw_p50_ms']:+.1f} ms "
          f"at the median)")
    return figures


def bench_burst(naive: int) -> dict[str, float]:
    """20 distinct critical messages to one ntfy URL at once: time until the last arrives, three ways."""
    attempts: list[Attempt] = []
    with RecordingReceiver() as rx:
        deliverer = Deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, attempts.append)
        try:
            started = time.time()
            for n in range(1, BURST + 1):
                deliverer.submit("ops", _message(n))
            burst_s = rx.wait_for(BURST, WAIT_S, "/ops")[-1].at - started
            if not deliverer.wait_idle(WAIT_S):
                raise AssertionError("the deliverer did not settle the burst")
        finally:
            deliverer.close()
        _check_sent(attempts, BURST)

        started = time.time()
        for n in range(1, BURST + 1):
            _raw_post(rx, "raw", _message(n))
        raw_s = rx.wait_for(BURST, WAIT_S, "/raw")[-1].at - started

        gap_s = float("nan")
        if naive:
            plain = apprise.Apprise()
            plain.add(rx.ntfy_url("naive") + "?priority=max")
            started = time.time()
            for n in range(1, naive + 1):
                if not plain.notify(body=_message(n).body, title=_message(n).title):
                    raise AssertionError("apprise's plain notify failed against the receiver")
            arrived = [r.at for r in rx.wait_for(naive, WAIT_S, "/naive")]
            if naive > 1:
                gap_s = statistics.median(b - a for a, b in itertools.pairwise(arrived))
    figures = {"burst_last_s": burst_s, "burst_raw_last_s": raw_s, "burst_apprise_gap_s": gap_s,
               "burst_apprise_last_s": gap_s * (BURST - 1)}
    print(f"burst of {BURST} distinct critical alerts to one ntfy URL: the last arrived after {burst_s:.3f} s "
          f"(goal << 5 s); {BURST} raw POSTs in a row: {raw_s:.3f} s (ratio {burst_s / raw_s:.1f})")
    if naive > 1:
        print(f"  apprise alone (one Apprise object, {naive} messages): {gap_s:.2f} s between two sends, so the "
              f"{BURST}th would arrive after ~{gap_s * (BURST - 1):.0f} s ({gap_s * (BURST - 1) / burst_s:.0f}x ours)")
    return figures


def _fleet(folder: Path, name: str) -> Engine:
    """A fresh fleet database, as ``control serve`` makes it."""
    engine = open_engine(sqlite_url(folder / f"{name}.db"))
    migrate(engine)
    return engine


def _config(rx: RecordingReceiver, tick_s: float) -> AlertConfig:
    """Every alert to one ntfy receiver; job_failed critical (critical goes at once, no flap wait).

    excessive_retries is set out of reach: the duplicates are the stage's attempts counting up, which
    past 3 would (rightly) raise that second alert.
    """
    return AlertConfig(tick=tick_s, receivers=[ReceiverConfig(name="ops", urls=[rx.ntfy_url("ops")])],
                       routes=[Route(receivers=["ops"])],
                       types={"job_failed": TypeRule(severity="critical"),
                              "excessive_retries": TypeRule(threshold=1e12)})


def _fail_stage(engine: Engine, n: int, attempts: int = 1) -> None:
    """A run whose stage failed, written into the centre's tables as replication applies it (one transaction)."""
    now = time.time()
    run_id, stage_id = f"run{n:06d}", f"shot{n:06d}"
    with engine.begin() as connection:
        connection.execute(insert(RunRow.__table__), [{
            "site_id": SITE, "run_id": run_id, "tenant_id": TENANT, "project_path": "projects/p.yaml",
            "project_hash": f"{n:064x}", "out_dir": f"out/{run_id}", "status": "failed",
            "detail": f"stage {stage_id} failed", "episode": None, "submitted_seq": n, "submitted_at": now,
            "finished_at": now, "replicated_seq": n, "updated_at": now}])
        connection.execute(insert(StageRow.__table__), [{
            "site_id": SITE, "run_id": run_id, "stage_id": stage_id, "tenant_id": TENANT, "kind": "shot",
            "queue": "cpu_queue", "identity": f"{n:064x}", "status": "failed", "depends_on": [], "args": {},
            "output": None, "outputs": {}, "attempts": attempts, "worker": None, "message_id": None,
            "error": "ffmpeg exited 1", "seconds": 1.0, "cache_hits": 0, "cache_misses": 1, "replicated_seq": n,
            "updated_at": now}])


class _TimedEmitter(Emitter):
    """The emitter, keeping how long each tick took (the part of the latency that is not waiting for it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.took: list[float] = []

    def tick(self) -> TickReport:
        started = time.perf_counter()
        try:
            return super().tick()
        finally:
            self.took.append(time.perf_counter() - started)


def bench_event(folder: Path, events: int, tick_s: float) -> dict[str, float]:
    """A failed stage committed in the centre's database -> its alert's request at the receiver."""
    engine = _fleet(folder, "event")
    latencies: list[float] = []
    stop = threading.Event()
    rng = random.Random(12)
    with RecordingReceiver() as rx:
        config = _config(rx, tick_s)
        emitter = _TimedEmitter(engine, config, b"k" * 32)
        deliverer = Deliverer(receivers_of(config), emitter.record)
        emitter.attach(deliverer, resume=False)
        ticker = threading.Thread(target=run, args=(emitter, tick_s, stop), name="bench-emitter", daemon=True)
        ticker.start()
        try:
            for n in range(1, events + 1):
                time.sleep(rng.uniform(0, tick_s))  # events land anywhere within a tick
                started = time.time()
                _fail_stage(engine, n)
                latencies.append(rx.wait_for(n, WAIT_S, "/ops")[-1].at - started)
            started = time.time()
            _raw_post(rx, "raw", _message(1))
            raw_s = rx.wait_for(1, WAIT_S, "/raw")[-1].at - started
        finally:
            stop.set()
            ticker.join(WAIT_S)
            deliverer.wait_idle(WAIT_S)
            deliverer.close()
    with engine.connect() as connection:
        sent = connection.scalar(select(func.count()).select_from(NotificationRow)
                                 .where(NotificationRow.status == "sent"))
    engine.dispose()
    if sent != events:
        raise AssertionError(f"expected {events} notifications sent, the outbox has {sent}")
    figures = {"event_p50_ms": _ms(latencies, 0.5), "event_p99_ms": _ms(latencies, 0.99),
               "event_tick_s": tick_s, "event_tick_p50_ms": _ms(emitter.took, 0.5),
               "event_tick_p99_ms": _ms(emitter.took, 0.99),
               "event_raw_ms": raw_s * 1000}
    print(f"event -> first attempt at the receiver, {events} distinct critical alerts (a failed stage committed "
          f"in the centre's database, the emitter ticking every {tick_s:g} s): p50 {figures['event_p50_ms']:.0f} ms, "
          f"p99 {figures['event_p99_ms']:.0f} ms (goal p99 <= 1000 ms, ratio {figures['event_p99_ms'] / 1000:.2f}); "
          f"of which waiting for the next tick ~{tick_s * 500:.0f} ms on average, one tick p50 "
          f"{figures['event_tick_p50_ms']:.1f} ms / p99 {figures['event_tick_p99_ms']:.1f} ms, a raw POST to the "
          f"receiver {figures['event_raw_ms']:.1f} ms")
    return figures


def _duplicate(engine: Engine, attempts: range) -> None:
    """The failed stage of run 1 failing again, once per number in ``attempts``, in one transaction."""
    table = StageRow.__table__
    with engine.begin() as connection:
        for attempt in attempts:
            connection.execute(update(table).where(table.c.run_id == "run000001")
                               .values(attempts=attempt, updated_at=time.time()))


def bench_dedup(folder: Path, duplicates: int, ticked: int) -> dict[str, float]:
    """One failing stage seen again and again: exactly one notification, and how fast the repeats are absorbed.

    First ``ticked`` duplicates each written then ticked on its own (the worst case: every repeat is
    evaluated); then ``duplicates`` written as replication applies them (batches of
    :data:`DUPLICATE_BATCH` events per transaction, as fast as the database takes them) while the
    emitter runs its own loop, until a tick has seen the last one.
    """
    engine = _fleet(folder, "dedup")
    with RecordingReceiver() as rx:
        config = _config(rx, DEDUP_TICK_S)
        emitter = _TimedEmitter(engine, config, b"k" * 32)
        deliverer = Deliverer(receivers_of(config), emitter.record)
        emitter.attach(deliverer, resume=False)
        stop = threading.Event()
        ticker = threading.Thread(target=run, args=(emitter, DEDUP_TICK_S, stop), name="bench-emitter", daemon=True)
        try:
            _fail_stage(engine, 1)
            emitter.tick()
            rx.wait_for(1, WAIT_S, "/ops")
            quiet: list[float] = []
            for _ in range(min(200, max(ticked, 10))):  # the baseline: ticks that see nothing new
                started = time.perf_counter()
                emitter.tick()
                quiet.append(time.perf_counter() - started)
            started = time.perf_counter()
            for attempt in range(2, ticked + 2):
                _duplicate(engine, range(attempt, attempt + 1))
                emitter.tick()
            ticked_s = time.perf_counter() - started

            last = ticked + 1 + duplicates
            emitter.took.clear()
            ticker.start()
            started = time.perf_counter()
            for first in range(ticked + 2, last + 1, DUPLICATE_BATCH):
                _duplicate(engine, range(first, min(first + DUPLICATE_BATCH, last + 1)))
            written_s = time.perf_counter() - started
            wait_for_alert = time.monotonic() + WAIT_S
            while _occurrence(engine) != f"attempt {last}":
                if time.monotonic() > wait_for_alert:
                    raise AssertionError(f"the emitter did not see attempt {last} within {WAIT_S} s")
                time.sleep(0.01)
            streamed_s = time.perf_counter() - started
            stop.set()
            ticker.join(WAIT_S)
            if not deliverer.wait_idle(WAIT_S):
                raise AssertionError("the deliverer did not settle")
            time.sleep(0.2)  # a second notification, were there one, would have arrived by now
            arrived = len(rx.requests("/ops"))
        finally:
            stop.set()
            deliverer.close()
    with engine.connect() as connection:
        notifications = connection.scalar(select(func.count()).select_from(NotificationRow))
        count = connection.scalar(select(AlertRow.count))
    engine.dispose()
    if notifications != 1 or arrived != 1 or count is None or count < ticked + 2:
        raise AssertionError(f"{ticked} + {duplicates} duplicates: expected 1 notification, 1 arrival and a count "
                             f"over {ticked + 1}; got {notifications}, {arrived}, {count}")
    figures = {"dedup_notifications": float(notifications), "dedup_count": float(count),
               "dedup_ticked_per_event_ms": ticked_s / ticked * 1000 if ticked else float("nan"),
               "dedup_quiet_tick_ms": _ms(quiet, 0.5), "dedup_written_s": written_s, "dedup_absorb_s": streamed_s,
               "dedup_stream_ticks": float(len(emitter.took))}
    print(f"dedup, one failing stage: {notifications} notification at the receiver, alert count {count:,}")
    if ticked:
        print(f"  {ticked:,} duplicates each written then ticked on its own: "
              f"{figures['dedup_ticked_per_event_ms']:.1f} ms per duplicate (a write and a tick); a tick that sees "
              f"nothing new: {figures['dedup_quiet_tick_ms']:.1f} ms")
    print(f"  {duplicates:,} duplicates as replication applies them ({DUPLICATE_BATCH} per transaction) with the "
          f"emitter ticking every {DEDUP_TICK_S:g} s: written in {written_s:.2f} s, absorbed (a tick saw the last) "
          f"{streamed_s:.2f} s after the first, over {len(emitter.took)} ticks")
    return figures


def _occurrence(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(select(AlertRow.occurrence).where(AlertRow.alert_type == "job_failed"))


def run_benchmark(workdir: Path | None = None, messages: int = 200, naive: int = 3, events: int = 100,
                  tick: float = 0.5, duplicates: int = 10_000, ticked: int = 1_000,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="cinefleet-bench-alerts-")) if own else workdir
    assert folder is not None
    figures: dict[str, float] = {}
    # one line per attempt and per apprise send would drown the figures
    for name in ("control_plane.alerts", "apprise"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if "delivery" in parts:
            figures |= bench_delivery(messages)
        if "burst" in parts:
            figures |= bench_burst(naive)
        if "event" in parts:
            figures |= bench_event(folder, events, tick)
        if "dedup" in parts:
            figures |= bench_dedup(folder, duplicates, ticked)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return figures
