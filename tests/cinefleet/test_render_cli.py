"""The ``cinefleet render`` command's contract for bad input: exit 2, a clear message, no writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_projects"
EXPECTED: dict[str, list[str]] = json.loads((BAD / "expected.json").read_text())
PILOT = HERE.parents[1] / "examples" / "pilot" / "project.json"


def cinefleet(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cinefleet", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_corpus_is_complete() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in BAD.glob("*.json") if p.name != "expected.json")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_project_exits_2_and_writes_nothing(name: str, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    result = cinefleet("render", BAD / name, "--out", out, "--store", store)
    assert result.returncode == 2, result.stderr
    assert str(BAD / name) in result.stderr, "the message names the file"
    for fragment in EXPECTED[name]:
        assert fragment in result.stderr
    assert not out.exists() and not store.exists(), "bad input writes nothing"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--profile", "hq_providerX"], "not built yet"),
        (["--profile", "cinema"], "expected one of"),
        (["--workers", "0"], "expected an integer"),
    ],
)
def test_bad_options_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    result = cinefleet("render", PILOT, "--out", out, "--store", store, *args)
    assert result.returncode == 2 and fragment in result.stderr
    assert not out.exists() and not store.exists()


@pytest.mark.parametrize("option", ["--out", "--store"])
def test_a_file_where_a_folder_belongs_exits_2(option: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folders = {"--out": tmp_path / "out", "--store": tmp_path / "store"} | {option: blocker}
    result = cinefleet("render", PILOT, "--out", folders["--out"], "--store", folders["--store"])
    assert result.returncode == 2 and f"{option}: value" in result.stderr and "expected a folder" in result.stderr
    assert blocker.read_text() == "x" and not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_missing_project_file_exits_2(tmp_path: Path) -> None:
    result = cinefleet("render", tmp_path / "nope.json", "--out", tmp_path / "out", "--store", tmp_path / "s")
    assert result.returncode == 2 and "nope.json: no such file" in result.stderr


def test_validate_reports_valid_and_invalid(tmp_path: Path) -> None:
    ok = cinefleet("validate", PILOT)
    assert ok.returncode == 0 and "valid Project 1.0.0" in ok.stdout
    bad = cinefleet("validate", BAD / "unknown_major.json", "--kind", "Project")
    assert bad.returncode == 2 and "docs/migrations.md" in bad.stderr
