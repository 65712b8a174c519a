"""The content store never overwrites and never shows half a file; the registry inserts once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.models import Episode
from pipeline.registry import Registry, sqlite_url
from pipeline.store import ArtifactStore, atomic_copy, atomic_write
from pipeline.workspace import Workspace


def test_put_bytes_is_content_addressed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    found = store.put_bytes("t1", b"hello")
    assert found == hashlib.sha256(b"hello").hexdigest()
    assert store.path("t1", found) == tmp_path / "t1" / found[:2] / found
    assert store.read_bytes("t1", found) == b"hello"
    assert not store.has("t2", found), "tenants do not share blobs"


def test_put_file_links_owned_files_and_never_overwrites(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    source = store.scratch() / "clip.bin"
    source.write_bytes(b"x" * 1000)
    first = store.put_file("t", source, owned=True)
    inode = store.path("t", first).stat().st_ino
    assert inode == source.stat().st_ino, "an owned file is linked, not copied"
    assert store.put_file("t", source, owned=True) == first
    assert store.path("t", first).stat().st_ino == inode


def test_put_file_copies_files_it_does_not_own(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    library_image = tmp_path / "picture.png"
    library_image.write_bytes(b"original")
    found = store.put_file("t", library_image)
    library_image.write_bytes(b"rewritten in place")
    assert store.read_bytes("t", found) == b"original", "editing a library file never changes the store"


def test_atomic_write_leaves_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.json"
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_registry_records_once(tmp_path: Path) -> None:
    registry = Registry(sqlite_url(tmp_path / "r.sqlite"))
    for size in (3, 4):
        registry.record_artifact(tenant_id="t", site_id="s", digest="ab" * 32, kind="Script", size=size,
                                 parents=["cd" * 32], license={"license_type": "CC0"})
    row = registry.artifact("t", "ab" * 32)
    assert row is not None and row.size == 3 and row.parents == ["cd" * 32] and row.site_id == "s"
    registry.remember("t", "key", "shot", "ab" * 32)
    registry.remember("t", "key", "shot", "ef" * 32)
    assert registry.derived("t", "key") == "ab" * 32
    assert registry.derived("other-tenant", "key") is None


def test_workspace_derives_once_and_resumes(tmp_path: Path) -> None:
    calls = []

    def make(target: Path) -> None:
        calls.append(target)
        target.write_bytes(b"rendered")

    ws = Workspace(tmp_path, "t", "site-a")
    first, hit = ws.derive_file("shot", {"frames": 10}, make, kind="ShotClip", parents=[], suffix=".mp4")
    assert not hit and len(calls) == 1
    again, hit = ws.derive_file("shot", {"frames": 10}, make, kind="ShotClip", parents=[], suffix=".mp4")
    assert hit and again == first and len(calls) == 1
    ws.close()

    reopened = Workspace(tmp_path, "t", "site-a")
    _, hit = reopened.derive_file("shot", {"frames": 10}, make, kind="ShotClip", parents=[], suffix=".mp4")
    assert hit, "a new process finds the earlier run's work"
    reopened.path(first).unlink()
    _, hit = reopened.derive_file("shot", {"frames": 10}, make, kind="ShotClip", parents=[], suffix=".mp4")
    assert not hit and len(calls) == 2, "a remembered key whose blob is gone is made again"
    row = reopened.registry.artifact("t", first)
    assert row is not None and row.kind == "ShotClip" and row.site_id == "site-a"


def test_interrupted_make_stores_nothing(tmp_path: Path) -> None:
    def make(target: Path) -> None:
        target.write_bytes(b"half")
        raise KeyboardInterrupt

    ws = Workspace(tmp_path, "t", "s")
    with pytest.raises(KeyboardInterrupt):
        ws.derive_file("shot", {"n": 1}, make, kind="ShotClip", parents=[], suffix=".mp4")
    assert ws.registry.artifacts("t") == []
    assert list((tmp_path / ".scratch").iterdir()) == []


def test_documents_are_recorded_with_their_version(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, "t", "s")
    found = ws.put_document(Episode.create(episode_number=1), parents=[])
    row = ws.registry.artifact("t", found)
    assert row is not None and row.kind == "Episode" and row.schema_version == "1.0.0"
    assert ws.load_document(found, Episode).episode_number == 1


def test_finished_files_follow_the_umask_not_the_temp_file_mode(tmp_path: Path) -> None:
    """Temp files are 0600; a published episode or a stored blob must be readable as usual."""
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    atomic_write(tmp_path / "written.json", b"{}")
    atomic_copy(tmp_path / "written.json", tmp_path / "copied.json")
    store = ArtifactStore(tmp_path / "store")
    scratch_file = store.scratch() / "clip.bin"
    scratch_file.write_bytes(b"clip")
    scratch_file.chmod(0o600)  # as tempfile.mkstemp leaves a tool's output
    linked = store.path("t", store.put_file("t", scratch_file, owned=True))
    for path in (tmp_path / "written.json", tmp_path / "copied.json", linked):
        assert path.stat().st_mode & 0o777 == expected, path


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_blob_is_quarantined_and_reported_absent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    found = store.put_bytes("t", b"the bytes we stored")
    assert store.has("t", found)
    _flip_last_byte(store.path("t", found))
    assert not store.has("t", found), "a blob whose bytes changed must not be reused"
    assert not store.path("t", found).exists()
    quarantined = list((tmp_path / ".quarantine").rglob("*"))
    assert [p.name.split(".")[0] for p in quarantined if p.is_file()] == [found]
    assert store.put_bytes("t", b"the bytes we stored") == found, "storing it again rebuilds it"
    assert store.read_bytes("t", found) == b"the bytes we stored"


def test_reading_or_publishing_a_damaged_blob_fails_and_writes_nothing(tmp_path: Path) -> None:
    from pipeline.store import DamagedArtifact

    store = ArtifactStore(tmp_path / "store")
    document, clip = store.put_bytes("t", b'{"a": 1}'), store.put_bytes("t", b"x" * 5000)
    assert store.has("t", clip)  # verified once: the cache must notice the change below
    _flip_last_byte(store.path("t", document))
    store.path("t", clip).write_bytes(b"x" * 4000)  # truncated
    with pytest.raises(DamagedArtifact, match="damaged"):
        store.read_bytes("t", document)
    with pytest.raises(DamagedArtifact, match="damaged"):
        store.copy_out("t", clip, tmp_path / "out" / "episode.mp4")
    assert not (tmp_path / "out" / "episode.mp4").exists()
    assert list((tmp_path / "out").iterdir()) == [], "no temporary file is left behind"


def test_store_check_hashes_every_blob(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    whole = [store.put_bytes(tenant, data) for tenant in ("t1", "t2") for data in (b"a", b"bb")]
    damaged = store.put_bytes("t1", b"ccc")
    _flip_last_byte(store.path("t1", damaged))
    report = store.check()
    assert (report.blobs, report.bytes) == (len(whole), 6)
    assert [d.path for d in report.damaged] == [tmp_path / "t1" / damaged[:2] / damaged]
    assert store.check().damaged == [], "the damaged blob was quarantined"
