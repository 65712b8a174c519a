"""Signing keys and trust bundles: files on disk, refusals that name the field, rotation and revocation."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cinefleet.cli import app
from ops_agent import keys
from ops_agent.errors import KeyStoreError
from ops_agent.keys import ACTIVE, REVOKED, KeyFolder, SigningKey, TrustBundle, TrustedKey

NOW = 1_750_000_000.0


def _private_b64(path: Path) -> str:
    return json.loads(path.read_text())["private_key"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_init_writes_a_private_key_0600_and_a_bundle_trusting_it(tmp_path: Path) -> None:
    key, bundle = keys.init(tmp_path / "cp")
    files = KeyFolder(tmp_path / "cp")
    assert stat.S_IMODE(files.signing_key.stat().st_mode) == 0o600
    assert SigningKey.load(files.signing_key).public_bytes == key.public_bytes
    assert TrustBundle.load(files.bundle) == bundle
    assert bundle.version == 1 and [(k.key_id, k.state) for k in bundle.keys] == [(key.key_id, ACTIVE)]
    assert keys.read_public_key(files.public_key) == bundle.keys[0]
    assert "private_key" not in json.loads(files.public_key.read_text())
    assert sorted(p.name for p in files.path.iterdir()) == sorted([keys.SIGNING_KEY_FILE, keys.PUBLIC_KEY_FILE,
                                                                    keys.BUNDLE_FILE]), "no temp files left"


def test_init_refuses_an_initialised_folder_and_changes_nothing(tmp_path: Path) -> None:
    keys.init(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(KeyStoreError, match="already exists"):
        keys.init(tmp_path)
    assert _snapshot(tmp_path) == before


def test_a_signing_key_never_shows_its_private_half(tmp_path: Path) -> None:
    key = SigningKey.generate("cp-x")
    key.save(tmp_path / "k.json")
    assert _private_b64(tmp_path / "k.json") not in repr(key)
    # a damaged private key is named but its value is withheld
    document = json.loads((tmp_path / "k.json").read_text())
    secret = document["private_key"] = document["private_key"][:-4]
    (tmp_path / "k.json").write_text(json.dumps(document))
    with pytest.raises(KeyStoreError) as refused:
        SigningKey.load(tmp_path / "k.json")
    assert "private_key" in str(refused.value) and "withheld" in str(refused.value)
    assert secret not in str(refused.value)


def test_a_signing_key_file_whose_public_half_does_not_match_is_refused(tmp_path: Path) -> None:
    SigningKey.generate("cp-x").save(tmp_path / "k.json")
    document = json.loads((tmp_path / "k.json").read_text())
    document["public_key"] = base64.b64encode(SigningKey.generate().public_bytes).decode()
    (tmp_path / "k.json").write_text(json.dumps(document))
    with pytest.raises(KeyStoreError, match=r"field public_key.*expected the public half"):
        SigningKey.load(tmp_path / "k.json")


GOOD_KEY = base64.b64encode(bytes(range(32))).decode()
BAD_BUNDLES: dict[str, tuple[Any, list[str]]] = {
    "version as text": ({"version": "1", "keys": []}, ["field version", "'1'", "integer >= 1"]),
    "version 0": ({"version": 0, "keys": []}, ["field version", "0", "integer >= 1"]),
    "keys not a list": ({"version": 1, "keys": {}}, ["field keys", "list of keys"]),
    "key not an object": ({"version": 1, "keys": ["k"]}, ["field keys[0]", "'k'", "an object"]),
    "bad key id": ({"version": 1, "keys": [{"key_id": "a b", "public_key": GOOD_KEY, "state": "active"}]},
                   ["keys[0].key_id", "'a b'", "key id matching"]),
    "public key not base64": ({"version": 1, "keys": [{"key_id": "k1", "public_key": "%%%", "state": "active"}]},
                              ["keys[0].public_key", "'%%%'", "32 raw Ed25519 key bytes"]),
    "public key 31 bytes": ({"version": 1, "keys": [{"key_id": "k1", "public_key": base64.b64encode(bytes(31))
                                                     .decode(), "state": "active"}]},
                            ["keys[0].public_key", "32 raw"]),
    "unknown state": ({"version": 1, "keys": [{"key_id": "k1", "public_key": GOOD_KEY, "state": "pending"}]},
                      ["keys[0].state", "'pending'", "'active' or 'revoked'"]),
    "not_after as text": ({"version": 1, "keys": [{"key_id": "k1", "public_key": GOOD_KEY, "state": "active",
                                                   "not_after": "tomorrow"}]},
                          ["keys[0].not_after", "'tomorrow'", "unix seconds"]),
    "empty validity window": ({"version": 1, "keys": [{"key_id": "k1", "public_key": GOOD_KEY, "state": "active",
                                                       "not_before": 10, "not_after": 10}]},
                              ["keys[0].not_after", "after not_before"]),
    "duplicate key id": ({"version": 1, "keys": [{"key_id": "k1", "public_key": GOOD_KEY, "state": "active"},
                                                 {"key_id": "k1", "public_key": GOOD_KEY, "state": "revoked"}]},
                         ["keys[1].key_id", "'k1'", "not used by an earlier key"]),
    "not an object": ([1, 2], ["expected a JSON object"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_a_malformed_bundle_is_refused_naming_file_field_and_value(case: str, tmp_path: Path) -> None:
    document, fragments = BAD_BUNDLES[case]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyStoreError) as refused:
        TrustBundle.load(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(refused.value)


def test_a_bundle_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text("{version: 1")
    with pytest.raises(KeyStoreError, match=r"bundle\.json: cannot read trust bundle"):
        TrustBundle.load(tmp_path / "bundle.json")


def test_a_bundle_round_trips_with_validity_and_ignores_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({"version": 4, "expires": "later", "keys": [
        {"key_id": "k1", "public_key": GOOD_KEY, "state": "active", "not_before": 5, "not_after": 50.5, "x": 1}]}))
    bundle = TrustBundle.load(path)
    bundle.save(tmp_path / "copy.json")
    assert TrustBundle.load(tmp_path / "copy.json") == bundle
    key = bundle.lookup("k1")
    assert key is not None and bundle.lookup("k2") is None
    assert key.refusal(4) == "key k1 is not valid before 5 (now 4)"
    assert key.refusal(5) is None and key.refusal(50) is None
    late = key.refusal(50.5)
    assert late is not None and "expired" in late


def test_add_and_revoke_bump_the_version_and_refuse_nonsense_without_writing(tmp_path: Path) -> None:
    keys.init(tmp_path / "cp")
    bundle_file = KeyFolder(tmp_path / "cp").bundle
    other = SigningKey.generate("cp-other")
    other.save(tmp_path / "other.json")
    # add reads only the public half of a signing key file
    added, bundle = keys.add(bundle_file, tmp_path / "other.json")
    assert added.key_id == "cp-other" and bundle.version == 2 and TrustBundle.load(bundle_file) == bundle
    before = bundle_file.read_bytes()
    with pytest.raises(KeyStoreError, match="'cp-other' is already in the bundle"):
        keys.add(bundle_file, tmp_path / "other.json")
    twin = TrustedKey.from_bytes("cp-twin", other.public_bytes)
    with pytest.raises(KeyStoreError, match="already trusted as 'cp-other'"):
        bundle.with_key(twin, bundle_file)
    with pytest.raises(KeyStoreError, match="no such key file"):
        keys.add(bundle_file, tmp_path / "missing.json")
    assert bundle_file.read_bytes() == before
    revoked = keys.revoke(bundle_file, "cp-other")
    gone = revoked.lookup("cp-other")
    assert revoked.version == 3 and gone is not None
    assert gone.state == REVOKED and gone.refusal(NOW) is not None
    before = bundle_file.read_bytes()
    with pytest.raises(KeyStoreError, match="already revoked"):
        keys.revoke(bundle_file, "cp-other")
    with pytest.raises(KeyStoreError, match="value 'cp-nobody': expected one of the bundle's key ids"):
        keys.revoke(bundle_file, "cp-nobody")
    assert bundle_file.read_bytes() == before


def test_rotate_signs_with_a_new_key_and_keeps_the_old_one_trusted(tmp_path: Path) -> None:
    first, _ = keys.init(tmp_path)
    old_private = _private_b64(KeyFolder(tmp_path).signing_key)
    old_id, new, bundle = keys.rotate(tmp_path)
    files = KeyFolder(tmp_path)
    assert old_id == first.key_id != new.key_id
    assert SigningKey.load(files.signing_key).key_id == new.key_id
    assert keys.read_public_key(files.public_key).key_id == new.key_id
    assert old_private not in files.signing_key.read_text(), "the old private key is discarded"
    assert stat.S_IMODE(files.signing_key.stat().st_mode) == 0o600
    assert bundle.version == 2 and [(k.key_id, k.state) for k in bundle.keys] == [(old_id, ACTIVE),
                                                                                  (new.key_id, ACTIVE)]
    assert all(k.refusal(NOW) is None for k in TrustBundle.load(files.bundle).keys)


def test_keys_cli_does_what_it_says_and_never_prints_a_private_key(tmp_path: Path) -> None:
    runner = CliRunner()
    folder, agent_bundle = tmp_path / "cp", tmp_path / "agent-bundle.json"
    made = runner.invoke(app, ["keys", "init", str(folder)])
    assert made.exit_code == 0, made.output
    files = KeyFolder(folder)
    first = SigningKey.load(files.signing_key)
    assert first.key_id in made.output and "0600" in made.output
    TrustBundle(1).save(agent_bundle)
    outputs = [made.output]
    for args in (["add", str(agent_bundle), str(files.public_key)], ["rotate", str(folder)]):
        done = runner.invoke(app, ["keys", *args])
        assert done.exit_code == 0, done.output
        outputs.append(done.output)
    second = SigningKey.load(files.signing_key)
    assert f"added {first.key_id}" in outputs[1] and f"signing key is now {second.key_id}" in outputs[2]
    revoked = runner.invoke(app, ["keys", "revoke", str(files.bundle), first.key_id])
    assert revoked.exit_code == 0 and f"revoked {first.key_id}" in revoked.output
    outputs.append(revoked.output)
    for secret in (first, second):
        raw = secret.private_key.private_bytes_raw()
        assert not any(base64.b64encode(raw).decode() in out or raw.hex() in out for out in outputs)


def test_keys_cli_errors_exit_2_and_change_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    keys.init(tmp_path)
    before = _snapshot(tmp_path)
    for args in (["init", str(tmp_path)], ["revoke", str(KeyFolder(tmp_path).bundle), "cp-nobody"],
                 ["add", str(KeyFolder(tmp_path).bundle), str(KeyFolder(tmp_path).public_key)]):
        failed = runner.invoke(app, ["keys", *args])
        assert failed.exit_code == 2, (args, failed.output)
        assert failed.output.startswith("error: ") and str(tmp_path) in failed.output
    assert _snapshot(tmp_path) == before
