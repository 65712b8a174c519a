"""The centre's audit chain: an edited, deleted or cut-off row is found (SQLite, with the file in an
attacker's hands), appends never fork under concurrency, and on PostgreSQL the table refuses changes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from cinefleet.cli import app
from control_plane import audit
from control_plane.audit import AuditLog, writing
from control_plane.database import migrate, open_engine, sqlite_url
from ops_agent.keys import SigningKey, TrustedKey
from tests.site_scheduler.postgres import postgres_cluster

EVERY = 5


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    made = SigningKey.generate()
    made.save(tmp_path / "signing-key.json")
    (tmp_path / "public-key.json").write_text(json.dumps(made.public_document()))
    return made


def _fill(engine: Engine, log: AuditLog, rows: int) -> None:
    for i in range(rows):
        with writing(engine) as connection:
            log.append(connection, "ana", "request", f"cmd-{i}", {"action": "drain-worker", "target": [f"w{i}"],
                                                                  "note": "ünïcode"})


def _attack(engine: Engine, *statements: str) -> None:
    """What someone holding the SQLite file can do: drop the triggers and rewrite rows."""
    with engine.begin() as connection:
        for table in ("audit", "audit_checkpoints"):
            for verb in ("update", "delete"):
                connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
        for statement in statements:
            connection.execute(text(statement))


def test_an_intact_chain_verifies_with_signed_checkpoints(engine: Engine, key: SigningKey) -> None:
    _fill(engine, AuditLog(key, every=EVERY), 12)
    report = audit.verify(engine)
    assert report.ok and (report.rows, report.checkpoints, report.last_checkpoint) == (12, 2, 10), report
    assert audit.verify(engine, TrustedKey.from_bytes(key.key_id, key.public_bytes)).ok
    stranger = SigningKey.generate()
    wrong = audit.verify(engine, TrustedKey.from_bytes(stranger.key_id, stranger.public_bytes))
    assert not wrong.ok and wrong.bad_seq == 5 and "signed by key" in str(wrong)
    # The app cannot change a row even by mistake: the migration's triggers refuse it (SQLite too)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("UPDATE audit SET actor = 'eve' WHERE seq = 3"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM audit WHERE seq = 12"))


@pytest.mark.parametrize(("statements", "bad_seq", "problem"), [
    (["UPDATE audit SET detail = replace(detail, 'w3', 'w9') WHERE seq = 4"], 4, "edited"),
    (["UPDATE audit SET actor = 'eve' WHERE seq = 12"], 12, "edited"),
    (["DELETE FROM audit WHERE seq = 7"], 7, "row 7 is missing"),
    # Cut the tail back to before the last checkpoint, and fix the head row to match: the checkpoint remains
    (["DELETE FROM audit WHERE seq > 8",
      "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit WHERE seq = 8)"], 9, "cut off the end"),
    # A naive cut of rows after the last checkpoint is caught by the head row
    (["DELETE FROM audit WHERE seq > 11"], 12, "cut off the end"),
    # Forging the checkpoint's seq to hide a cut: its signature no longer verifies
    (["DELETE FROM audit WHERE seq > 8", "DELETE FROM audit_checkpoints WHERE seq = 10",
      "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit WHERE seq = 8)",
      "INSERT INTO audit_checkpoints SELECT 8, (SELECT hash FROM audit WHERE seq = 8), at, key_id, public_key, "
      "signature FROM audit_checkpoints WHERE seq = 5"], 8, "does not verify"),
], ids=["edit", "edit-last", "delete", "truncate", "naive-truncate", "forged-checkpoint"])
def test_tampering_is_found_at_the_first_bad_row(engine: Engine, key: SigningKey, tmp_path: Path,
                                                  statements: list[str], bad_seq: int, problem: str) -> None:
    _fill(engine, AuditLog(key, every=EVERY), 12)
    _attack(engine, *statements)
    report = audit.verify(engine)
    assert not report.ok and report.bad_seq == bad_seq and problem in str(report), report
    # And `cinefleet audit verify --db` says so, exit 1; --json carries the same report
    db = sqlite_url(tmp_path / "fleet.db")
    ran = CliRunner().invoke(app, ["audit", "verify", "--db", db, "--key", str(tmp_path / "public-key.json")])
    assert ran.exit_code == 1 and f"broken at seq {bad_seq}" in ran.stderr, ran.output
    as_json = CliRunner().invoke(app, ["audit", "verify", "--db", db, "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["bad_seq"] == bad_seq


def test_the_verify_command_on_an_intact_chain_and_on_bad_input(engine: Engine, key: SigningKey,
                                                                 tmp_path: Path) -> None:
    _fill(engine, AuditLog(key, every=EVERY), 7)
    db = sqlite_url(tmp_path / "fleet.db")
    ran = CliRunner().invoke(app, ["audit", "verify", "--db", db, "--key", str(tmp_path / "public-key.json")])
    assert ran.exit_code == 0 and "intact: 7 rows, 1 signed checkpoints" in ran.stdout, ran.output
    assert "2 rows after the last checkpoint" in ran.stdout
    missing = CliRunner().invoke(app, ["audit", "verify", "--db", sqlite_url(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "--db" in missing.stderr and not (tmp_path / "nope.db").exists()
    both = CliRunner().invoke(app, ["audit", "verify", "x.jsonl", "--db", db])
    assert both.exit_code == 2


def test_a_checkpoint_is_never_signed_over_a_broken_chain(engine: Engine, key: SigningKey) -> None:
    log = AuditLog(key, every=1000)
    _fill(engine, log, 3)
    _attack(engine, "UPDATE audit SET subject = 'other' WHERE seq = 2")
    with pytest.raises(audit.AuditBroken, match="broken at seq 2"), writing(engine) as connection:
        log.checkpoint(connection)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar_one() == 0


def _concurrent_appends(engine: Engine, log: AuditLog, writers: int, each: int) -> None:
    def write(n: int) -> None:
        for i in range(each):
            with writing(engine) as connection:
                log.append(connection, f"writer-{n}", "dispatch", f"c{n}-{i}", {"i": i})

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))


def test_concurrent_appends_never_fork_the_chain(engine: Engine, key: SigningKey) -> None:
    _concurrent_appends(engine, AuditLog(key, every=EVERY), 4, 15)
    report = audit.verify(engine)
    assert report.ok and report.rows == 60 and report.last_checkpoint >= 55, report


def test_on_postgresql_appends_serialize_and_the_table_refuses_update_delete_truncate(key: SigningKey) -> None:
    with postgres_cluster() as url:
        engine = open_engine(url)
        try:
            migrate(engine)
            _concurrent_appends(engine, AuditLog(key, every=EVERY), 4, 10)
            report = audit.verify(engine)
            assert report.ok and report.rows == 40 and report.checkpoints == 8, report
            for statement in ("UPDATE audit SET actor = 'eve' WHERE seq = 3", "DELETE FROM audit WHERE seq = 40",
                              "TRUNCATE audit", "DELETE FROM audit_checkpoints", "TRUNCATE audit_checkpoints"):
                with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                    connection.execute(text(statement))
            assert audit.verify(engine).rows == 40
        finally:
            engine.dispose()
