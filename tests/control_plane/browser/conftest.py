"""One real fleet for the browser tests: a centre (``control serve`` + ``control signer``), two sites each
shipping its outbox to it, an agent per site (reporting its host, supervising one worker on every queue,
serving mTLS), people of every role, and a headless system Chromium. Module-scoped: it takes seconds to
start and every browser test only needs it running; tests that change it (a drain) put it back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import expect

from control_plane.dashboard_testing import STEP_TIMEOUT_MS, Browser
from control_plane.people import People
from control_plane.testing import Centre
from ops_agent import keys, pki
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.keys import QUEUES
from site_scheduler.testing import Site

# An expectation waits as long as any browser step may (live updates arrive within a tick or two).
expect.set_options(timeout=STEP_TIMEOUT_MS)

#: Site id -> (host, worker).
SITES = {"east": ("east-h1", "east-w1"), "west": ("west-h1", "west-w1")}
ROLES = ("viewer", "operator", "admin")
#: A busy test machine's load, memory and disk never make a test host degraded.
LOOSE = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]


@dataclass
class Rig:
    centre: Centre
    sites: dict[str, Site]
    agents: dict[str, AgentProcess]
    tokens: dict[str, str]
    browser: Browser
    root: Path
    #: What earlier tests left for later ones (the lineage pair's run ids).
    notes: dict[str, str] = field(default_factory=dict)

    def worker_status(self, site_id: str) -> str | None:
        """The site's own word on its worker (not the centre's copy)."""
        return self.worker_status_at(self.sites[site_id])

    @staticmethod
    def worker_status_at(site: Site) -> str | None:
        _host, worker = SITES[site.site_id]
        return next((w["status"] for w in site.client.workers() if w["name"] == worker), None)


def _serving(site: Site) -> bool:
    return Rig.worker_status_at(site) in ("idle", "active")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("browser")
    keys.init(root / "keys")
    pki.init(root / "pki", [host for host, _worker in SITES.values()])
    with ExitStack() as stack:
        centre = stack.enter_context(Centre(data_dir=root / "centre", logs=root / "logs", interval_s=0.5,
                                            keys=root / "keys", agent_tls_dir=root / "pki"))
        sites, agents = {}, {}
        for site_id, (host, worker) in SITES.items():
            data_dir = root / site_id
            data_dir.mkdir(mode=0o700)
            centre.add_site(site_id, data_dir / "control.token")
            sites[site_id] = stack.enter_context(Site(data_dir=data_dir, logs=root / "logs" / site_id,
                                                      site_id=site_id, options=["--control", centre.address]))
            agents[site_id] = agent = AgentProcess(
                host, site_id, data_dir, root / f"agent-{site_id}", keys.KeyFolder(root / "keys").bundle,
                root / "logs" / f"agent-{site_id}.log", workers=f"{worker}={','.join(QUEUES)}",
                options=[*LOOSE, "--control", centre.address, "--report-interval", "0.5"], tls_dir=root / "pki")
            agent.start()
            stack.callback(agent.close)
        for each in sites.values():
            wait_for(partial(_serving, each), f"the worker at {each.site_id}", 60)
        centre.wait_until(lambda fleet: {w.name for w in fleet.workers() if w.status in ("idle", "active")}
                          >= {w for _h, w in SITES.values()} and
                          {h.host for h in fleet.hosts() if h.state == "healthy"} >= {h for h, _w in SITES.values()},
                          "both workers and both hosts at the centre", 60)
        people = People(centre.engine)
        tokens = {}
        for role in ROLES:
            people.add_user(f"{role}-ann", role)
            tokens[role] = people.create_token(f"{role}-ann").token
        browser = stack.enter_context(Browser(centre.url))
        yield Rig(centre, sites, agents, tokens, browser, root)
