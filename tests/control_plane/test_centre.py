"""The whole centre on real processes: ``control serve`` (ingest + API), ``control signer``, a site shipping its
outbox, an agent reporting its host and serving mutual TLS; an operator's commands go API → signer → (mTLS)
the agent the fleet tables name → the site, and what the site did comes back through replication."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from cinefleet.cli import app
from control_plane.fleet_cli import TOKEN_ENV
from control_plane.testing import Centre
from ops_agent import keys, pki
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from site_scheduler.keys import QUEUES
from site_scheduler.testing import Site

SITE_ID, HOST, WORKER = "t1", "h1", "w1"
#: Loose health thresholds: a busy test machine is not what this test is about.
LOOSE = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]


@dataclass
class Fleet:
    centre: Centre
    site: Site
    agent: AgentProcess
    token: str

    def fleet(self, *args: str) -> Result:
        """``cinefleet fleet ARGS --control URL`` with the operator's token in the environment."""
        return CliRunner().invoke(app, ["fleet", *args, "--control", self.centre.url],
                                  env={**os.environ, TOKEN_ENV: self.token})

    def listing(self, *args: str) -> Any:
        result = self.fleet(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    keys.init(tmp_path / "keys")
    pki.init(tmp_path / "pki", [HOST])
    with Centre(data_dir=tmp_path / "centre", logs=tmp_path / "logs", interval_s=0.5, keys=tmp_path / "keys",
                agent_tls_dir=tmp_path / "pki") as centre:
        data_dir = tmp_path / "site"
        data_dir.mkdir(mode=0o700)
        centre.add_site(SITE_ID, data_dir / "control.token")
        runner = CliRunner()
        added = runner.invoke(app, ["control", "user", "add", "alice", "--role", "operator",
                                    "--data-dir", str(centre.data_dir)])
        assert added.exit_code == 0, added.output
        made = runner.invoke(app, ["control", "token", "create", "alice", "--data-dir", str(centre.data_dir)])
        assert made.exit_code == 0, made.output
        token = next(word for word in made.output.split() if word.startswith("cft_"))
        with Site(data_dir=data_dir, logs=tmp_path / "logs", site_id=SITE_ID,
                  options=["--control", centre.address]) as site:
            agent = AgentProcess(HOST, SITE_ID, data_dir, tmp_path / "agent", keys.KeyFolder(tmp_path / "keys").bundle,
                                 tmp_path / "logs" / "agent.log", workers=f"{WORKER}={','.join(QUEUES)}",
                                 options=[*LOOSE, "--control", centre.address, "--report-interval", "0.5"],
                                 tls_dir=tmp_path / "pki")
            agent.start()
            try:
                yield Fleet(centre, site, agent, token)
            finally:
                agent.close()


def _worker(fleet: Fleet) -> dict[str, Any] | None:
    return next((w for w in fleet.listing("workers")["workers"] if w["name"] == WORKER), None)


def test_commands_through_the_centre_reach_the_worker_and_the_run_and_come_back_replicated(fleet: Fleet) -> None:
    wait_for(lambda: any(h["host"] == HOST and h["state"] == "healthy" and h["agent_tls"]
                         for h in fleet.listing("hosts")["hosts"]), "the agent's host healthy at the centre", 60)
    wait_for(lambda: (_worker(fleet) or {}).get("status") in ("idle", "active"), "the worker replicated", 60)

    # A drain: the centre picks the agent of the worker's host, the signer signs, the site drains
    drained = fleet.fleet("drain-worker", WORKER, "--site", SITE_ID)
    assert drained.exit_code == 0, drained.output
    assert f"on {HOST}" in drained.output
    wait_for(lambda: (_worker(fleet) or {}).get("status") == "drained", "the drain, replicated back", 60)
    run_id = fleet.site.client.submit_probe(2)
    # Drained: the run waits; then a cancel (destructive: typed confirmation) goes to a healthy host of the site
    wait_for(lambda: any(r["run_id"] == run_id for r in fleet.listing("runs", "--site", SITE_ID)["items"]),
             "the run replicated", 60)
    refused = fleet.fleet("cancel-run", run_id, "--site", SITE_ID)
    assert refused.exit_code == 2 and "confirm" in refused.output, refused.output
    cancelled = fleet.fleet("cancel-run", run_id, "--site", SITE_ID, "--confirm", run_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert fleet.site.wait(run_id, timeout=60)["status"] == "cancelled"
    wait_for(lambda: fleet.listing("run", run_id, "--site", SITE_ID)["status"] == "cancelled",
             "the cancel, replicated back", 60)

    # Undrained, a run completes; the centre shows it with the site's stages and statuses
    assert fleet.fleet("undrain-worker", WORKER, "--site", SITE_ID).exit_code == 0
    run_id = fleet.site.client.submit_probe(2)
    assert fleet.site.wait(run_id, timeout=60)["status"] == "completed"
    at_site = {s["stage_id"]: s["status"] for s in fleet.site.run(run_id)["stages"]}

    def replicated() -> bool:
        detail = fleet.listing("run", run_id, "--site", SITE_ID)
        return detail["status"] == "completed" and {s["stage_id"]: s["status"] for s in detail["stages"]} == at_site

    wait_for(replicated, "the completed run with the site's stages at the centre", 60)
    commands = fleet.listing("commands")["commands"]
    assert [(c["action"], c["status"]) for c in reversed(commands)] == [
        ("drain-worker", "succeeded"), ("cancel-run", "succeeded"), ("undrain-worker", "succeeded")]
    assert {c["host"] for c in commands} == {HOST}

    # Prometheus: replication, hosts and commands, read from the fleet database at the scrape
    scraped = httpx.get(f"{fleet.centre.url}/metrics", headers={"Authorization": f"Bearer {fleet.token}"}).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
               if line and not line.startswith("#")}
    assert samples[f'cinefleet_replication_cursor{{site="{SITE_ID}"}}'] > 0
    assert samples[f'cinefleet_site_connected{{site="{SITE_ID}"}}'] == 1.0
    assert samples['cinefleet_hosts{state="healthy"}'] == 1.0
    assert samples['cinefleet_commands{outcome="OUTCOME_EXECUTED",status="succeeded"}'] == 3.0
    assert httpx.get(f"{fleet.centre.url}/metrics").status_code == 401

    # A worker the centre has never heard of: refused naming it, nothing signed
    unknown = fleet.fleet("drain-worker", "w-none", "--site", SITE_ID)
    assert unknown.exit_code == 2 and "w-none" in unknown.output, unknown.output
