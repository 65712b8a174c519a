"""The signed command envelope: a valid command passes, every kind of bad one is refused with its reason."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from ops_agent.envelope import (
    MAX_ENVELOPE_BYTES,
    PAYLOAD_TYPE,
    Target,
    Verifier,
    new_payload,
    pae,
    parse_envelope,
    payload_sha256,
    sign,
)
from ops_agent.errors import Rejected
from ops_agent.keys import REVOKED, SigningKey, TrustBundle, TrustedKey
from ops_agent.nonces import NonceStore
from protos import ops_agent_pb2 as pb
from tests.ops_agent.protowire import varint

NOW = 1_750_000_000.0
HOST, SITE = "host-a", "site-1"
EXISTING = {"worker": {"w1"}, "queue": {"cpu_queue"}, "run": {"r1"}, "stage": {"r1/shot:s01"}}


def target_exists(payload: pb.CommandPayload) -> str | None:
    kind = payload.WhichOneof("target")
    assert kind is not None
    target = getattr(payload, kind)
    name = "/".join(getattr(target, f.name) for f in target.DESCRIPTOR.fields)
    return None if name in EXISTING[kind] else f"{name!r} does not exist on {SITE}"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    """A host's verifier over a trust bundle with an active, an impostor, a revoked and an expired key."""

    key: SigningKey
    impostor: SigningKey
    revoked: SigningKey
    lapsed: SigningKey
    verifier: Verifier
    nonces: NonceStore
    clock: Clock
    nonce_path: Path

    def payload(self, **fields: object) -> pb.CommandPayload:
        payload = new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_DRAIN_WORKER,
                              target=pb.WorkerRef(name="w1"), actor="ana", actor_role="operator", now=NOW)
        for name, value in fields.items():
            if isinstance(value, pb.WorkerRef | pb.QueueRef | pb.RunRef | pb.StageRef):
                getattr(payload, name).CopyFrom(value)
            else:
                setattr(payload, name, value)
        return payload

    def command(self, **fields: object) -> pb.SignedCommand:
        return sign(self.payload(**fields), self.key)

    def reopen(self) -> Verifier:
        """The agent after a restart: a new process opening the same nonce file."""
        self.nonces.close()
        self.nonces = NonceStore(self.nonce_path, clock=self.clock)
        return Verifier(HOST, SITE, self.verifier.trust, self.nonces, target_exists, clock=self.clock)


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    key, revoked, lapsed = SigningKey.generate("cp-1"), SigningKey.generate("cp-old"), SigningKey.generate("cp-lapsed")
    impostor = SigningKey(key.key_id, SigningKey.generate().private_key)
    bundle = TrustBundle(3, (
        TrustedKey.from_bytes(key.key_id, key.public_bytes),
        replace(TrustedKey.from_bytes(revoked.key_id, revoked.public_bytes), state=REVOKED),
        replace(TrustedKey.from_bytes(lapsed.key_id, lapsed.public_bytes), not_after=NOW - 1),
    ))
    clock = Clock(NOW)
    nonces = NonceStore(tmp_path / "nonces.sqlite", clock=clock)
    verifier = Verifier(HOST, SITE, bundle, nonces, target_exists, clock=clock)
    built = Kit(key, impostor, revoked, lapsed, verifier, nonces, clock, tmp_path / "nonces.sqlite")
    yield built
    built.nonces.close()



def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand so tests can build what no encoder would."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def _resigned(kit: Kit, body: bytes, key: SigningKey | None = None) -> pb.SignedCommand:
    """An envelope with a valid signature over arbitrary payload bytes."""
    key = key or kit.key
    return pb.SignedCommand(payload=body, payload_type=PAYLOAD_TYPE, key_id=key.key_id,
                            signature=key.sign(pae(PAYLOAD_TYPE, body)))


def _tamper_actor(kit: Kit) -> pb.SignedCommand:
    command = kit.command(actor="ana")
    at = command.payload.index(b"ana")
    command.payload = command.payload[:at] + b"eva" + command.payload[at + 3:]
    return command


def _with(command: pb.SignedCommand, **fields: object) -> pb.SignedCommand:
    for name, value in fields.items():
        setattr(command, name, value)
    return command


# Each case: how to build the bad command from the kit, and the reason it must be refused with.
CORPUS: dict[str, tuple[Callable[[Kit], pb.SignedCommand | bytes], int]] = {
    "oversize payload": (lambda k: k.command(actor="x" * MAX_ENVELOPE_BYTES), pb.REJECT_OVERSIZE),
    "oversize envelope bytes": (lambda k: b"\x00" * (MAX_ENVELOPE_BYTES + 1), pb.REJECT_OVERSIZE),
    "outer envelope not protobuf": (lambda k: b"\xff\xff\xff", pb.REJECT_MALFORMED),
    "wrong payload type": (lambda k: _with(k.command(), payload_type="application/json"), pb.REJECT_PAYLOAD_TYPE),
    "empty payload type": (lambda k: _with(k.command(), payload_type=""), pb.REJECT_PAYLOAD_TYPE),
    "unsigned": (lambda k: _with(k.command(), signature=b""), pb.REJECT_UNSIGNED),
    "unknown key id": (lambda k: _with(k.command(), key_id="cp-nobody"), pb.REJECT_UNKNOWN_KEY),
    "revoked key": (lambda k: sign(k.payload(), k.revoked), pb.REJECT_REVOKED_KEY),
    "key past its not_after": (lambda k: sign(k.payload(), k.lapsed), pb.REJECT_REVOKED_KEY),
    "signed by another key under a trusted id": (lambda k: sign(k.payload(), k.impostor), pb.REJECT_BAD_SIGNATURE),
    "one tampered payload byte": (_tamper_actor, pb.REJECT_BAD_SIGNATURE),
    "all-zero signature": (lambda k: _with(k.command(), signature=bytes(64)), pb.REJECT_BAD_SIGNATURE),
    "signature of another payload": (lambda k: _with(k.command(), signature=k.command().signature),
                                     pb.REJECT_BAD_SIGNATURE),
    "payload not protobuf": (lambda k: _resigned(k, b"\xff\xff\xff\xff"), pb.REJECT_MALFORMED),
    "unknown field in payload": (lambda k: _resigned(k, k.payload().SerializeToString() + _field(99, b"x")),
                                 pb.REJECT_MALFORMED),
    "unknown field inside the target": (
        lambda k: _resigned(k, k.payload().SerializeToString() + _field(9, _field(7, b"x"))), pb.REJECT_MALFORMED),
    "version 2": (lambda k: k.command(version=2), pb.REJECT_VERSION),
    "version 0": (lambda k: k.command(version=0), pb.REJECT_VERSION),
    "empty command id": (lambda k: k.command(command_id=""), pb.REJECT_MALFORMED),
    "short nonce": (lambda k: k.command(nonce=b"\x01" * 8), pb.REJECT_MALFORMED),
    "another host": (lambda k: k.command(audience_host="host-b"), pb.REJECT_WRONG_HOST),
    "empty host": (lambda k: k.command(audience_host=""), pb.REJECT_WRONG_HOST),
    "another site": (lambda k: k.command(site_id="site-2"), pb.REJECT_WRONG_SITE),
    "TTL too long": (lambda k: k.command(issued_at=int(NOW), expires_at=int(NOW) + 301), pb.REJECT_TTL_TOO_LONG),
    "issued too far in the future": (lambda k: k.command(issued_at=int(NOW) + 31, expires_at=int(NOW) + 90),
                                     pb.REJECT_NOT_YET_VALID),
    "expired": (lambda k: k.command(issued_at=int(NOW) - 120, expires_at=int(NOW) - 1), pb.REJECT_EXPIRED),
    "expires exactly now": (lambda k: k.command(issued_at=int(NOW) - 60, expires_at=int(NOW)), pb.REJECT_EXPIRED),
    "expires before it is issued": (lambda k: k.command(issued_at=int(NOW) + 20, expires_at=int(NOW) + 10),
                                    pb.REJECT_EXPIRED),
    "unknown action 99": (lambda k: k.command(action=99), pb.REJECT_UNKNOWN_ACTION),
    "unspecified action": (lambda k: k.command(action=pb.ACTION_UNSPECIFIED), pb.REJECT_UNKNOWN_ACTION),
    "drain with a queue target": (lambda k: k.command(queue=pb.QueueRef(name="cpu_queue")), pb.REJECT_BAD_TARGET),
    "cancel with a worker target": (lambda k: k.command(action=pb.ACTION_CANCEL_RUN), pb.REJECT_BAD_TARGET),
    "no target": (lambda k: _resigned(k, _drop_target(k.payload())), pb.REJECT_BAD_TARGET),
    "empty worker name": (lambda k: k.command(worker=pb.WorkerRef(name="")), pb.REJECT_BAD_TARGET),
    "worker name with a newline": (lambda k: k.command(worker=pb.WorkerRef(name="w1\nw2")), pb.REJECT_BAD_TARGET),
    "stage without run id": (lambda k: k.command(action=pb.ACTION_RETRY_STAGE, stage=pb.StageRef(stage_id="x")),
                             pb.REJECT_BAD_TARGET),
    "unknown target": (lambda k: k.command(worker=pb.WorkerRef(name="w9")), pb.REJECT_UNKNOWN_TARGET),
}


def _drop_target(payload: pb.CommandPayload) -> bytes:
    payload.ClearField("target")
    return payload.SerializeToString()


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_bad_command_is_refused_with_its_reason(case: str, kit: Kit) -> None:
    # Given a command broken in one way
    build, reason = CORPUS[case]
    built = build(kit)
    raw = built if isinstance(built, bytes) else built.SerializeToString()
    # When the agent verifies it as received on the wire
    with pytest.raises(Rejected) as refused:
        kit.verifier.verify_bytes(raw)
    # Then it is refused for exactly that reason, with a sentence that carries no signature bytes
    assert pb.RejectReason.Name(refused.value.reason) == pb.RejectReason.Name(reason), refused.value.detail
    assert refused.value.detail
    if isinstance(built, pb.SignedCommand) and built.signature:
        assert built.signature.hex() not in str(refused.value) and repr(built.signature) not in str(refused.value)


def test_a_valid_command_of_each_action_passes(kit: Kit) -> None:
    targets: dict[pb.Action, Target] = {
        pb.ACTION_DRAIN_WORKER: pb.WorkerRef(name="w1"), pb.ACTION_UNDRAIN_WORKER: pb.WorkerRef(name="w1"),
        pb.ACTION_RESTART_WORKER: pb.WorkerRef(name="w1"), pb.ACTION_PAUSE_QUEUE: pb.QueueRef(name="cpu_queue"),
        pb.ACTION_RESUME_QUEUE: pb.QueueRef(name="cpu_queue"), pb.ACTION_CANCEL_RUN: pb.RunRef(run_id="r1"),
        pb.ACTION_RETRY_STAGE: pb.StageRef(run_id="r1", stage_id="shot:s01")}
    assert sorted(targets) == sorted(v for v in pb.Action.values() if v != pb.ACTION_UNSPECIFIED)
    for action, target in targets.items():
        payload = new_payload(audience_host=HOST, site_id=SITE, action=action, target=target, now=NOW)
        command = sign(payload, kit.key)
        assert kit.verifier.verify_bytes(command.SerializeToString()) == payload
        assert command.payload == payload.SerializeToString(), "signed bytes are the payload serialized once"


def test_the_time_window_edges(kit: Kit) -> None:
    # issued up to skew ahead of the agent's clock: accepted
    ahead = kit.command(issued_at=int(NOW) + 30, expires_at=int(NOW) + 330)
    assert kit.verifier.verify(ahead).issued_at == int(NOW) + 30
    # a window of exactly MAX_TTL_S, half a second before it closes: accepted
    kit.clock.now = NOW + 299.5
    last = kit.command(issued_at=int(NOW), expires_at=int(NOW) + 300)
    assert kit.verifier.verify(last).expires_at == int(NOW) + 300


def test_pae_is_dsse_v1() -> None:
    assert pae("t/x", b"hello") == b"DSSEv1 3 t/x 5 hello"
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("é", b"\x00") == b"DSSEv1 2 \xc3\xa9 1 \x00", "lengths count bytes, not characters"


def test_new_payload_refuses_a_window_longer_than_allowed() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        new_payload(audience_host=HOST, site_id=SITE, action=pb.ACTION_DRAIN_WORKER,
                    target=pb.WorkerRef(name="w1"), ttl_s=301)


def test_a_replayed_nonce_is_refused_also_after_the_agent_restarts(kit: Kit) -> None:
    # Given a command that ran
    raw = kit.command().SerializeToString()
    kit.verifier.verify_bytes(raw)
    # When it is replayed, to the same process and to a restarted agent
    with pytest.raises(Rejected) as again:
        kit.verifier.verify_bytes(raw)
    restarted = kit.reopen()
    with pytest.raises(Rejected) as after_restart:
        restarted.verify_bytes(raw)
    # Then both are refused as replays, as is another command reusing the nonce
    assert again.value.reason == after_restart.value.reason == pb.REJECT_REPLAYED_NONCE
    reuse = kit.command(nonce=pb.CommandPayload.FromString(parse_envelope(raw).payload).nonce, command_id="other")
    with pytest.raises(Rejected) as reused:
        restarted.verify(reuse)
    assert reused.value.reason == pb.REJECT_REPLAYED_NONCE


def test_a_refused_command_does_not_burn_its_nonce(kit: Kit) -> None:
    command = kit.command(worker=pb.WorkerRef(name="w2"))
    with pytest.raises(Rejected, match="REJECT_UNKNOWN_TARGET"):
        kit.verifier.verify(command)
    EXISTING["worker"].add("w2")
    try:
        assert kit.verifier.verify(command).worker.name == "w2"
    finally:
        EXISTING["worker"].discard("w2")


def test_the_same_command_id_runs_once_and_returns_its_first_result(kit: Kit) -> None:
    # Given a command admitted and run, with its result stored
    command = kit.command()
    first = kit.verifier.admit(command)
    assert first.previous is None and first.payload_sha256 == payload_sha256(command)
    result = pb.CommandResult(command_id=first.payload.command_id, host=HOST, outcome=pb.OUTCOME_EXECUTED,
                              message="worker w1 draining", payload_sha256=first.payload_sha256)
    kit.verifier.remember_result(first, result)
    # When the same envelope comes again, also after a restart
    restarted = kit.reopen()
    again = restarted.admit(command)
    # Then its stored result is returned, marked as such, and nothing is admitted to run
    assert again.previous is not None
    assert again.previous.replayed_result and again.previous.message == "worker w1 draining"
    # And a command reusing the id with other content neither gets that result nor runs again
    other = kit.command(command_id=first.payload.command_id, actor="eva")
    with pytest.raises(Rejected, match=r"command_id .* already claimed") as reused:
        restarted.admit(other)
    assert reused.value.reason == pb.REJECT_REPLAYED_NONCE
    # And the stored result needs a valid signature: a forged copy of the envelope is refused
    forged = pb.SignedCommand()
    forged.CopyFrom(command)
    forged.signature = kit.impostor.sign(pae(PAYLOAD_TYPE, command.payload))
    with pytest.raises(Rejected, match="REJECT_BAD_SIGNATURE"):
        restarted.admit(forged)


def test_rotation_both_keys_verify_while_trusted_and_a_revoked_one_fails(kit: Kit) -> None:
    new = SigningKey.generate("cp-2")
    kit.verifier.trust = kit.verifier.trust.with_key(TrustedKey.from_bytes(new.key_id, new.public_bytes),
                                                     Path("bundle"))
    assert kit.verifier.verify(sign(kit.payload(), kit.key))
    assert kit.verifier.verify(sign(kit.payload(), new))
    kit.verifier.trust = kit.verifier.trust.with_revoked(kit.key.key_id, Path("bundle"))
    with pytest.raises(Rejected, match="REJECT_REVOKED_KEY"):
        kit.verifier.verify(sign(kit.payload(), kit.key))
    assert kit.verifier.verify(sign(kit.payload(), new))


def _wire_fields(command: pb.SignedCommand) -> list[tuple[int, bytes]]:
    return [(1, command.payload), (2, command.payload_type.encode()), (3, command.key_id.encode()),
            (4, command.signature)]


def _mutate(rng: random.Random, raw: bytes, command: pb.SignedCommand) -> bytes:
    """One random change to a valid envelope's bytes or fields."""
    kind = rng.randrange(9)
    if kind == 0:  # flip 1-3 bits
        out = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 1:  # insert bytes
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.randbytes(rng.randint(1, 4)) + raw[at:]
    if kind == 2:  # delete bytes
        at = rng.randrange(len(raw))
        return raw[:at] + raw[at + rng.randint(1, 4):]
    if kind == 3:  # truncate
        return raw[:rng.randrange(len(raw))]
    fields = _wire_fields(command)
    if kind == 4:  # swap two fields' values, keeping their numbers
        i, j = rng.sample(range(4), 2)
        fields[i], fields[j] = (fields[i][0], fields[j][1]), (fields[j][0], fields[i][1])
    elif kind == 5:  # reorder fields on the wire (same content: must be detected as identical)
        rng.shuffle(fields)
    elif kind == 6:  # random payload_type or key_id, sometimes a near miss
        number = rng.choice([2, 3])
        value = bytearray(fields[number - 1][1])
        if value and rng.random() < 0.5:
            value[rng.randrange(len(value))] = rng.randrange(32, 127)
        else:
            value = bytearray(rng.choice([b"", b"cp-old", b"cp-lapsed", b"cp-2", rng.randbytes(rng.randint(1, 40))]))
        fields[number - 1] = (number, bytes(value))
    elif kind == 7:  # mutate a byte inside the payload, keeping the envelope well formed
        payload = bytearray(fields[0][1])
        payload[rng.randrange(len(payload))] = rng.randrange(256)
        fields[0] = (1, bytes(payload))
    else:  # append a duplicate of one field with other content (the last one wins on parse)
        number = rng.randint(1, 4)
        fields.append((number, rng.randbytes(rng.randint(0, 70))))
    return b"".join(_field(number, data) for number, data in fields)


def test_random_mutations_of_a_valid_envelope_never_verify(kit: Kit) -> None:
    # Given a valid envelope
    command = kit.command(worker=pb.WorkerRef(name="w1"))
    raw = command.SerializeToString()
    identity = _wire_fields(command)
    rng = random.Random(20250614)
    reasons: collections.Counter[str] = collections.Counter()
    identical = 0
    # When it is mutated 10,000 times
    for _ in range(10_000):
        mutated = _mutate(rng, raw, command)
        try:
            parsed = pb.SignedCommand.FromString(mutated)
        except DecodeError:  # undecodable: verify_bytes must refuse it as MALFORMED
            parsed = None
        if parsed is not None and _wire_fields(parsed) == identity:
            identical += 1  # the same envelope in other bytes (field order): not a mutation of what is signed
            continue
        # Then none verifies, and each is refused only by Rejected
        try:
            payload = kit.verifier.verify_bytes(mutated)
        except Rejected as refused:
            reasons[pb.RejectReason.Name(refused.reason)] += 1
        else:
            pytest.fail(f"a mutated envelope verified: {mutated.hex()} -> {payload}")
    assert identical > 0, "the field-reordering mutation must have produced identical envelopes"
    assert sum(reasons.values()) + identical == 10_000
    assert {"REJECT_MALFORMED", "REJECT_PAYLOAD_TYPE", "REJECT_UNKNOWN_KEY", "REJECT_BAD_SIGNATURE",
            "REJECT_UNSIGNED", "REJECT_REVOKED_KEY"} <= set(reasons), reasons
    # And the original still verifies: no refusal consumed its nonce
    assert kit.verifier.verify_bytes(raw).worker.name == "w1"
