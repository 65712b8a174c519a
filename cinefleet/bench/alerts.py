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
3. ``event``: an event in the centre's database (a stage failing, written as replication writes
   it) → the emitter's tick → the first delivery attempt at the receiver: p50/p99 over ``events``
   distinct critical alerts (goal p99 ≤ 1 s), against the tick alone.
4. ``dedup``: ``duplicates`` (default 10,000) occurrences of one condition → exactly one
   notification at the receiver, and the time the emitter took to absorb them.

Everything shares this machine's cores; the figures are what one emitter does here.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import apprise
import requests

from control_plane.alerts.delivery import Attempt, Deliverer, Message, Receiver
from control_plane.alerts.testing import RecordingReceiver

PARTS = ("delivery", "burst")
BURST = 20
#: apprise's default gap between two sends of one plugin instance (NotifyBase.request_rate_per_sec).
APPRISE_GAP_S = 5.5
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
          f"(apprise and the worker add {figures['delivery_p50_ms'] - figures['delivery_raw_p50_ms']:.1f} ms "
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


def run_benchmark(workdir: Path | None = None, messages: int = 200, naive: int = 3,
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
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return figures
