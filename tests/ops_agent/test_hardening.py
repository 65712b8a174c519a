"""Side doors of issue 8 around the signed path: audit lines read two ways, trust rollback, lenient protobuf."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ops_agent import audit
from ops_agent.audit import AuditLog, AuditRecord
from ops_agent.envelope import PAYLOAD_TYPE, Verifier, new_payload, pae, sign
from ops_agent.errors import AuditLogError, KeyStoreError, Rejected
from ops_agent.keys import REVOKED, SigningKey, TrustBundle, TrustedKey
from ops_agent.nonces import NonceStore
from ops_agent.trust import TrustFile
from protos import ops_agent_pb2 as pb
from tests.ops_agent.protowire import varint

NOW = 1_750_000_000.0
HOST, SITE = "host-a", "site-1"


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


# -- the audit log: each line is exactly the bytes that were hashed -------------------------------


def _write_log(path: Path, count: int) -> list[bytes]:
    with AuditLog(path, clock=iter(float(n) for n in range(1000)).__next__) as log:
        for n in range(count):
            log.append(AuditRecord(command_id=f"c{n + 1}", action="ACTION_DRAIN_WORKER", target="worker:w1",
                                   outcome="OUTCOME_EXECUTED", message=f"done {n + 1}"))
    return path.read_bytes().splitlines(keepends=True)


def _duplicate_outcome(line: bytes) -> bytes:
    """The line with a false outcome before the true one: JSON keeps the last, so the hash still matches."""
    assert line.startswith(b"{")
    return b'{"outcome":"OUTCOME_REFUSED",' + line[1:]


def test_a_line_with_a_duplicate_key_fails_verification_by_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path, 4)
    forged = _duplicate_outcome(lines[2])
    # The forgery reads as the genuine entry to a plain parser, hash included: what used to pass.
    entry = json.loads(forged)
    assert entry == json.loads(lines[2]) and audit.entry_hash(entry) == entry["entry_hash"]
    path.write_bytes(b"".join([*lines[:2], forged, *lines[3:]]))
    report = audit.verify(path)
    assert (report.line, report.ok) == (3, False)
    assert "key 'outcome' appears twice" in report.problem


@pytest.mark.parametrize("reencode", [
    lambda e: json.dumps(e, sort_keys=True).encode(),                      # spaces after separators
    lambda e: json.dumps(e, separators=(",", ":")).encode(),                # keys out of order
    lambda e: json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(),  # \u escapes
], ids=["spaces", "key-order", "ascii-escapes"])
def test_any_non_canonical_re_encoding_fails_verification(reencode: Callable[[dict[str, Any]], bytes],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=lambda: 1.0) as log:
        for n in range(3):
            log.append(AuditRecord(command_id=f"c{n}", message="café für Grüße"))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = reencode(json.loads(lines[1])) + b"\n"
    path.write_bytes(b"".join(lines))
    report = audit.verify(path)
    assert report.line == 2 and report.problem.startswith("not canonical"), report


@pytest.mark.parametrize(("garbage", "fragment"), [
    (b'{"seq":' + b"9" * 5000 + b"}", "digits"),
    (b"\xff\xfe not utf-8", "not an audit entry"),
    (b"[" * 100_000 + b"]" * 100_000, "not an audit entry"),
    (b'{"seq":NaN,"prev_hash":"","entry_hash":""}', "NaN is not JSON"),
    (b'{"seq":1,"prev_hash":"\\ud800","entry_hash":""}', "not canonical"),
    (b"[]", "expected a JSON object"),
], ids=["5000-digit", "not-utf8", "deep-nesting", "nan", "lone-surrogate", "array"])
def test_garbage_in_a_line_is_named_by_line_without_a_traceback(garbage: bytes, fragment: str,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path, 3)
    path.write_bytes(b"".join([lines[0], garbage + b"\n", *lines[1:]]))
    report = audit.verify(path)
    assert report.line == 2 and fragment in report.problem, report
    verified = _cli("audit", "verify", path)
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    assert f"{path}: line 2: not" in verified.stderr + verified.stdout


@pytest.mark.parametrize("last", [
    lambda line: _duplicate_outcome(line),
    lambda line: b'{"seq":' + b"7" * 5000 + b"}\n",
    lambda line: json.dumps(json.loads(line), sort_keys=True).encode() + b"\n",
], ids=["duplicate-key", "5000-digit", "non-canonical"])
def test_the_agent_refuses_to_start_on_an_unsound_head_naming_the_line(last: Callable[[bytes], bytes],
                                                                      tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _write_log(path, 3)
    path.write_bytes(b"".join([*lines[:2], last(lines[2])]))
    with pytest.raises(AuditLogError, match=r"line 3 \(the last\): (not|key)"):
        AuditLog(path)
    # And through the command: a clear message and exit 1, no traceback (the log is opened first).
    started = _cli("agent", "serve", "--host", HOST, "--site", SITE, "--data-dir", tmp_path / "site",
                   "--state-dir", tmp_path / "state", "--audit", path, "--listen", "127.0.0.1:0")
    assert started.returncode == 1 and "Traceback" not in started.stderr, started.stderr
    assert f"{path}: line 3 (the last)" in started.stderr


# -- the trust bundle: the floor is bound to the bundle's hash -----------------------------------


def _bundle(version: int, *keys: tuple[SigningKey, str]) -> TrustBundle:
    return TrustBundle(version, tuple(replace(TrustedKey.from_bytes(k.key_id, k.public_bytes), state=state)
                                      for k, state in keys))


class Installed:
    """What the verifier was given, as the agent installs each adopted bundle."""

    def __init__(self) -> None:
        self.bundles: list[TrustBundle] = []

    def __call__(self, bundle: TrustBundle) -> None:
        self.bundles.append(bundle)


def test_a_same_version_bundle_with_other_content_is_refused_at_start_and_at_run_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, new = SigningKey.generate("cp-old"), SigningKey.generate("cp-new")
    genuine = _bundle(2, (old, REVOKED), (new, "active"))
    forged = _bundle(2, (old, "active"), (new, "active"))  # un-revokes the old key, same version
    path, floor = tmp_path / "trust-bundle.json", tmp_path / "state" / "trust-version"
    floor.parent.mkdir()
    genuine.save(path)
    installed = Installed()
    trust = TrustFile(path, installed, floor)
    assert installed.bundles == [genuine] and json.loads(floor.read_text())["sha256"] == genuine.sha256

    # At run time: logged, the genuine bundle kept
    forged.save(path)
    with caplog.at_level(logging.ERROR, logger="ops_agent.trust"):
        trust.refresh()
    assert trust.bundle == genuine and installed.bundles == [genuine]
    assert "other content" in caplog.text and "REFUSED" in caplog.text
    assert trust.problem is not None and "version 2 still in use" in trust.problem, "health reports it"
    genuine.save(path)
    trust.refresh()
    assert trust.problem is None, "the genuine bundle back on disk clears the report"
    forged.save(path)

    # At start, after a restart: refused, and the floor still names the genuine bundle
    with pytest.raises(KeyStoreError, match="version 2 has other content"):
        TrustFile(path, Installed(), floor)
    genuine.save(path)
    assert TrustFile(path, Installed(), floor).bundle == genuine, "the genuine bundle is still accepted"


def test_a_version_only_floor_of_an_older_agent_is_bound_to_the_hash_at_start(tmp_path: Path) -> None:
    key = SigningKey.generate("cp-1")
    path, floor = tmp_path / "trust-bundle.json", tmp_path / "trust-version"
    bundle = _bundle(3, (key, "active"))
    bundle.save(path)
    floor.write_text("3\n")
    TrustFile(path, Installed(), floor)
    assert json.loads(floor.read_text()) == {"version": 3, "sha256": bundle.sha256}
    _bundle(3, (key, REVOKED)).save(path)
    with pytest.raises(KeyStoreError, match="other content"):
        TrustFile(path, Installed(), floor)


def test_a_garbled_floor_file_is_refused_naming_it(tmp_path: Path) -> None:
    path, floor = tmp_path / "trust-bundle.json", tmp_path / "trust-version"
    _bundle(1, (SigningKey.generate("cp-1"), "active")).save(path)
    floor.write_text('{"version": 2, "sha256": "zz"}')
    with pytest.raises(KeyStoreError, match=f"{floor}: value .*expected the trust floor"):
        TrustFile(path, Installed(), floor)


def test_the_loader_refuses_one_public_key_under_two_ids(tmp_path: Path) -> None:
    key = SigningKey.generate("cp-1")
    path = tmp_path / "trust-bundle.json"
    twin = TrustBundle(1, (TrustedKey.from_bytes("cp-1", key.public_bytes),
                           replace(TrustedKey.from_bytes("cp-1-again", key.public_bytes), state=REVOKED)))
    twin.save(path)
    with pytest.raises(KeyStoreError, match=r"keys\[1\]\.public_key: .*already trusted under another id .*'cp-1'"):
        TrustBundle.load(path)


def test_a_newer_bundle_with_one_bad_entry_is_refused_loudly_and_the_old_one_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, other = SigningKey.generate("cp-1"), SigningKey.generate("cp-2")
    path, floor = tmp_path / "trust-bundle.json", tmp_path / "trust-version"
    current = _bundle(1, (key, "active"))
    current.save(path)
    trust = TrustFile(path, Installed(), floor)
    document = _bundle(2, (key, "active"), (other, "active")).document()
    document["keys"][1]["state"] = "trusted-ish"
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.ERROR, logger="ops_agent.trust"):
        trust.refresh()
    assert trust.bundle == current and json.loads(floor.read_text())["version"] == 1
    assert "REFUSED, keeping version 1" in caplog.text and "keys[1].state" in caplog.text
    # And fixed, it is taken
    _bundle(2, (key, "active"), (other, "active")).save(path)
    trust.refresh()
    assert trust.bundle.version == 2 and json.loads(floor.read_text())["version"] == 2


# -- protobuf leniency: the payload must be the one encoding that reads back to its bytes --------


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[tuple[Verifier, SigningKey]]:
    key = SigningKey.generate("cp-1")
    nonces = NonceStore(tmp_path / "nonces.sqlite", clock=lambda: NOW)
    yield Verifier(HOST, SITE, _bundle(1, (key, "active")), nonces, lambda _payload: None, clock=lambda: NOW), key
    nonces.close()



def _encode_with(payload: pb.CommandPayload, name: str, field_bytes: bytes) -> bytes:
    """``payload``'s encoding, fields in number order, with field ``name`` written as ``field_bytes``."""
    body = b""
    by_number = payload.DESCRIPTOR.fields_by_number
    for descriptor in (by_number[number] for number in sorted(by_number)):
        if descriptor.name == name:
            body += field_bytes
        elif payload.HasField(descriptor.name) if descriptor.containing_oneof else True:
            single = pb.CommandPayload()
            value = getattr(payload, descriptor.name)
            if descriptor.message_type is not None:
                getattr(single, descriptor.name).CopyFrom(value)
            else:
                setattr(single, descriptor.name, value)
            body += single.SerializeToString()
    return body


def _signed(key: SigningKey, body: bytes) -> pb.SignedCommand:
    return pb.SignedCommand(payload=body, payload_type=PAYLOAD_TYPE, key_id=key.key_id,
                            signature=key.sign(pae(PAYLOAD_TYPE, body)))


def _pause(**fields: object) -> pb.CommandPayload:
    return new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_PAUSE_QUEUE,
                       target=pb.QueueRef(name="cpu_queue"), actor="ana", now=NOW, **fields)  # type: ignore[arg-type]


ACTION_TAG = pb.CommandPayload.DESCRIPTOR.fields_by_name["action"].number << 3


def test_an_action_of_2_pow_32_plus_4_is_refused_as_malformed(verifier: tuple[Verifier, SigningKey]) -> None:
    check, key = verifier
    payload = _pause()
    body = _encode_with(payload, "action", varint(ACTION_TAG) + varint(2**32 + pb.ACTION_PAUSE_QUEUE))
    # A lenient reader takes it for pause-queue: the ambiguity this check closes.
    assert pb.CommandPayload.FromString(body).action == pb.ACTION_PAUSE_QUEUE
    with pytest.raises(Rejected) as refused:
        check.verify(_signed(key, body))
    assert refused.value.reason == pb.REJECT_MALFORMED and "canonical encoding" in refused.value.detail
    # The same command, canonically encoded, verifies (the refusal consumed no nonce)
    assert check.verify(sign(payload, key)).action == pb.ACTION_PAUSE_QUEUE


@pytest.mark.parametrize(("name", "earlier"), [
    ("action", pb.CommandPayload(action=pb.ACTION_RESUME_QUEUE)),
    ("actor", pb.CommandPayload(actor="eva")),
    ("audience_host", pb.CommandPayload(audience_host="host-b")),
    ("queue", pb.CommandPayload(queue=pb.QueueRef(name="media_queue"))),
], ids=["action", "actor", "audience_host", "queue"])
def test_a_repeated_field_whose_last_value_wins_is_refused(name: str, earlier: pb.CommandPayload,
                                                           verifier: tuple[Verifier, SigningKey]) -> None:
    check, key = verifier
    payload = _pause()
    own = pb.CommandPayload()
    own.MergeFrom(payload)
    for descriptor in own.DESCRIPTOR.fields:
        if descriptor.name != name:
            own.ClearField(descriptor.name)
    # The field twice: an earlier value a reviewer may read, then the one a parser keeps.
    body = _encode_with(payload, name, earlier.SerializeToString() + own.SerializeToString())
    assert pb.CommandPayload.FromString(body) == payload, "a lenient parser reads the signed command"
    with pytest.raises(Rejected) as refused:
        check.verify(_signed(key, body))
    assert refused.value.reason == pb.REJECT_MALFORMED and "canonical encoding" in refused.value.detail


@pytest.mark.parametrize("variant", ["non-minimal varint", "default value sent", "fields out of order"])
def test_other_non_canonical_encodings_are_refused(variant: str, verifier: tuple[Verifier, SigningKey]) -> None:
    check, key = verifier
    payload = _pause()
    if variant == "non-minimal varint":
        body = _encode_with(payload, "action", varint(ACTION_TAG) + bytes([0x80 | pb.ACTION_PAUSE_QUEUE, 0x00]))
    elif variant == "default value sent":
        body = sign(payload, key).payload + varint(pb.CommandPayload.DESCRIPTOR.fields_by_name["approved_by"].number
                                                    << 3 | 2) + b"\x00"
    else:
        canonical = sign(payload, key).payload
        body = _encode_with(payload, "version", b"") + varint(1 << 3) + varint(1)
        assert pb.CommandPayload.FromString(body) == pb.CommandPayload.FromString(canonical)
    with pytest.raises(Rejected) as refused:
        check.verify(_signed(key, body))
    assert refused.value.reason == pb.REJECT_MALFORMED
