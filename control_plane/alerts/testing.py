"""A real HTTP receiver for alert tests and benchmarks: ntfy-compatible, records every request, scriptable.

``with RecordingReceiver() as rx:`` serves on 127.0.0.1 (a free port) in a thread. It accepts what a
phone's ntfy server accepts (a POST/PUT to ``/<topic>`` with ``X-*`` headers, or a JSON publish to
``/`` naming the topic, which is what apprise's ``ntfy://`` sends) and apprise's ``json://`` posts.
Each request is recorded with its arrival time, method, path, headers and body; its **route** is the
ntfy topic for a JSON publish (``/<topic>``) and the path otherwise, and scripts are keyed by route:
answer N times 500 then 200, 429 with ``Retry-After``, or hang for S seconds. Shipped in the package, as
:mod:`control_plane.testing` is, so that tests and ``cinefleet bench alerts`` use the same receiver.
Nothing here imports pytest; waits are bounded and raise ``AssertionError``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer: wait ``delay_s`` (a hang), then answer ``status`` with ``headers``."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the receiver got it; ``at`` is ``time.time()`` when its body had been read."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    route: str
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header by name, case-insensitively (as HTTP has it)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class _State:
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    cond: threading.Condition = field(default_factory=threading.Condition)
    closing: threading.Event = field(default_factory=threading.Event)


def _route(path: str, body: bytes) -> str:
    """``/<topic>`` of a JSON publish to ``/``, else the path without its query."""
    path = path.split("?", 1)[0]
    if path == "/" and body[:1] == b"{":
        try:
            topic = json.loads(body).get("topic")
        except (ValueError, AttributeError):
            topic = None
        if isinstance(topic, str) and topic:
            return f"/{topic}"
    return path


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state = self.server.state
        route = _route(self.path, body)
        with state.cond:
            script = state.scripts.get(route)
            reply = script.popleft() if script else Reply()
            state.requests.append(Recorded(time.time(), self.command, self.path, dict(self.headers.items()), body,
                                           route, reply.status))
            state.cond.notify_all()
        if reply.delay_s and state.closing.wait(reply.delay_s):
            self.close_connection = True
            return
        answer = json.dumps({"id": str(len(state.requests)), "time": int(time.time()), "event": "message",
                             "topic": route.lstrip("/")}).encode() if reply.status == 200 else \
            json.dumps({"code": reply.status, "http": reply.status, "error": "scripted"}).encode()
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = do_GET = _handle

    def log_message(self, format: str, *args: Any) -> None:  # the test reads ``requests``, not stderr
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class RecordingReceiver:
    """The receiver; use as a context manager (or call :meth:`close`)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="recording-receiver", daemon=True)
        self._thread.start()

    def __enter__(self) -> RecordingReceiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; requests still hanging are cut off at once."""
        self._server.state.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ntfy_url(self, topic: str) -> str:
        """The apprise URL that publishes to ``topic`` here (plain HTTP)."""
        return f"ntfy://127.0.0.1:{self.port}/{topic}"

    def json_url(self, path: str) -> str:
        """The apprise ``json://`` webhook URL that posts to ``/<path>`` here."""
        return f"json://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def script(self, route: str, *replies: Reply) -> None:
        """Answer the next requests to ``route`` (``/<topic>`` or a path) with ``replies``, in order; then 200."""
        with self._server.state.cond:
            self._server.state.scripts[_norm(route)].extend(replies)

    def fail(self, route: str, times: int, status: int = 500) -> None:
        """Answer ``status`` ``times`` times, then 200."""
        self.script(route, *[Reply(status)] * times)

    def rate_limit(self, route: str, retry_after_s: float, times: int = 1) -> None:
        """Answer 429 with ``Retry-After`` ``times`` times, then 200."""
        self.script(route, *[Reply(429, (("Retry-After", f"{retry_after_s:g}"),))] * times)

    def hang(self, route: str, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests ``seconds`` before answering 200."""
        self.script(route, *[Reply(200, (), seconds)] * times)

    def requests(self, route: str | None = None) -> list[Recorded]:
        """Every request so far (to ``route`` only, when given), in arrival order."""
        with self._server.state.cond:
            return [r for r in self._server.state.requests if route is None or r.route == _norm(route)]

    def wait_for(self, n: int, timeout: float, route: str | None = None) -> list[Recorded]:
        """The first ``n`` requests (to ``route``), once they arrived; AssertionError after ``timeout`` s."""
        state = self._server.state
        with state.cond:
            def got() -> list[Recorded]:
                return [r for r in state.requests if route is None or r.route == _norm(route)]
            if not state.cond.wait_for(lambda: len(got()) >= n, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {n} requests"
                                     f"{f' to {route}' if route else ''}: got {len(got())}")
            return got()[:n]


def _norm(route: str) -> str:
    return route if route.startswith("/") else f"/{route}"
