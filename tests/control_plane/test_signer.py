"""The signer as a real process: it makes its key (0600) on first start, listens on a 0600 socket, signs
only what the database shows requested, confirmed and approved (actor and approver from the rows),
refuses and audits every forged request, and signs the audit chain's checkpoints."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cinefleet.cli import app
from control_plane import audit
from control_plane.commands import Commands, SignatureRefused
from control_plane.database import open_engine, sqlite_url
from control_plane.errors import ControlError
from control_plane.people import People, Principal, Role
from control_plane.people_cli import fleet_engine
from control_plane.signer import SignerClient
from control_plane.tables import CommandRow
from ops_agent.envelope import PAYLOAD_TYPE, pae
from ops_agent.keys import SigningKey, read_public_key
from pipeline.testing import wait_for
from protos import ops_agent_pb2 as pb
from protos.actions import Target

TENANT = "t-a"


@dataclass
class NoAgents:
    """A directory for commands that are only signed here, never sent: runs belong to TENANT."""

    def agent_for(self, site_id: str, action: str, target: Target) -> tuple[str, str]:
        raise AssertionError("this test never dispatches")

    def tenant_of(self, site_id: str, target: Target) -> str | None:
        return TENANT if isinstance(target, pb.RunRef | pb.StageRef) else None


@dataclass
class SignerProcess:
    data_dir: Path
    process: subprocess.Popen[bytes]
    client: SignerClient
    engine: Engine


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[SignerProcess]:
    data_dir = tmp_path / "centre"
    data_dir.mkdir()
    engine = fleet_engine(data_dir, None)
    log = (tmp_path / "signer.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "cinefleet", "control", "signer", "--data-dir", str(data_dir),
                                "--approval", "cancel-run", "--checkpoint-every", "4"],
                               stdout=log, stderr=log, start_new_session=True)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"signer exited {process.returncode}: {(tmp_path / 'signer.log').read_text()}")
        return (data_dir / "signer.json").exists()

    try:
        wait_for(ready, "the signer's signer.json", 30)
        yield SignerProcess(data_dir, process, SignerClient(data_dir / "signer.sock"), engine)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        log.close()
        engine.dispose()


def _people(engine: Engine) -> tuple[Principal, Principal]:
    people = People(engine)
    people.add_user("ana", "operator", [TENANT])
    people.add_user("bo", "operator")
    return Principal("ana", Role.OPERATOR, frozenset({TENANT})), Principal("bo", Role.OPERATOR, None)


def _aim(engine: Engine, command_id: str, host: str = "h1") -> None:
    """What execute does before asking for a signature: record the agent chosen."""
    with engine.begin() as connection:
        connection.execute(update(CommandRow.__table__).where(CommandRow.command_id == command_id)
                           .values(host=host, address="127.0.0.1:1"))


def test_the_signer_signs_only_what_the_database_shows_and_refuses_the_rest(signer: SignerProcess) -> None:
    engine, client = signer.engine, signer.client
    keys = signer.data_dir / "keys"
    assert stat.S_IMODE((keys / "signing-key.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((signer.data_dir / "signer.sock").stat().st_mode) == 0o600
    public = read_public_key(keys / "signing-key.pub.json")
    ana, bo = _people(engine)
    commands = Commands(engine, NoAgents(), client, policy=["cancel-run"])

    # An ordinary command, recorded: signed, with the actor from the database
    queue = commands.request(bo, "pause-queue", "cpu_queue", "s1")
    _aim(engine, queue.command_id)
    envelope = client.sign(queue.command_id)
    public.public_key.verify(envelope.signature, pae(PAYLOAD_TYPE, envelope.payload))
    payload = pb.CommandPayload.FromString(envelope.payload)
    assert (payload.command_id, payload.actor, payload.actor_role, payload.approved_by, payload.audience_host,
            payload.site_id) == (queue.command_id, "bo", "operator", "", "h1", "s1")
    assert payload.queue.name == "cpu_queue"

    refused: list[str] = []

    def refuse(command_id: str, why: str) -> None:
        with pytest.raises(SignatureRefused, match=why):
            client.sign(command_id)
        refused.append(command_id)

    # Signed once only
    refuse(queue.command_id, "already signed")
    # An unknown id
    refuse("f" * 32, "no such command")
    # Awaiting the approval the policy asks for (ana asked; nobody approved)
    cancel = commands.request(ana, "cancel-run", "r1", "s1", confirm="r1")
    _aim(engine, cancel.command_id)
    refuse(cancel.command_id, "needs a second person's approval")
    # The row forged to look approved by its own requester
    with engine.begin() as connection:
        connection.execute(update(CommandRow.__table__).where(CommandRow.command_id == cancel.command_id)
                           .values(status="approved", approver="ana"))
    refuse(cancel.command_id, "approver is the requester")
    # The row forged to approved by bo, with no approval recorded in the audit chain
    with engine.begin() as connection:
        connection.execute(update(CommandRow.__table__).where(CommandRow.command_id == cancel.command_id)
                           .values(approver="bo"))
    refuse(cancel.command_id, "no audit row records 'bo'")
    # The row's needs_approval flag cleared: the signer's own policy still asks for one
    with engine.begin() as connection:
        connection.execute(update(CommandRow.__table__).where(CommandRow.command_id == cancel.command_id)
                           .values(status="requested", approver=None, needs_approval=False))
    refuse(cancel.command_id, "needs a second person's approval")
    # A row written straight into the database, with no request on record
    now = time.time()
    with engine.begin() as connection:
        connection.execute(insert(CommandRow.__table__).values(
            command_id="e" * 32, site_id="s1", tenant=None, action="drain-worker", target='["w1"]', requester="bo",
            requester_role="operator", confirmed=False, needs_approval=False, status="requested", host="h1",
            created_at=now, updated_at=now))
    refuse("e" * 32, "no audit row records this request")
    # A recorded request whose target was changed afterwards
    drain = commands.request(bo, "drain-worker", "w1", "s1")
    _aim(engine, drain.command_id)
    with engine.begin() as connection:
        connection.execute(update(CommandRow.__table__).where(CommandRow.command_id == drain.command_id)
                           .values(target='["w2"]'))
    refuse(drain.command_id, "as the command row states it")
    # A requester disabled since
    People(engine).add_user("cy", "operator")
    cy_asks = commands.request(Principal("cy", Role.OPERATOR, None), "resume-queue", "cpu_queue", "s1")
    _aim(engine, cy_asks.command_id)
    People(engine).disable("cy")
    refuse(cy_asks.command_id, "requester 'cy' is unknown or disabled")

    # The legitimate path for the policy action: bo approves ana's cancel, and the signer signs it
    second = commands.request(ana, "cancel-run", "r2", "s1", confirm="r2")
    commands.approve(bo, second.command_id)
    _aim(engine, second.command_id)
    payload = pb.CommandPayload.FromString(client.sign(second.command_id).payload)
    assert (payload.actor, payload.approved_by, payload.run.run_id) == ("ana", "bo", "r2")

    # Malformed socket input is answered, not fatal
    with pytest.raises(ControlError, match="command_id"):
        client._ask({"op": "sign", "command_id": "../x"})
    with pytest.raises(ControlError, match="op: value 'dump-key'"):
        client._ask({"op": "dump-key"})

    # Every refusal is a signer audit row; the checkpoints (every 4 rows, and on demand) are signed by the key
    with engine.connect() as connection:
        rows = audit.entries(connection, limit=1000)
    assert [e.subject for e in rows if e.actor == "signer" and e.kind == "refused"] == refused
    People(engine).add_user("dee", "viewer")  # a row the signer did not write: checkpointed on demand
    assert client.checkpoint() == rows[-1].seq + 1
    assert client.checkpoint() is None, "nothing new since"
    report = audit.verify(engine, public)
    assert report.ok and report.checkpoints >= 5 and report.last_checkpoint == report.last_seq, report
    verified = CliRunner().invoke(app, ["audit", "verify", "--db", sqlite_url(signer.data_dir / "fleet.db"),
                                        "--key", str(keys / "signing-key.pub.json")])
    assert verified.exit_code == 0, verified.output

    # A second signer on the same socket refuses to start, and leaves the first serving
    another = subprocess.run([sys.executable, "-m", "cinefleet", "control", "signer", "--data-dir",
                             str(signer.data_dir)], capture_output=True, text=True, timeout=60, check=False)
    assert another.returncode == 1 and "another signer is serving" in another.stderr, another.stderr
    assert client.checkpoint() is None

    # SIGTERM: exit 0, socket and ready file gone; the key stays for the next start
    signer.process.send_signal(signal.SIGTERM)
    assert signer.process.wait(timeout=30) == 0
    assert not (signer.data_dir / "signer.sock").exists() and not (signer.data_dir / "signer.json").exists()
    assert SigningKey.load(keys / "signing-key.json").key_id == public.key_id


def test_a_signer_that_is_not_running_fails_the_command_without_signing(tmp_path: Path) -> None:
    engine = fleet_engine(tmp_path, None)
    try:
        _, bo = _people(engine)
        commands = Commands(engine, _Directory(), SignerClient(tmp_path / "signer.sock"))
        done = commands.execute(commands.request(bo, "pause-queue", "cpu_queue", "s1").command_id)
        assert (done.status, done.outcome, done.signed_at) == ("failed", "SIGNER_UNAVAILABLE", None)
        assert "signer.sock" in (done.detail or "")
    finally:
        engine.dispose()
    with open_engine(sqlite_url(tmp_path / "fleet.db")).connect() as connection:
        assert connection.execute(text("SELECT status FROM commands")).scalar_one() == "failed"


class _Directory(NoAgents):
    def agent_for(self, site_id: str, action: str, target: Target) -> tuple[str, str]:
        return "h1", "127.0.0.1:1"


def test_bad_signer_options_exit_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["control", "signer", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "--data-dir" in missing.stderr
    bad = CliRunner().invoke(app, ["control", "signer", "--data-dir", str(tmp_path), "--approval", "format-disk"])
    assert bad.exit_code == 2 and "action: value 'format-disk'" in bad.stderr
    assert os.listdir(tmp_path) == [], "nothing written: no database, no key"
