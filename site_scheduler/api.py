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
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import InputError
from site_scheduler.client import SiteClient
from site_scheduler.errors import ControlRefused, SiteError

#: The controls the API accepts, with the argument each needs.
CONTROLS: dict[str, tuple[str, ...]] = {
    "drain-worker": ("worker",),
    "undrain-worker": ("worker",),
    "restart-worker": ("worker",),
    "pause-queue": ("queue",),
    "resume-queue": ("queue",),
    "cancel-run": ("run",),
    "retry-stage": ("run", "stage"),
    "mark-host": ("host", "state"),
}


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(description="Path of the project file on the site host.")
    out: str | None = Field(None, description="Folder to publish into (default DATA/out/RUN).")
    profile: str = "preview_local"


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["drain-worker", "undrain-worker", "restart-worker", "pause-queue", "resume-queue",
                    "cancel-run", "retry-stage", "mark-host"]
    worker: str | None = None
    queue: str | None = None
    run: str | None = None
    stage: str | None = None
    host: str | None = None
    state: str | None = None
    deadline: float | None = Field(None, description="drain-worker and restart-worker: seconds before "
                                                     "in-flight jobs are requeued.")


def create_app(client: SiteClient) -> FastAPI:
    app = FastAPI(title=f"cinefleet site {client.endpoints.site_id}", version="1")
    # Loopback alone does not stop a web page in a browser on this host from reaching the API
    # through a DNS name rebound to 127.0.0.1; such a request names another host.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"site_id": client.endpoints.site_id, "status": "ok"}

    @app.post("/runs", status_code=202)
    def submit(body: Submission) -> dict[str, str]:
        """Accepted: the scheduler creates the run from the request a moment later."""
        try:
            run_id = client.submit(Path(body.project), Path(body.out) if body.out else None, body.profile)
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"run_id": run_id}

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
        given = body.model_dump(exclude_none=True)
        missing = [name for name in CONTROLS[body.action] if name not in given]
        if missing:
            raise HTTPException(422, f"{body.action} needs {', '.join(missing)}")
        args = {name: given[name] for name in (*CONTROLS[body.action], "deadline") if name in given}
        try:
            return {"message": client.control(body.action, **args)}
        except ControlRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except SiteError as exc:
            raise HTTPException(503, str(exc)) from None

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
