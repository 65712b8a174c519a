"""One table of exit codes for every ``cinefleet`` command, and ``--json`` where a script reads the answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from cinefleet.cli import (
    EXIT_BLOCKED,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_REFUSED,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    exit_code,
)
from ops_agent.client import AgentClient
from ops_agent.errors import AuditChainBroken, CommandFailed, KeyStoreError, Rejected
from ops_agent.supervisor import WorkerSpecError
from pipeline.errors import GateBlocked, InputError, MediaError
from pipeline.testing import pilot_project
from protos import ops_agent_pb2 as pb
from protos.actions import BadTarget, UnknownAction
from site_scheduler.errors import (
    ControlRefused,
    RunBlocked,
    RunCancelled,
    RunFailed,
    SiteError,
    SiteNotFound,
    SiteUnreachable,
)
from tests.pipeline.conftest import require_espeak

ROOT = Path(__file__).resolve().parents[2]


def cinefleet(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)


def test_each_error_has_one_exit_code() -> None:
    codes = {
        InputError("x"): EXIT_INPUT, KeyStoreError("x"): EXIT_INPUT, WorkerSpecError("x"): EXIT_INPUT,
        UnknownAction("x"): EXIT_INPUT, BadTarget("x"): EXIT_INPUT,
        GateBlocked("canon", "rule", "facts"): EXIT_BLOCKED, RunBlocked("r", "blocked", "gate"): EXIT_BLOCKED,
        ControlRefused("x"): EXIT_REFUSED,
        Rejected(pb.REJECT_WRONG_HOST, "x"): EXIT_REJECTED,
        RunCancelled("r", "cancelled", ""): 6,
        SiteUnreachable("x"): EXIT_UNREACHABLE, SiteNotFound("x"): EXIT_UNREACHABLE,
        RunFailed("r", "failed", ""): EXIT_FAILED, MediaError("x"): EXIT_FAILED, SiteError("x"): EXIT_FAILED,
        CommandFailed("x"): EXIT_FAILED, AuditChainBroken("x"): EXIT_FAILED,
    }
    assert {type(exc).__name__: exit_code(exc) for exc in codes} == {type(e).__name__: c for e, c in codes.items()}
    assert EXIT_CANCELLED == 6 and len({EXIT_FAILED, EXIT_INPUT, EXIT_BLOCKED, EXIT_REFUSED, EXIT_REJECTED,
                                        EXIT_CANCELLED, EXIT_UNREACHABLE}) == 7
    assert exit_code(ValueError("a bug")) is None, "an error no row knows keeps its traceback"


def test_a_grpc_error_is_unreachable_unless_the_agent_refused_the_caller() -> None:
    with AgentClient("127.0.0.1:9", timeout=5) as client, pytest.raises(grpc.RpcError) as down:
        client.get_health()
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE and exit_code(down.value) == EXIT_UNREACHABLE


def test_every_component_maps_through_the_one_table(tmp_path: Path) -> None:
    # A site that is not there: unreachable, for the site commands and submit alike
    args: tuple[str | Path, ...]
    for args in (("site", "workers"), ("site", "pause-queue", "cpu_queue"), ("submit", ROOT / "examples" / "pilot" /
                                                                              "project.json")):
        result = cinefleet(*args, "--site", "nowhere", "--data-dir", tmp_path / "nowhere")
        assert result.returncode == EXIT_UNREACHABLE, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "site.json: no such file" in result.stderr
    # Invalid input from three components: 2, nothing written
    for args in (("validate", tmp_path / "Script.json"), ("keys", "revoke", tmp_path / "bundle.json", "cp-1"),
                 ("worker", "--site", "a", "--queues", "gpu_queue")):
        result = cinefleet(*args)
        assert result.returncode == EXIT_INPUT and result.stderr.startswith("error: "), (args, result.stderr)
    assert list(tmp_path.iterdir()) == []
    # Click's own usage errors are invalid input too
    assert cinefleet("ops").returncode == EXIT_INPUT


def test_validate_json(tmp_path: Path) -> None:
    project = ROOT / "examples" / "pilot" / "project.json"
    result = cinefleet("validate", project, "--kind", "Project", "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["valid"] is True and verdict["kind"] == "Project" and verdict["file"] == str(project)
    assert verdict["schema_version"].count(".") == 2


def test_keys_json_names_key_ids_and_files_never_a_key(tmp_path: Path) -> None:
    made = cinefleet("keys", "init", tmp_path / "keys", "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert answer["signing_key"] == str(tmp_path / "keys" / "signing-key.json")
    assert answer["bundle"]["keys"] == [{"key_id": answer["key_id"], "state": "active"}]
    private = json.loads((tmp_path / "keys" / "signing-key.json").read_text())["private_key"]
    assert private not in made.stdout
    rotated = json.loads(cinefleet("keys", "rotate", tmp_path / "keys", "--json").stdout)
    assert rotated["previous_key_id"] == answer["key_id"] and rotated["bundle"]["version"] == 2
    revoked = json.loads(cinefleet("keys", "revoke", answer["bundle"]["file"], answer["key_id"], "--json").stdout)
    assert revoked["revoked"] == answer["key_id"] and revoked["bundle"]["version"] == 3
    assert {k["key_id"]: k["state"] for k in revoked["bundle"]["keys"]} == {answer["key_id"]: "revoked",
                                                                             rotated["key_id"]: "active"}


def test_render_json_prints_the_run_summary(tmp_path: Path) -> None:
    require_espeak()
    project, out = pilot_project(tmp_path / "project.json"), tmp_path / "out"
    result = cinefleet("render", project, "--out", out, "--store", tmp_path / "store", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((out / "run_summary.json").read_text())
