"""The nonce and result store: atomic, durable across restarts, forgetting only what can no longer verify."""

from __future__ import annotations

import threading
from pathlib import Path

from ops_agent.nonces import NonceStore
from protos import ops_agent_pb2 as pb

NOW = 1_750_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_nonce_counts_once_and_is_remembered_after_a_restart(tmp_path: Path) -> None:
    clock = Clock(NOW)
    with NonceStore(tmp_path / "n.sqlite", clock=clock) as store:
        assert store.check_and_remember(b"a" * 16, NOW + 60)
        assert not store.check_and_remember(b"a" * 16, NOW + 60)
        assert store.check_and_remember(b"b" * 16, NOW + 60)
    with NonceStore(tmp_path / "n.sqlite", clock=clock) as reopened:
        assert not reopened.check_and_remember(b"a" * 16, NOW + 60)
        assert not reopened.check_and_remember(b"b" * 16, NOW + 60)


def test_a_nonce_is_forgotten_only_after_its_deadline(tmp_path: Path) -> None:
    clock = Clock(NOW)
    with NonceStore(tmp_path / "n.sqlite", clock=clock) as store:
        assert store.check_and_remember(b"a" * 16, NOW + 90)
        clock.now = NOW + 89.9
        assert not store.check_and_remember(b"a" * 16, NOW + 90)
        clock.now = NOW + 90
        assert store.check_and_remember(b"a" * 16, NOW + 200), "purged at its deadline, then new again"


def test_racing_threads_and_stores_see_exactly_one_first_use(tmp_path: Path) -> None:
    # Given two stores on one file (two agent processes) shared by 16 threads
    stores = [NonceStore(tmp_path / "n.sqlite"), NonceStore(tmp_path / "n.sqlite")]
    start = threading.Barrier(16)
    wins: list[bool] = []
    lock = threading.Lock()

    def race(store: NonceStore) -> None:
        start.wait()
        won = store.check_and_remember(b"r" * 16, 4_000_000_000)
        with lock:
            wins.append(won)

    # When all of them claim the same nonce at once
    threads = [threading.Thread(target=race, args=(stores[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    # Then exactly one wins
    assert sorted(wins) == [False] * 15 + [True]


def test_a_result_is_kept_by_command_id_and_payload_hash_and_the_first_one_wins(tmp_path: Path) -> None:
    clock = Clock(NOW)
    first = pb.CommandResult(command_id="c1", host="h", outcome=pb.OUTCOME_EXECUTED, message="drained")
    later = pb.CommandResult(command_id="c1", host="h", outcome=pb.OUTCOME_FAILED, message="again")
    with NonceStore(tmp_path / "n.sqlite", clock=clock) as store:
        assert store.result_for("c1", b"\x01" * 32) is None
        store.remember_result("c1", b"\x01" * 32, first, NOW + 100)
        store.remember_result("c1", b"\x01" * 32, later, NOW + 100)
        assert store.result_for("c1", b"\x02" * 32) is None, "same id, other payload: not this result"
    with NonceStore(tmp_path / "n.sqlite", clock=clock) as reopened:
        assert reopened.result_for("c1", b"\x01" * 32) == first
        clock.now = NOW + 100
        assert reopened.result_for("c1", b"\x01" * 32) is None, "gone once the command can no longer verify"


def test_the_store_runs_in_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    NonceStore(tmp_path / "n.sqlite").close()
    with sqlite3.connect(tmp_path / "n.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
