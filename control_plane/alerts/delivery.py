"""Alert delivery: each notification to each receiver URL, on time, retried, and recorded attempt by attempt.

apprise is the transport (ntfy, Pushover, Telegram, email, webhooks, ...); what it lacks for paging
is built here:

* **One worker thread per receiver URL.** A URL that hangs or backs off holds only its own queue,
  never another receiver's. Within one URL the worker picks the earliest due message, so one
  message's backoff does not hold the others either.
* **Our own timeout per send.** Each attempt runs in its own short-lived thread with apprise's
  socket timeouts set to ours; the worker stops waiting at ``timeout_s`` whatever the socket does.
* **Retries with exponential backoff and full jitter** (a random wait in ``[0, min(max, base·2ⁿ)]``),
  up to ``max_attempts``; the last failure is recorded as ``gave_up``. A 4xx answer other than 408,
  425 and 429 is not retried: the same request would be refused again.
* **HTTP 429 honoured.** apprise reports a 429 only as a failed send and drops the response's
  ``Retry-After``; :func:`_capture_responses` keeps, for the sending thread only, the status and
  ``Retry-After`` of each HTTP response ``requests`` returns, and the whole URL then waits that long.
* **No 5.5 s gap in a burst.** apprise sleeps ``request_rate_per_sec`` (5.5 s for ntfy, email,
  Pushover...) between two sends of one plugin *instance*; every attempt here uses a fresh instance
  built for its message, with the throttle off (the per-URL worker and ``Retry-After`` pace us).
* **Per-message options** are built into the instance: ntfy priority by severity, the deep link as
  the click action, an ``Ack`` http action button (POST, clear) and a view button; a ``json://``
  webhook carries every field of the :class:`Message`.
* **A fallback receiver** gets the message when none of the primary's URLs could deliver it.
* **Every attempt is reported** through ``record`` with the URL redacted (:func:`_redact`) and an
  error string built here from status codes and exception class names only, so no secret (a
  token, a password, a URL's query) reaches an error string or a log line of ours.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import apprise
import requests
from apprise import NotifyType

log = logging.getLogger(__name__)

#: ntfy priority per severity (5 = max/urgent: long vibration, pop-over; 3 = default).
NTFY_PRIORITY = {"critical": 5, "warning": 4, "info": 3}
SEVERITIES = tuple(NTFY_PRIORITY)
EVENTS = ("firing", "escalation", "resolved", "test")
#: The longest ``Retry-After`` we wait: beyond it a page would be worthless anyway, so we retry then.
RETRY_AFTER_MAX_S = 300.0
#: Answers that the same request will get again (bad credentials, no such topic, too large): no retry,
#: straight to the fallback. 408 (timeout), 425 and 429 (come back later) are not among them.
PERMANENT = frozenset(range(400, 500)) - {408, 425, 429}
NTFY_SCHEMES = ("ntfy", "ntfys")
JSON_SCHEMES = ("json", "jsons")
#: apprise's plain webhooks: their path and query are the user's, and may hold secrets apprise cannot see.
GENERIC_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms")


@dataclass(frozen=True)
class Message:
    """One notification of one alert, as the engine persisted it in its outbox."""

    notification_id: int
    alert_id: int
    event: str  # "firing" | "escalation" | "resolved" | "test"
    severity: str  # "critical" | "warning" | "info"
    title: str
    body: str  # plain text; includes the deep link and the ack link
    click_url: str | None  # deep link to the dashboard page that explains it
    ack_url: str | None  # signed, expiring ack URL (None for resolved/test)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Message.event: value {self.event!r}: expected one of {', '.join(EVENTS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Message.severity: value {self.severity!r}: expected one of {', '.join(SEVERITIES)}")


@dataclass(frozen=True)
class Receiver:
    """A named set of apprise URLs; ``fallback`` names the receiver used when none of these delivers."""

    name: str
    urls: tuple[str, ...]  # apprise URLs (ntfy://, ntfys://, json://, pover://, mailto://, ...)
    fallback: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One try at sending one message to one URL of one receiver (the engine's ``alert_attempts`` row).

    ``final`` is True on exactly one attempt per (notification, receiver): the one that settles the
    receiver's last URL. ``receiver_outcome`` (set on that attempt only) is ``sent`` when at least one
    of the receiver's URLs delivered and ``gave_up`` when none did; with one URL it equals ``outcome``.
    """

    notification_id: int
    alert_id: int
    receiver: str
    url: str  # the apprise URL with secrets redacted
    attempt: int  # 1, 2, ...
    started_at: float  # unix seconds
    finished_at: float
    outcome: str  # "sent" | "failed" | "timeout" | "rate_limited" | "gave_up"
    error: str  # "" when sent; never contains a secret
    final: bool
    receiver_outcome: str = ""


# --- what requests saw: the status and Retry-After apprise does not pass on -------------------------------------

@dataclass(frozen=True)
class _Response:
    status: int | None  # None: no response (the exception's class is in ``error``)
    retry_after: str | None
    error: str = ""


_seen = threading.local()
_capture_lock = threading.Lock()
_capture_installed = False


def _capture_responses() -> None:
    """Wrap ``requests.Session.send`` once so that a delivery thread can see its own responses.

    apprise's plugins call ``requests`` and keep only a yes/no; a 429's ``Retry-After`` header is lost.
    The wrapper appends each response's status and ``Retry-After`` (or the exception's class) to a list
    that only a thread which opened one (:func:`_watch`) has; in every other thread it does nothing.
    """
    global _capture_installed
    with _capture_lock:
        if _capture_installed:
            return
        original = requests.Session.send

        def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            seen: list[_Response] | None = getattr(_seen, "responses", None)
            try:
                response = original(self, request, **kwargs)
            except Exception as exc:
                if seen is not None:
                    seen.append(_Response(None, None, type(exc).__name__))
                raise
            if seen is not None:
                seen.append(_Response(response.status_code, response.headers.get("Retry-After")))
            return response

        requests.Session.send = send  # type: ignore[method-assign]
        _capture_installed = True


def _retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


# --- building one apprise notifier per message ------------------------------------------------------------------

def _ntfy_actions(message: Message) -> str:
    """ntfy's action buttons as its JSON form (a URL may hold commas, which break the short form)."""
    actions: list[dict[str, Any]] = []
    if message.ack_url:
        actions.append({"action": "http", "label": "Ack", "url": message.ack_url, "method": "POST", "clear": True})
    if message.click_url:
        actions.append({"action": "view", "label": "Open", "url": message.click_url})
    return json.dumps(actions, separators=(",", ":")) if actions else ""


def _notify_type(message: Message) -> NotifyType:
    if message.event == "resolved":
        return NotifyType.SUCCESS
    return {"critical": NotifyType.FAILURE, "warning": NotifyType.WARNING}.get(message.severity, NotifyType.INFO)


def _redact(private: str, scheme: str) -> str:
    """apprise's privacy form of a URL, made safe where it is not: no query, and no path for plain webhooks.

    apprise masks the secrets it knows of (passwords, a service's tokens) but keeps a URL's query as
    given, and a ``json://`` webhook's custom headers (``+X-Token=...``) and GET parameters
    (``-apikey=...``) are secrets it does not know of; a plain webhook's path may be its secret
    (``/hooks/T000/B000/XXXX``). What is left names the service and the host.
    """
    base = private.split("?", 1)[0]
    if scheme in GENERIC_SCHEMES:
        head, _, path = base.partition("://")[2].partition("/")
        base = f"{scheme}://{head}/…" if path.strip("/") else f"{scheme}://{head}"
    return base


@dataclass(frozen=True)
class _Target:
    """One configured URL: its parsed apprise tokens (the secrets stay in here) and its redacted form."""

    receiver: str
    tokens: Mapping[str, Any]
    redacted: str

    @classmethod
    def parse(cls, receiver: str, url: str) -> _Target:
        tokens = apprise.plugins.url_to_dict(url, secure_logging=True)
        notifier = apprise.Apprise.instantiate(dict(tokens), suppress_exceptions=True) if tokens else None
        if notifier is None:
            scheme = url.split("://", 1)[0] if "://" in url else url[:12]
            raise ValueError(f"receiver {receiver!r}: URL with scheme {scheme!r} is not a valid apprise URL "
                             f"(expected e.g. ntfy://host/topic or json://host/path)")
        return cls(receiver, tokens, _redact(notifier.url(privacy=True), str(tokens.get("schema", ""))))

    def notifier(self, message: Message, timeout_s: float) -> Any:
        """A fresh apprise notifier for this message: its options set, apprise's throttle and retries off."""
        tokens = dict(self.tokens)
        tokens.update(cto=timeout_s, rto=timeout_s, retry=0)
        scheme = str(tokens.get("schema", ""))
        if scheme in NTFY_SCHEMES:
            tokens["priority"] = str(NTFY_PRIORITY[message.severity])
            tokens["click"] = message.click_url
            tokens["actions"] = _ntfy_actions(message) or None
        elif scheme in JSON_SCHEMES:
            payload = dict(tokens.get("payload") or {})
            payload.update(notification_id=message.notification_id, alert_id=message.alert_id, event=message.event,
                           severity=message.severity, click_url=message.click_url, ack_url=message.ack_url)
            tokens["payload"] = payload
        notifier = apprise.Apprise.instantiate(tokens, suppress_exceptions=True)
        if notifier is None:  # parsed once at start, so only a bad per-message option gets here
            raise ValueError(f"apprise refused the options of notification {message.notification_id} for "
                             f"{self.redacted}")
        notifier.request_rate_per_sec = 0
        return notifier


# --- the workers ------------------------------------------------------------------------------------------------

@dataclass
class _Settlement:
    """What is left of one (notification, receiver): URLs not yet settled, and whether any delivered."""

    remaining: int
    sent: bool = False


@dataclass(order=True)
class _Job:
    due: float  # time.monotonic()
    seq: int
    message: Message = field(compare=False)
    attempt: int = field(compare=False)  # the number of the next attempt
    settlement: _Settlement = field(compare=False)
    tried: tuple[str, ...] = field(compare=False)  # receivers this message went to (fallback chain)


class _UrlWorker:
    """The thread that sends everything for one receiver URL, earliest due first."""

    def __init__(self, deliverer: Deliverer, target: _Target) -> None:
        self.deliverer = deliverer
        self.target = target
        self.jobs: list[_Job] = []
        self.cond = threading.Condition()
        self.not_before = 0.0  # monotonic: the URL said "Retry-After"
        self.closing = False
        self.thread = threading.Thread(target=self._run, name=f"alert-delivery-{target.receiver}", daemon=True)
        self.thread.start()

    def put(self, job: _Job) -> None:
        with self.cond:
            heapq.heappush(self.jobs, job)
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()

    def _next(self) -> _Job | None:
        with self.cond:
            while not self.closing:
                now = time.monotonic()
                if self.jobs:
                    start = max(self.jobs[0].due, self.not_before)
                    if start <= now:
                        return heapq.heappop(self.jobs)
                    self.cond.wait(start - now)
                else:
                    self.cond.wait()
            return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._attempt(job)
            except Exception:  # a bug here must not silently stop a receiver's deliveries
                log.exception("alert delivery to %s failed unexpectedly", self.target.redacted)
                now = time.time()
                self.deliverer._finish(self.target, job, now, now, "gave_up", "internal error (see the log)")

    def _attempt(self, job: _Job) -> None:
        d = self.deliverer
        started = time.time()
        outcome, error, retry_after = self._send(job.message)
        finished = time.time()
        if outcome == "sent":
            d._finish(self.target, job, started, finished, "sent", "")
            return
        if retry_after is not None:
            with self.cond:
                self.not_before = max(self.not_before, time.monotonic() + retry_after)
        if job.attempt >= d.max_attempts or outcome == "refused":
            d._finish(self.target, job, started, finished, "gave_up", error)
            return
        d._record(Attempt(job.message.notification_id, job.message.alert_id, self.target.receiver,
                          self.target.redacted, job.attempt, started, finished, outcome, error, False))
        if d.closing:  # not final: the notification stays pending and the next start sends it
            d._drop()
            return
        delay = random.uniform(0.0, min(d.backoff_max_s, d.backoff_base_s * 2 ** (job.attempt - 1)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        self.put(_Job(time.monotonic() + delay, next(d._seq), job.message, job.attempt + 1, job.settlement,
                      job.tried))

    def _send(self, message: Message) -> tuple[str, str, float | None]:
        """One attempt, bounded by our timeout: (outcome, error without secrets, Retry-After seconds).

        The outcome is an :class:`Attempt` outcome, or ``refused`` for a permanent answer (gives up at once).
        """
        timeout_s = self.deliverer.timeout_s
        try:
            notifier = self.target.notifier(message, timeout_s)
        except ValueError as exc:
            return "failed", str(exc), None
        result: list[tuple[bool, list[_Response]]] = []

        def call() -> None:
            responses: list[_Response] = []
            _seen.responses = responses
            try:
                ok = bool(notifier.notify(body=message.body, title=message.title, notify_type=_notify_type(message)))
            except Exception as exc:  # a plugin bug: report its class, never its text (it may quote the URL)
                responses.append(_Response(None, None, type(exc).__name__))
                ok = False
            finally:
                _seen.responses = None
            result.append((ok, responses))

        sender = threading.Thread(target=call, name=f"alert-send-{self.target.receiver}", daemon=True)
        sender.start()
        sender.join(timeout_s)
        if not result:
            return "timeout", f"no answer within {timeout_s:g} s", None
        ok, responses = result[0]
        if ok:
            return "sent", "", None
        # a URL with several ntfy topics makes a request each: the failure is the last one not answered 2xx
        failures = [r for r in responses if r.status is None or not 200 <= r.status < 300]
        last = failures[-1] if failures else None
        if last is None:  # not HTTP (email, ...), or apprise refused before or after its requests
            what = "after HTTP 2xx" if responses else "without an HTTP request"
            return "failed", f"apprise reported a failure {what} (see the apprise log)", None
        if last.status is None:
            return "failed", f"no HTTP response ({last.error})", None
        if last.status == 429:
            wait = _retry_after_s(last.retry_after, time.time())
            told = f", Retry-After {wait:g} s" if wait is not None else ", no Retry-After"
            return "rate_limited", f"HTTP 429{told}", wait
        if last.status in PERMANENT:
            return "refused", f"HTTP {last.status} (not retried: the service refuses this request as it is)", None
        return "failed", f"HTTP {last.status}", None


class Deliverer:
    """Sends :class:`Message` s to named :class:`Receiver` s in the background; see the module docstring.

    ``record`` is called from the delivery threads for every attempt (the engine persists it); an
    exception it raises is logged and does not stop delivery.
    """

    def __init__(self, receivers: Mapping[str, Receiver], record: Callable[[Attempt], None], *,
                 timeout_s: float = 5.0, max_attempts: int = 5, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0) -> None:
        if timeout_s <= 0 or max_attempts < 1 or backoff_base_s < 0 or backoff_max_s < backoff_base_s:
            raise ValueError(f"Deliverer: timeout_s {timeout_s}, max_attempts {max_attempts}, backoff_base_s "
                             f"{backoff_base_s}, backoff_max_s {backoff_max_s}: expected a positive timeout, at "
                             f"least 1 attempt and 0 <= base <= max")
        for name, receiver in receivers.items():
            if not receiver.urls:
                raise ValueError(f"receiver {name!r}: urls: expected at least one apprise URL")
            if receiver.fallback is not None and receiver.fallback not in receivers:
                raise ValueError(f"receiver {name!r}: fallback: value {receiver.fallback!r}: expected the name "
                                 f"of another receiver ({', '.join(sorted(receivers))})")
        _capture_responses()
        self.receivers = dict(receivers)
        self.record = record
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.closing = False
        self._seq = itertools.count()
        self._idle = threading.Condition()
        self._pending = 0
        self._workers: dict[str, list[_UrlWorker]] = {
            name: [_UrlWorker(self, _Target.parse(name, url)) for url in receiver.urls]
            for name, receiver in self.receivers.items()
        }

    def submit(self, receiver: str, message: Message) -> None:
        """Queue ``message`` for every URL of ``receiver``; returns at once. Unknown receiver: ValueError."""
        self._submit(receiver, message, ())

    def _submit(self, receiver: str, message: Message, tried: tuple[str, ...]) -> None:
        workers = self._workers.get(receiver)
        if workers is None:
            raise ValueError(f"receiver {receiver!r}: not configured (expected one of "
                             f"{', '.join(sorted(self._workers))})")
        settlement = _Settlement(remaining=len(workers))
        with self._idle:
            self._pending += len(workers)
        now = time.monotonic()
        for worker in workers:
            worker.put(_Job(now, next(self._seq), message, 1, settlement, (*tried, receiver)))

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every submitted message has been sent or given up on (fallbacks included)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self) -> None:
        """Stop the workers, waiting out sends in flight (at most ``timeout_s``).

        Messages queued or due for a retry are dropped without a final attempt, so their notification
        rows stay pending and the engine resubmits them on its next start.
        """
        self.closing = True
        for workers in self._workers.values():
            for worker in workers:
                worker.stop()
        for workers in self._workers.values():
            for worker in workers:
                worker.thread.join(self.timeout_s + 1.0)

    def _record(self, attempt: Attempt) -> None:
        log.info("alert delivery attempt: notification %d alert %d receiver %s url %s attempt %d: %s%s",
                 attempt.notification_id, attempt.alert_id, attempt.receiver, attempt.url, attempt.attempt,
                 attempt.outcome, f" ({attempt.error})" if attempt.error else "")
        try:
            self.record(attempt)
        except Exception:
            log.exception("recording alert delivery attempt %d of notification %d failed", attempt.attempt,
                          attempt.notification_id)

    def _drop(self) -> None:
        """Forget a job that is stopped unsettled (closing): nothing final was recorded for it."""
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _finish(self, target: _Target, job: _Job, started: float, finished: float, outcome: str,
                error: str) -> None:
        """Record the attempt that settles this URL (final if it settles the receiver), then fall back if due."""
        with self._idle:
            job.settlement.remaining -= 1
            job.settlement.sent = job.settlement.sent or outcome == "sent"
            final = job.settlement.remaining == 0
            reached = job.settlement.sent
        self._record(Attempt(job.message.notification_id, job.message.alert_id, target.receiver, target.redacted,
                             job.attempt, started, finished, outcome, error, final,
                             ("sent" if reached else "gave_up") if final else ""))
        if final and not reached and not self.closing:
            fallback = self.receivers[target.receiver].fallback
            if fallback is not None and fallback not in job.tried:
                self._submit(fallback, job.message, job.tried)
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()
