"""Delivery against a real HTTP receiver (:class:`RecordingReceiver`) through apprise's real ntfy and json plugins.

Retries, ``Retry-After``, timeouts, fallback and the 20-message burst are each checked on what the
receiver actually got and on the attempts the deliverer recorded. Timing bounds are generous
(seconds where a pass takes tens of milliseconds) so that they fail only on the behaviour they
guard (apprise's 5.5 s gap, a hang leaking into another receiver), never on a slow machine.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from cinefleet.logs import JsonFormatter
from control_plane.alerts.delivery import Attempt, Deliverer, Message, Receiver
from control_plane.alerts.testing import RecordingReceiver, Reply


class Attempts:
    """The ``record`` callback: every attempt, thread-safe, readable per receiver."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.all: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> None:
        with self.lock:
            self.all.append(attempt)

    def of(self, receiver: str, notification_id: int | None = None) -> list[Attempt]:
        with self.lock:
            return [a for a in self.all if a.receiver == receiver
                    and (notification_id is None or a.notification_id == notification_id)]


def message(notification_id: int = 1, *, severity: str = "critical", event: str = "firing",
            ack: bool = True) -> Message:
    return Message(notification_id=notification_id, alert_id=100 + notification_id, event=event, severity=severity,
                   title=f"disk_full on h{notification_id}",
                   body=f"volume /data over its high-water mark\nhttps://centre.example/alerts/{notification_id}",
                   click_url=f"https://centre.example/alerts/{notification_id}",
                   ack_url=f"https://centre.example/api/v1/alerts/{notification_id}/ack?t=sig,ned" if ack else None)


@pytest.fixture
def rx() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as receiver:
        yield receiver


def deliverer(receivers: dict[str, Receiver], record: Attempts, **kwargs: float) -> Deliverer:
    options = {"timeout_s": 2.0, "max_attempts": 4, "backoff_base_s": 0.02, "backoff_max_s": 0.1, **kwargs}
    return Deliverer(receivers, record, **options)  # type: ignore[arg-type]


def test_500_then_200_is_retried_and_every_attempt_recorded(rx: RecordingReceiver) -> None:
    rx.fail("/ops", 2)
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, record)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    assert [r.status for r in rx.requests("/ops")] == [500, 500, 200]
    attempts = record.of("ops")
    assert [(a.attempt, a.outcome, a.error, a.final) for a in attempts] == [
        (1, "failed", "HTTP 500", False), (2, "failed", "HTTP 500", False), (3, "sent", "", True)]
    assert attempts[-1].receiver_outcome == "sent"
    assert all(a.notification_id == 1 and a.alert_id == 101 and a.started_at <= a.finished_at for a in attempts)
    assert all(a.url.startswith("ntfy://127.0.0.1:") for a in attempts)


def test_429_waits_for_retry_after(rx: RecordingReceiver) -> None:
    rx.rate_limit("/ops", 1.0)
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, record)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    first, second = rx.requests("/ops")
    assert (first.status, second.status) == (429, 200)
    # the backoff alone would retry within 0.1 s; the receiver asked for 1 s
    assert second.at - first.at >= 0.95
    assert [(a.outcome, a.error) for a in record.of("ops")] == [("rate_limited", "HTTP 429, Retry-After 1 s"),
                                                               ("sent", "")]


def test_a_hanging_receiver_does_not_delay_another(rx: RecordingReceiver) -> None:
    rx.hang("/slow", 30, times=5)
    record = Attempts()
    d = deliverer({"slow": Receiver("slow", (rx.ntfy_url("slow"),)), "fast": Receiver("fast", (rx.ntfy_url("fast"),))},
                  record, timeout_s=5.0)
    try:
        d.submit("slow", message(1))
        rx.wait_for(1, 10, "/slow")  # the slow one is hanging before the fast one is submitted
        submitted = time.time()
        d.submit("fast", message(2))
        fast = rx.wait_for(1, 10, "/fast")[0]
    finally:
        d.close()
    # waiting behind the hanging send would take its 5 s timeout (or the 30 s hang)
    assert fast.at - submitted < 3.0
    assert [a.outcome for a in record.of("fast")] == ["sent"]
    # the slow send was still hanging when the fast one arrived; close() waited out its timeout, and
    # recorded it as not final: its notification stays pending for the next start
    assert [(a.outcome, a.final, a.finished_at > fast.at) for a in record.of("slow")] == [("timeout", False, True)]


def test_a_hanging_send_is_cut_at_the_timeout(rx: RecordingReceiver) -> None:
    rx.hang("/slow", 30, times=5)
    record = Attempts()
    d = deliverer({"slow": Receiver("slow", (rx.ntfy_url("slow"),))}, record, timeout_s=1.0, max_attempts=2)
    try:
        start = time.time()
        d.submit("slow", message(1))
        assert d.wait_idle(20)
        done = time.time()
    finally:
        d.close()
    slow = record.of("slow")
    assert [(a.outcome, a.error, a.final) for a in slow] == [
        ("timeout", "no answer within 1 s", False), ("gave_up", "no answer within 1 s", True)]
    assert all(0.9 <= a.finished_at - a.started_at < 3.0 for a in slow)
    assert done - start < 10  # two 1 s attempts, not two 30 s hangs


def test_fallback_gets_the_message_when_the_primary_gives_up(rx: RecordingReceiver) -> None:
    rx.fail("/primary", 10, status=503)
    record = Attempts()
    receivers = {"primary": Receiver("primary", (rx.ntfy_url("primary"),), fallback="backup"),
                 "backup": Receiver("backup", (rx.json_url("hook"),))}
    d = deliverer(receivers, record, max_attempts=3)
    try:
        d.submit("primary", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    primary = record.of("primary")
    assert [(a.outcome, a.error, a.final, a.receiver_outcome) for a in primary] == [
        ("failed", "HTTP 503", False, ""), ("failed", "HTTP 503", False, ""), ("gave_up", "HTTP 503", True, "gave_up")]
    (backup,) = record.of("backup")
    assert (backup.outcome, backup.final, backup.receiver_outcome) == ("sent", True, "sent")
    assert backup.started_at >= primary[-1].finished_at
    (hook,) = rx.requests("/hook")
    assert hook.json()["notification_id"] == 1


def test_fallbacks_that_point_at_each_other_stop(rx: RecordingReceiver) -> None:
    rx.fail("/a", 10)
    rx.fail("/b", 10)
    record = Attempts()
    receivers = {"a": Receiver("a", (rx.ntfy_url("a"),), fallback="b"),
                 "b": Receiver("b", (rx.ntfy_url("b"),), fallback="a")}
    d = deliverer(receivers, record, max_attempts=1)
    try:
        d.submit("a", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    assert [(a.receiver, a.outcome) for a in record.all] == [("a", "gave_up"), ("b", "gave_up")]


def test_a_burst_of_20_to_one_ntfy_url_is_not_paced_by_apprise(rx: RecordingReceiver) -> None:
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, record)
    try:
        start = time.time()
        for n in range(1, 21):
            d.submit("ops", message(n))
        got = rx.wait_for(20, 30, "/ops")
        assert d.wait_idle(10)
    finally:
        d.close()
    # apprise's 5.5 s gap per instance would take 104.5 s; one send here takes milliseconds
    assert got[-1].at - start < 3.0
    assert sorted(json.loads(r.body)["title"] for r in got) == sorted(f"disk_full on h{n}" for n in range(1, 21))
    assert sum(a.outcome == "sent" and a.final for a in record.all) == 20


@pytest.mark.parametrize(("severity", "priority"), [("critical", "max"), ("warning", "high"), ("info", None)])
def test_ntfy_headers_as_a_phone_gets_them(rx: RecordingReceiver, severity: str, priority: str | None) -> None:
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, record)
    try:
        d.submit("ops", message(7, severity=severity))
        d.submit("ops", message(8, severity=severity, event="resolved", ack=False))
        assert d.wait_idle(10)
    finally:
        d.close()
    firing, resolved = sorted(rx.requests("/ops"), key=lambda r: r.json()["title"])
    # ntfy's priorities 5 and 4 by name; 3 is ntfy's default, which apprise leaves unsaid
    assert firing.header("X-Priority") == priority
    assert firing.header("X-Click") == "https://centre.example/alerts/7"
    assert json.loads(firing.header("X-Actions") or "") == [
        {"action": "http", "label": "Ack", "url": "https://centre.example/api/v1/alerts/7/ack?t=sig,ned",
         "method": "POST", "clear": True},
        {"action": "view", "label": "Open", "url": "https://centre.example/alerts/7"}]
    assert firing.json() == {"topic": "ops", "title": "disk_full on h7", "message": message(7).body}
    # resolved: no Ack button (nothing left to ack), still the way to the page
    assert json.loads(resolved.header("X-Actions") or "") == [
        {"action": "view", "label": "Open", "url": "https://centre.example/alerts/8"}]


def test_json_webhook_carries_every_field(rx: RecordingReceiver) -> None:
    record = Attempts()
    d = deliverer({"hook": Receiver("hook", (rx.json_url("alerts/in"),))}, record)
    try:
        d.submit("hook", message(3, severity="warning"))
        assert d.wait_idle(10)
    finally:
        d.close()
    (got,) = rx.requests("/alerts/in")
    body = got.json()
    assert {k: body[k] for k in ("title", "message", "type", "notification_id", "alert_id", "event", "severity",
                                 "click_url", "ack_url")} == {
        "title": "disk_full on h3", "message": message(3).body, "type": "warning", "notification_id": 3,
        "alert_id": 103, "event": "firing", "severity": "warning", "click_url": "https://centre.example/alerts/3",
        "ack_url": "https://centre.example/api/v1/alerts/3/ack?t=sig,ned"}


def test_receiver_with_two_urls_settles_once(rx: RecordingReceiver) -> None:
    rx.fail("/bad", 10)
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("bad"), rx.ntfy_url("good")), fallback="spare"),
                   "spare": Receiver("spare", (rx.ntfy_url("spare"),))}, record, max_attempts=2)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    finals = [a for a in record.all if a.final]
    assert [(a.receiver, a.receiver_outcome) for a in finals] == [("ops", "sent")]
    assert rx.requests("/spare") == []  # one URL reached the on-call: no fallback


def test_no_secret_in_attempts_or_logs(rx: RecordingReceiver, caplog: pytest.LogCaptureFixture) -> None:
    secret_url = f"ntfy://pager:hunter2-pw@127.0.0.1:{rx.port}/ops"
    token_url = f"ntfy://127.0.0.1:{rx.port}/tok?auth=token&token=tk_s3cr3tvalue"
    # a webhook whose path, custom header and GET parameter are secrets apprise does not know of
    hook_url = f"json://127.0.0.1:{rx.port}/hooks/T0P-S3CRET-PATH?+X-Token=hdr-s3cret&-apikey=qry-s3cret"
    rx.fail("/ops", 1)
    rx.fail("/tok", 1)
    rx.fail("/hooks/T0P-S3CRET-PATH", 1)
    record = Attempts()
    # INFO, as every cinefleet process logs (at DEBUG, apprise and urllib3 print request paths themselves)
    caplog.set_level(logging.INFO)
    d = deliverer({"ops": Receiver("ops", (secret_url, token_url, hook_url))}, record)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    (first,) = rx.requests("/ops")[:1]
    assert first.header("Authorization")  # the secrets did reach the receiver...
    (hook,) = rx.requests("/hooks/T0P-S3CRET-PATH")[:1]
    assert hook.header("X-Token") == "hdr-s3cret" and "apikey=qry-s3cret" in hook.path
    assert len(record.all) == 6
    assert {a.url for a in record.all} == {f"ntfy://pager:****@127.0.0.1:{rx.port}/ops",
                                           f"ntfy://t...e@127.0.0.1:{rx.port}/tok", f"json://127.0.0.1:{rx.port}/…"}
    text = "\n".join(repr(a) for a in record.all)
    formatter = JsonFormatter()
    text += "\n".join(formatter.format(r) for r in caplog.records)
    for secret in ("hunter2-pw", "tk_s3cr3tvalue", "S3CRET-PATH", "hdr-s3cret", "qry-s3cret"):  # ...nowhere else
        assert secret not in text


def test_unreachable_url_gives_up_with_a_clear_error() -> None:
    with RecordingReceiver() as gone:
        url = gone.ntfy_url("ops")
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (url,))}, record, max_attempts=2)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    assert [(a.outcome, a.error) for a in record.all] == [("failed", "no HTTP response (ConnectionError)"),
                                                          ("gave_up", "no HTTP response (ConnectionError)")]


def test_bad_configuration_is_refused_with_what_was_expected(rx: RecordingReceiver) -> None:
    with pytest.raises(ValueError, match=r"receiver 'ops': URL with scheme 'nope' is not a valid apprise URL"):
        Deliverer({"ops": Receiver("ops", ("nope://x",))}, Attempts())
    with pytest.raises(ValueError, match=r"receiver 'ops': fallback: value 'ghost'"):
        Deliverer({"ops": Receiver("ops", (rx.ntfy_url("x"),), fallback="ghost")}, Attempts())
    with pytest.raises(ValueError, match=r"receiver 'ops': urls: expected at least one"):
        Deliverer({"ops": Receiver("ops", ())}, Attempts())
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("x"),))}, Attempts())
    try:
        with pytest.raises(ValueError, match=r"receiver 'pager': not configured \(expected one of ops\)"):
            d.submit("pager", message())
    finally:
        d.close()
    with pytest.raises(ValueError, match=r"Message.severity: value 'urgent'"):
        Message(1, 1, "firing", "urgent", "t", "b", None, None)


def test_a_refusal_is_not_retried_and_goes_to_the_fallback(rx: RecordingReceiver) -> None:
    rx.fail("/ops", 10, status=401)
    record = Attempts()
    receivers = {"ops": Receiver("ops", (rx.ntfy_url("ops"),), fallback="spare"),
                 "spare": Receiver("spare", (rx.ntfy_url("spare"),))}
    d = deliverer(receivers, record, max_attempts=5)
    try:
        d.submit("ops", message())
        assert d.wait_idle(10)
    finally:
        d.close()
    assert len(rx.requests("/ops")) == 1
    assert [(a.receiver, a.outcome, a.error) for a in record.all] == [
        ("ops", "gave_up", "HTTP 401 (not retried: the service refuses this request as it is)"), ("spare", "sent", "")]


def test_close_leaves_unsent_messages_without_a_final_attempt(rx: RecordingReceiver) -> None:
    rx.rate_limit("/ops", 60)
    record = Attempts()
    d = deliverer({"ops": Receiver("ops", (rx.ntfy_url("ops"),))}, record)
    d.submit("ops", message())
    rx.wait_for(1, 10, "/ops")
    assert not d.wait_idle(0.5)
    d.close()  # the retry was due in 60 s: dropped, not given up
    assert [(a.outcome, a.final) for a in record.all] == [("rate_limited", False)]
    assert len(rx.requests("/ops")) == 1


def test_the_recording_receiver_speaks_both_ntfy_forms_and_replays_its_script() -> None:
    with RecordingReceiver() as rx:
        rx.script("/alerts", Reply(503), Reply(429, (("Retry-After", "7"),)))
        answers = [requests.put(f"{rx.base_url}/alerts", data=b"disk full", headers={"X-Priority": "5"}, timeout=5)
                   for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 429, 200]
        assert answers[1].headers["Retry-After"] == "7"
        requests.post(rx.base_url, json={"topic": "ops", "message": "hi"}, timeout=5)
        put, _, _, published = rx.wait_for(4, 5)
        assert (put.method, put.route, put.body, put.header("x-priority"), put.status) == (
            "PUT", "/alerts", b"disk full", "5", 503)
        assert (published.path, published.route, published.json()["message"]) == ("/", "/ops", "hi")
        with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for 2 requests to /ops: got 1"):
            rx.wait_for(2, 0.1, "/ops")
        rx.hang("/slow", 30)
        outcome: list[str] = []

        def call() -> None:
            try:
                outcome.append(str(requests.post(f"{rx.base_url}/slow", timeout=30).status_code))
            except requests.ConnectionError as exc:
                outcome.append(type(exc).__name__)

        hung = threading.Thread(target=call, daemon=True)
        hung.start()
        rx.wait_for(1, 5, "/slow")
    hung.join(5)
    assert outcome == ["ConnectionError"]  # closing the receiver cut the hanging request at once
