"""The table of operator actions is the only list: every row reaches every surface, and nothing else does.

Each surface is driven for real against a running site (and, for ``cinefleet ops``, a running
agent) with targets that do not exist: the site's control refusing "does not exist" proves the
row got all the way to the site's control for that action, where an action the surface did not
know would have been refused earlier as unknown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from cinefleet.cli import app
from ops_agent import actions, keys
from ops_agent.envelope import TARGET_OF_ACTION, Verifier, new_payload, sign
from ops_agent.errors import Rejected
from ops_agent.keys import TrustBundle, TrustedKey
from ops_agent.nonces import NonceStore
from ops_agent.testing import AgentProcess
from protos import ops_agent_pb2 as pb
from protos.actions import ACTIONS, BY_CLI, QUEUES, OperatorAction, UnknownAction, lookup
from site_scheduler.config import read_endpoints
from site_scheduler.controls import ARGUMENTS, CONTROLS, MARK_HOST
from site_scheduler.errors import ControlRefused
from site_scheduler.testing import SITE, Site

HOST = "table-host"
#: Ids of targets that exist nowhere, per target kind.
GHOSTS = {"worker": ["ghost-worker"], "queue": ["ghost_queue"], "run": ["ghost-run"], "stage": ["ghost-run", "script"]}
#: The site commands that are not controls.
SITE_READS = {"serve", "outbox", "workers", "queues"}


def _ids(row: OperatorAction) -> list[str]:
    return GHOSTS[row.target.field]


@pytest.fixture(scope="module")
def agent(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, keys.SigningKey]]:
    root = tmp_path_factory.mktemp("table-agent")
    key, _ = keys.init(root / "keys")
    process = AgentProcess(HOST, SITE, site.data_dir, root / "state", keys.KeyFolder(root / "keys").bundle,
                           root / "agent.log",
                           options=["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"])
    process.start()
    try:
        yield process, key
    finally:
        process.close()


def test_the_table_and_the_proto_enum_agree() -> None:
    # Every Action but UNSPECIFIED is a row, once; names and controls are unique
    assert sorted(row.action for row in ACTIONS) == sorted(v for v in pb.Action.values() if v)
    assert len(BY_CLI) == len({row.control for row in ACTIONS}) == len(ACTIONS)
    assert {row.cli for row in ACTIONS if row.destructive} == {"restart-worker", "cancel-run"}
    for row in ACTIONS:
        assert lookup(row.cli) is lookup(row.enum_name) is lookup(row.action) is row
        target = row.make_target(_ids(row))
        assert row.control_args(target) == dict(zip(row.target.arguments, _ids(row), strict=True))
    with pytest.raises(UnknownAction, match="'reboot-host': expected one of drain-worker"):
        lookup("reboot-host")
    assert QUEUES == ("cpu_queue", "local_ai_queue", "media_queue", "external_ai_queue")


def test_the_envelope_allows_exactly_the_rows(tmp_path: Path) -> None:
    assert dict(TARGET_OF_ACTION) == {row.action: row.target.field for row in ACTIONS}
    key = keys.SigningKey.generate()
    nonces = NonceStore(tmp_path / "nonces.sqlite")
    verifier = Verifier(HOST, SITE, TrustBundle(1, (TrustedKey.from_bytes(key.key_id, key.public_bytes),)), nonces,
                        target_exists=lambda payload: None)
    try:
        for row in ACTIONS:
            payload = new_payload(audience_host=HOST, site_id=SITE, action=row.action,
                                  target=row.make_target(_ids(row)))
            assert verifier.verify(sign(payload, key)).action == row.action
        # Not a row: refused at the allow-list, whatever the target
        stray = new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_PAUSE_QUEUE,
                            target=pb.QueueRef(name="cpu_queue"))
        stray.action = pb.ACTION_UNSPECIFIED
        with pytest.raises(Rejected) as refused:
            verifier.verify(sign(stray, key))
        assert refused.value.reason == pb.REJECT_UNKNOWN_ACTION
    finally:
        nonces.close()


def test_the_agents_handlers_reach_the_sites_control_of_each_row(site: Site) -> None:
    for row in ACTIONS:
        payload = new_payload(audience_host=HOST, site_id=SITE, action=row.action, target=row.make_target(_ids(row)))
        with pytest.raises(ControlRefused, match="does not exist"):
            actions.execute(payload, site.client)
    # A payload whose target is not the row's kind never reaches the site (the second lock)
    wrong = new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_CANCEL_RUN,
                        target=pb.QueueRef(name="cpu_queue"))
    with pytest.raises(UnknownAction, match="not allow-listed"):
        actions.execute(wrong, site.client)


def test_the_sites_controls_are_the_rows_and_mark_host(site: Site) -> None:
    assert list(CONTROLS) == [row.control for row in ACTIONS] + [MARK_HOST]
    assert {name: ARGUMENTS[name][0] for name in CONTROLS} == (
        {row.control: row.target.arguments for row in ACTIONS} | {MARK_HOST: ("host", "state")})
    with pytest.raises(ControlRefused, match="unknown control 'reboot-host'"):
        site.client.control("reboot-host", host="x")
    with pytest.raises(ControlRefused, match="pause-queue: arguments worker: expected queue"):
        site.client.control("pause-queue", worker="x")


def test_the_site_api_allows_the_rows_and_mark_host_only(site: Site) -> None:
    url = read_endpoints(SITE, site.data_dir).api_url
    assert url is not None
    with httpx.Client(base_url=url, timeout=30, headers=site.api_headers()) as api:
        schema = api.get("/openapi.json").json()["components"]["schemas"]["Control"]["properties"]["action"]
        assert schema["enum"] == [row.control for row in ACTIONS] + [MARK_HOST]
        for row in ACTIONS:
            body = {"action": row.control, **dict(zip(row.target.arguments, _ids(row), strict=True))}
            answer = api.post("/controls", json=body)
            assert answer.status_code == 409 and "does not exist" in answer.json()["detail"], (row.cli, answer.text)
        assert api.post("/controls", json={"action": MARK_HOST, "host": "ghost", "state": "healthy"}).status_code == 409
        for body in ({"action": "reboot-host", "host": "x"}, {"action": "pause-queue", "worker": "w1"},
                     {"action": "retry-stage", "run": "r1"}):
            assert api.post("/controls", json=body).status_code == 422, body


def test_cinefleet_site_has_one_command_per_row(site: Site) -> None:
    root = typer.main.get_command(app)  # `cinefleet` as it runs: the site's group is imported when asked for
    site_group = root.get_command(typer.Context(root), "site")  # type: ignore[attr-defined]
    assert site_group is not None
    names = set(site_group.commands)
    assert names == SITE_READS | {row.cli for row in ACTIONS} | {MARK_HOST}
    runner = CliRunner()
    for row in ACTIONS:
        result = runner.invoke(app, ["site", row.cli, *_ids(row), "--site", SITE, "--data-dir", str(site.data_dir)])
        assert result.exit_code == 4 and "does not exist" in result.output, (row.cli, result.output)
    as_json = runner.invoke(app, ["site", "pause-queue", "cpu_queue", "--json", "--site", SITE,
                                  "--data-dir", str(site.data_dir)])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"action": "pause-queue", "queue": "cpu_queue",
                                          "message": "queue cpu_queue paused"}
    resumed = runner.invoke(app, ["site", "resume-queue", "cpu_queue", "--site", SITE, "--data-dir",
                                  str(site.data_dir)])
    assert resumed.exit_code == 0 and resumed.stdout == "queue cpu_queue resumed\n"


def test_cinefleet_ops_signs_every_row_and_nothing_else(agent: tuple[AgentProcess, keys.SigningKey],
                                                        tmp_path: Path) -> None:
    process, key = agent
    key_file = tmp_path / "key.json"
    key.save(key_file)

    def ops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cinefleet", "ops", "--agent", process.address, "--key",
                               str(key_file), "--host", HOST, "--site", SITE, *args],
                              capture_output=True, text=True, timeout=120, check=False)

    for row in ACTIONS:
        # Through the allow-list, to the target check: this agent has no such target
        result = ops(row.cli, *_ids(row))
        assert result.returncode == 5 and "REJECT_UNKNOWN_TARGET" in result.stderr, (row.cli, result.stderr)
    entries = len(process.audit_entries())
    unknown = ops("mark-host", "ghost", "healthy")
    assert unknown.returncode == 2 and "action 'mark-host': expected one of" in unknown.stderr
    assert len(process.audit_entries()) == entries, "nothing was sent"
