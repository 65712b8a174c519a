"""Shared fixtures of the control plane's tests.

A throwaway PostgreSQL cluster with a fresh database per test, and one real site with one agent
(one supervised worker on every queue) for the command-path tests. The site and agent are
session-scoped: starting them costs seconds, and the command tests (core and HTTP) only need them
running. The agent trusts ``command_keys``' signing key, which the signer process of the API tests
is given as its key folder. Fixtures carry a ``command_`` prefix so other suites' fixtures of this
folder keep their names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.errors import NotFound
from ops_agent import keys
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from protos import ops_agent_pb2 as pb
from protos.actions import Target
from site_scheduler.keys import QUEUES
from site_scheduler.testing import SITE, Site
from tests.site_scheduler.postgres import postgres_cluster

COMMAND_HOST = "cp-h1"
COMMAND_WORKER = "cpw1"
#: The host's own load, memory and disk never make this agent degraded: tests do not depend on the machine.
GENEROUS = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]


@pytest.fixture(scope="session")
def command_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key folder (``keys init``): the centre's signing key, its public key and the agent's trust bundle."""
    folder = tmp_path_factory.mktemp("command-keys")
    keys.init(folder)
    return folder


@pytest.fixture(scope="session")
def command_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("command-site")
    with Site(data_dir=root / "site", logs=root / "logs") as running:
        yield running


@pytest.fixture(scope="session")
def command_agent(command_site: Site, command_keys: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("command-agent")
    process = AgentProcess(COMMAND_HOST, SITE, command_site.data_dir, root / "state",
                           keys.KeyFolder(command_keys).bundle, root / "agent.log",
                           workers=f"{COMMAND_WORKER}={','.join(QUEUES)}", options=GENEROUS)
    process.start()
    try:
        wait_for(lambda: any(w["name"] == COMMAND_WORKER and w["status"] in ("idle", "active")
                             for w in command_site.client.workers()), "the supervised worker at the site")
        yield process
    finally:
        process.close()


@dataclass
class HarnessDirectory:
    """The fleet tables' part of the command path, done from the harness: the site's one agent, and a run's
    tenant as the site records it (the real directory reads the replicated hosts and runs)."""

    site: Site
    agent: AgentProcess

    def agent_for(self, site_id: str, action: str, target: Target) -> tuple[str, str]:
        if site_id != self.site.site_id:
            raise NotFound(f"site {site_id!r}: no agent known")
        return self.agent.host, self.agent.address

    def tenant_of(self, site_id: str, target: Target) -> str | None:
        if not isinstance(target, pb.RunRef | pb.StageRef):
            return None
        run = self.site.client.run(target.run_id) if site_id == self.site.site_id else None
        if run is None:
            raise NotFound(f"run {target.run_id!r}: not at site {site_id}")
        return str(run["tenant_id"])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def postgres_db(postgres: str) -> str:
    """A new, empty database on the module's cluster; its URL."""
    name = f"fleet_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite fleet database, migrated to head."""
    opened = open_engine(sqlite_url(tmp_path / "fleet.db"))
    migrate(opened)
    try:
        yield opened
    finally:
        opened.dispose()
