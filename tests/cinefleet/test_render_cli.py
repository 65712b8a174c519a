"""The ``cinefleet render`` command's contract for bad input: exit 2, a clear message, no writes."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.documents import MAX_DOCUMENT_BYTES
from pipeline.stages.assets import MAX_ASSET_BYTES

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


# -- untrusted files a corpus cannot hold (FIFOs, huge files): built in a copy of the pilot -------


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` in its header, with a stub of pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b"")


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)


def _self_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


#: Each case: what to do to a copy of the pilot, the project file to render, and what the message says.
UNTRUSTED_FILES: dict[str, tuple[Callable[[Path], object], str, list[str]]] = {  # what the change returns is unused
    "project file is a FIFO": (lambda p: _fifo(p / "fifo.json"), "fifo.json", ["fifo.json: is a FIFO",
                                                                             "expected a regular file"]),
    "canon file is a FIFO": (lambda p: _fifo(p / "canon.json"), "project-external-canon.json",
                             ["field 'canon'", "canon.json is a FIFO", "expected a regular file"]),
    "library index is a FIFO": (lambda p: _fifo(p / "assets" / "library.json"), "project.json",
                                ["library.json: is a FIFO", "expected a regular file"]),
    "asset is a FIFO": (lambda p: _fifo(p / "assets" / "char_mara.png"), "project.json",
                        ["field 'assets[", "'char_mara.png' (asset 'char_mara')", "is a FIFO",
                         "expected a regular file"]),
    "asset is a folder": (lambda p: _folder(p / "assets" / "char_mara.png"), "project.json",
                          ["(asset 'char_mara')", "is a folder", "expected a regular file"]),
    "canon file too large": (lambda p: _sparse(p / "canon.json", MAX_DOCUMENT_BYTES + 1),
                             "project-external-canon.json",
                             ["field 'canon'", f"expected at most {MAX_DOCUMENT_BYTES} bytes"]),
    "asset file too large": (lambda p: _sparse(p / "assets" / "prop_lantern.png", MAX_ASSET_BYTES + 1),
                             "project.json", ["(asset 'prop_lantern')", f"expected at most {MAX_ASSET_BYTES} bytes"]),
    "asset a decompression bomb by Pillow's own limit": (
        lambda p: (p / "assets" / "bg_lighthouse.png").write_bytes(_png_header(20000, 20000)), "project.json",
        ["(asset 'bg_lighthouse')", "decompression bomb", "expected an image of at most"]),
    "asset just over the pixel cap": (
        lambda p: (p / "assets" / "bg_lighthouse.png").write_bytes(_png_header(8000, 5001)), "project.json",
        ["(asset 'bg_lighthouse')", "8000x5001 = 40008000 pixels", "expected an image of at most 40000000 pixels"]),
    "canon symlink loop": (lambda p: _self_link(p / "canon.json"), "project-external-canon.json",
                           ["field 'canon'", "cannot be resolved"]),
}


@pytest.mark.parametrize("case", sorted(UNTRUSTED_FILES))
def test_an_untrusted_file_is_refused_at_once_with_exit_2_writing_nothing(case: str, tmp_path: Path) -> None:
    change, project_name, fragments = UNTRUSTED_FILES[case]
    project = tmp_path / "project"
    shutil.copytree(PILOT.parent, project)
    change(project)
    out, store = tmp_path / "out", tmp_path / "store"
    command = [sys.executable, "-m", "cinefleet", "render", str(project / project_name), "--out", str(out),
               "--store", str(store)]
    # A FIFO opened for reading blocks until a writer comes: the timeout is the test of "never hangs".
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not out.exists() and not store.exists(), "bad input writes nothing"
