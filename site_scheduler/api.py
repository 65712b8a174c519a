"""The site's HTTP API on loopback: submit runs, read state, apply operator controls.

It is a thin face over :class:`SiteClient`, the same path the CLI takes: submissions and
controls become requests the scheduler applies (it stays the database's only writer), reads
go to the database. It listens on 127.0.0.1 only, answers only requests addressed to
127.0.0.1 or localhost, and has no authentication of its own: it is for programs on the site
host, as trusted as anyone who can run `cinefleet site` there; remote operators reach a site
through its ops agent.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from pipeline.errors import InputError
from site_scheduler.client import SiteClient
from site_scheduler.controls import ARGUMENTS
from site_scheduler.errors import ControlRefused, SiteError

#: The HTTP status of each error the client raises; the nearest class in the error's MRO wins.
#: Routes do not catch: the exception handlers made from this are the API's one error mapping.
ERROR_STATUS: dict[type[Exception], int] = {
    InputError: 422,  # bad input: nothing was sent to the scheduler
    ControlRefused: 409,  # the site refused the control: nothing changed
    SiteError: 503,  # the scheduler did not answer in time, or its Redis or database is unreachable
}


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(description="Path of the project file on the site host.")
    out: str | None = Field(None, description="Folder to publish into (default DATA/out/RUN).")
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


def create_app(client: SiteClient) -> FastAPI:
    app = FastAPI(title=f"cinefleet site {client.endpoints.site_id}", version="1")
    # Loopback alone does not stop a web page in a browser on this host from reaching the API
    # through a DNS name rebound to 127.0.0.1; such a request names another host.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])

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
        return {"run_id": client.submit(Path(body.project), Path(body.out) if body.out else None, body.profile)}

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
    def outbox(since: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
        return client.outbox(since)

    @app.post("/controls")
    def control(body: Control) -> dict[str, str]:
        checked: _ControlBase = body
        return {"message": client.control(checked.action, **checked.arguments())}

    return app


class ApiServer:
    """uvicorn in a thread of ``cinefleet site serve``, on a socket bound here (port 0 picks one)."""

    def __init__(self, client: SiteClient, port: int) -> None:
        self.socket = socket.create_server(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(create_app(client), log_level="warning", lifespan="off")
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
