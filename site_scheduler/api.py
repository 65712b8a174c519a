"""The site's HTTP API on loopback: submit runs, read state, apply operator controls.

It is a thin face over :class:`SiteClient`, the same path the CLI takes: submissions and
controls become requests the scheduler applies (it stays the database's only writer), reads
go to the database. It listens on 127.0.0.1 only and answers only requests addressed to
127.0.0.1 or localhost. Loopback is not a boundary between the users of one host, so every
request must carry the site's bearer token (``DATA_DIR/api.token``, 0600: readable by the site's
own user only), compared in constant time. Remote operators reach a site through its ops agent.

A caller with the token is still not trusted with the site user's files: a project is taken by
path only from under the roots ``site serve --project-root`` names, output goes under
``DATA_DIR/out``, request bodies are capped before they are read whole, and a run renders for the
site's tenant whatever its project file claims.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.errors import InputError
from site_scheduler.client import SiteClient
from site_scheduler.config import TOKEN_FILE
from site_scheduler.controls import ARGUMENTS
from site_scheduler.errors import ControlRefused, SiteError, SubmissionRefused

#: The largest request body the API reads; a submission or control is a few hundred bytes.
MAX_BODY_BYTES = 1 << 20
#: The largest outbox sequence number a query may name: the database's 64-bit integer.
MAX_SEQ = 2**63 - 1

#: The HTTP status of each error the client raises; the nearest class in the error's MRO wins.
#: Routes do not catch: the exception handlers made from this are the API's one error mapping.
ERROR_STATUS: dict[type[Exception], int] = {
    SubmissionRefused: 422,  # a SiteError too, but bad input: nothing was sent
    InputError: 422,  # bad input: nothing was sent to the scheduler
    ControlRefused: 409,  # the site refused the control: nothing changed
    SiteError: 503,  # the scheduler did not answer in time, or its Redis or database is unreachable
}


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(description="Absolute path of the project file on the site host, under a project root.")
    out: str | None = Field(None, description="Folder to publish into, under DATA/out (a relative path is taken "
                                              "from there; default DATA/out/RUN).")
    profile: str = "preview_local"


class _ControlBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str

    @model_validator(mode="after")
    def _arguments_fit(self) -> _ControlBase:
        required, optional = ARGUMENTS[self.action]
        given = set(self.model_dump(exclude_none=True)) - {"action"}
        missing = [name for name in required if name not in given]
        if missing:
            raise ValueError(f"{self.action} needs {', '.join(missing)}")
        extra = sorted(given - set(required) - set(optional))
        if extra:
            raise ValueError(f"{self.action} does not take {', '.join(extra)}; it takes "
                             f"{', '.join((*required, *optional))}")
        return self

    def arguments(self) -> dict[str, Any]:
        """The control's arguments as the site takes them."""
        return self.model_dump(exclude_none=True, exclude={"action"})


#: Arguments that are not ids (strings), with their type and what they mean.
_TYPED_ARGUMENTS: dict[str, tuple[type, str]] = {
    "deadline": (float, "drain-worker and restart-worker: seconds before in-flight jobs are requeued."),
}


def _argument_field(name: str) -> Any:
    kind, text = _TYPED_ARGUMENTS.get(name, (str, f"The {name} the control acts on."))
    return (kind | None, Field(None, description=text))


#: The body of ``POST /controls``, derived from the site's control registry: ``action`` is one of
#: its controls (every operator action of ``protos.actions``, and ``mark-host``), with the
#: arguments of every control as optional fields, checked per action by ``_arguments_fit``.
Control: Any = create_model(
    "Control",
    __base__=_ControlBase,
    action=(cast(Any, Literal[tuple(ARGUMENTS)]), ...),
    **{name: _argument_field(name)
       for name in sorted({n for required, optional in ARGUMENTS.values() for n in (*required, *optional)})},
)


class Guard:
    """ASGI middleware in front of every route: the bearer token first, then the body cap.

    Both run before FastAPI reads anything, so neither an unauthenticated caller nor a 64 MB body
    costs more than a header check and at most ``max_body`` bytes buffered.
    """

    def __init__(self, app: ASGIApp, token: str, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.token = token.encode()
        self.max_body = max_body

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # compare_digest takes as long for a wrong token as for a right one of the same length.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not self._authorized(headers):
            await JSONResponse({"detail": f"missing or wrong bearer token: send 'Authorization: Bearer TOKEN' "
                                          f"with the token in the site's {TOKEN_FILE}"},
                               status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send, f"Content-Length {length[:32]!r}")
            return
        # Chunked bodies carry no length: count what arrives, and stop at the cap.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, receive, send, f"more than {self.max_body} bytes sent")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        await JSONResponse({"detail": f"request body: {what}; expected at most {self.max_body} bytes"},
                           status_code=413, headers={"Connection": "close"})(scope, receive, send)


class Paths:
    """Where a caller of the API may point the site: project files under the roots, output under ``DATA/out``.

    The site user can read more than any one caller should publish (another tenant's projects, its
    own keys), so a path in a request is resolved (symlinks included) and refused unless it lands
    inside. The project's own files are then confined to its folder by the loader.
    """

    def __init__(self, data_dir: Path, project_roots: Sequence[Path]) -> None:
        self.data_dir = data_dir.resolve()
        self.out = self.data_dir / "out"
        self.roots = tuple(root.resolve() for root in project_roots)

    def project(self, value: str) -> Path:
        if not self.roots:
            raise HTTPException(403, "project: this site takes no project by path over its API; start it with "
                                     "`cinefleet site serve --project-root DIR` to allow projects under DIR")
        given = Path(value)
        if not given.is_absolute():
            raise HTTPException(422, f"project: value {value!r}: expected an absolute path")
        resolved = _resolve("project", value, given)
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise HTTPException(403, f"project: value {value!r} resolves to {resolved}, outside the site's "
                                     f"project roots ({', '.join(map(str, self.roots))})")
        if resolved.is_relative_to(self.data_dir):
            # A root may hold the data folder; its secrets must not be read back through error messages.
            raise HTTPException(403, f"project: value {value!r} resolves to {resolved}, inside the site's data "
                                     "folder; expected a project file under a project root")
        return resolved

    def output(self, value: str | None) -> Path | None:
        if value is None:
            return None
        resolved = _resolve("out", value, self.out / value)  # an absolute value replaces self.out
        if not resolved.is_relative_to(self.out) or resolved == self.out:
            raise HTTPException(403, f"out: value {value!r} resolves to {resolved}; expected a folder under "
                                     f"{self.out}")
        return resolved


def _resolve(field: str, value: str, path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte; a symlink loop (RuntimeError before 3.13)
        raise HTTPException(422, f"{field}: value {value!r} cannot be resolved ({exc}); expected a path") from None


def create_app(client: SiteClient, token: str, project_roots: Sequence[Path] = ()) -> FastAPI:
    """The API of the site ``client`` reaches, for callers holding ``token``."""
    if not token:
        raise ValueError("the site API needs a non-empty token")
    paths = Paths(Path(client.endpoints.data_dir), project_roots)
    app = FastAPI(title=f"cinefleet site {client.endpoints.site_id}", version="1")
    # Loopback alone does not stop a web page in a browser on this host from reaching the API
    # through a DNS name rebound to 127.0.0.1; such a request names another host.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    app.add_middleware(Guard, token=token)

    def _answer(request: Request, exc: Exception) -> JSONResponse:
        status = next(ERROR_STATUS[kind] for kind in type(exc).__mro__ if kind in ERROR_STATUS)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    for kind in ERROR_STATUS:
        app.add_exception_handler(kind, _answer)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"site_id": client.endpoints.site_id, "status": "ok"}

    @app.post("/runs", status_code=202)
    def submit(body: Submission) -> dict[str, str]:
        """Accepted: the scheduler creates the run from the request a moment later."""
        return {"run_id": client.submit(paths.project(body.project), paths.output(body.out), body.profile)}

    @app.get("/runs")
    def runs() -> list[dict[str, Any]]:
        return client.runs()

    @app.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        found = client.run(run_id)
        if found is None:
            raise HTTPException(404, f"run {run_id!r} does not exist")
        return found

    @app.get("/workers")
    def workers() -> list[dict[str, Any]]:
        return client.workers()

    @app.get("/queues")
    def queues() -> list[dict[str, Any]]:
        return client.queues()

    @app.get("/outbox")
    def outbox(since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0) -> list[dict[str, Any]]:
        return client.outbox(since)

    @app.post("/controls")
    def control(body: Control) -> dict[str, str]:
        checked: _ControlBase = body
        return {"message": client.control(checked.action, **checked.arguments())}

    return app


class ApiServer:
    """uvicorn in a thread of ``cinefleet site serve``, on a socket bound here (port 0 picks one)."""

    def __init__(self, client: SiteClient, port: int, token: str, project_roots: Sequence[Path] = ()) -> None:
        self.socket = socket.create_server(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        # Access logs stay off (warning level): the token is in a header, never in a URL, but
        # nothing about a caller needs logging here.
        config = uvicorn.Config(create_app(client, token, project_roots), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="site-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
