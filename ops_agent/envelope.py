"""The signed command envelope: building and signing on the control plane, verifying on the agent.

The envelope is DSSE-shaped: the payload travels as opaque bytes and the Ed25519 signature covers
``PAE(payload_type, payload)``. The agent verifies the exact bytes it received before parsing them, and
then requires that the parsed payload serializes (deterministically) back to exactly those bytes: protobuf
parsing accepts many encodings of one message, and no reader may see another command than the signer
meant. It then checks, in a fixed order and refusing at the first failure, everything that makes a command
acceptable on this host: see ``Verifier``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from ops_agent.errors import AgentError, Rejected, show_value
from ops_agent.keys import SigningKey, TrustBundle
from ops_agent.nonces import NONCE_BYTES, NonceStore
from protos import ops_agent_pb2 as pb
from protos.actions import ACTIONS, TARGET_KINDS, Target

#: The only payload type an agent accepts; signed inside PAE, so a signature cannot be reused for another type.
PAYLOAD_TYPE = "application/vnd.cinefleet.ops-command.v1+proto"
#: The only payload version an agent accepts; a new field means a new version.
PAYLOAD_VERSION = 1
#: Largest serialized SignedCommand accepted; checked before any work is done on it.
MAX_ENVELOPE_BYTES = 4096
#: Longest validity window (expires_at - issued_at) a command may carry.
MAX_TTL_S = 300
#: Validity window ``new_payload`` gives a command unless told otherwise.
DEFAULT_TTL_S = 120
#: How far ahead of the agent's clock a command's issued_at may be.
DEFAULT_SKEW_S = 30.0
#: How long past its expiry a command id stays claimed: a command re-signed with the same id
#: inside this time is refused rather than run a second time.
COMMAND_ID_MEMORY_S = 7 * 24 * 3600

#: The target each allow-listed action takes (the oneof field of CommandPayload.target), from the one table.
TARGET_OF_ACTION: Mapping[int, str] = MappingProxyType({row.action: row.target.field for row in ACTIONS})
#: What a command id and a target's ids may look like: they reach logs, Redis keys and the site database.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}")

_TARGET_FIELD = {kind.message: kind.field for kind in TARGET_KINDS.values()}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def payload_sha256(command: pb.SignedCommand) -> bytes:
    """sha256 of the payload bytes as sent: what results and audit entries identify a command by."""
    return hashlib.sha256(command.payload).digest()


def new_payload(*, audience_host: str, site_id: str, action: pb.Action, target: Target, actor: str = "",
                actor_role: str = "", approved_by: str = "", ttl_s: int = DEFAULT_TTL_S,
                command_id: str | None = None, now: float | None = None) -> pb.CommandPayload:
    """A version-1 payload with a fresh command id and nonce, valid from ``now`` for ``ttl_s`` seconds.

    Build it just before sending: the window starts at build time.
    """
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: value {ttl_s!r}: expected 1..{MAX_TTL_S} seconds")
    issued_at = int(time.time() if now is None else now)
    payload = pb.CommandPayload(
        version=PAYLOAD_VERSION, command_id=command_id or uuid.uuid4().hex, nonce=os.urandom(NONCE_BYTES),
        issued_at=issued_at, expires_at=issued_at + ttl_s, audience_host=audience_host, site_id=site_id,
        action=action, actor=actor, actor_role=actor_role, approved_by=approved_by)
    getattr(payload, _TARGET_FIELD[type(target)]).CopyFrom(target)
    return payload


def sign(payload: pb.CommandPayload, key: SigningKey) -> pb.SignedCommand:
    """Serialize ``payload`` once, deterministically (the only encoding an agent accepts), and sign those bytes."""
    body = payload.SerializeToString(deterministic=True)
    return pb.SignedCommand(payload=body, payload_type=PAYLOAD_TYPE, key_id=key.key_id,
                            signature=key.sign(pae(PAYLOAD_TYPE, body)))


def parse_envelope(raw: bytes) -> pb.SignedCommand:
    """Parse a SignedCommand from the wire, refusing oversize or undecodable input before anything else."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise Rejected(pb.REJECT_OVERSIZE, f"envelope is {len(raw)} bytes; expected at most {MAX_ENVELOPE_BYTES}")
    try:
        return pb.SignedCommand.FromString(raw)
    except DecodeError as exc:
        raise Rejected(pb.REJECT_MALFORMED, f"envelope: not a SignedCommand ({exc})") from None


def _unknown_field_path(message: Message, path: str = "payload") -> str | None:
    """Where ``message`` (or a message inside it) carries fields its schema does not know, or None."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})  # its stub declares no __iter__
        return f"{path}: field number(s) {', '.join(map(str, numbers))}"
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            found = _unknown_field_path(value, f"{path}.{descriptor.name}")
            if found:
                return found
    return None


@dataclass(frozen=True)
class Admission:
    """A command that verified: either new (nonce recorded; run it) or already run (``previous`` is set)."""

    payload: pb.CommandPayload
    payload_sha256: bytes
    key_id: str
    previous: pb.CommandResult | None = None


class Verifier:
    """Decides whether a signed command may run on this host; refuses with ``Rejected`` at the first failure.

    Order (the reason code of each): size (OVERSIZE), payload type (PAYLOAD_TYPE), signature present
    (UNSIGNED), key id trusted (UNKNOWN_KEY) and usable now (REVOKED_KEY), Ed25519 over PAE of the received
    bytes (BAD_SIGNATURE); then parse, unknown fields and non-canonical encoding (MALFORMED), version
    (VERSION), command id and nonce shape (MALFORMED), audience host (WRONG_HOST), site (WRONG_SITE), window
    length (TTL_TOO_LONG), not yet valid (NOT_YET_VALID), expired (EXPIRED), action allow-list
    (UNKNOWN_ACTION), target kind and ids (BAD_TARGET), target exists here (UNKNOWN_TARGET), nonce unseen
    (REPLAYED_NONCE), recorded on disk.

    Parameters:
        host, site: this agent's host id and site; a command must name both exactly.
        trust: the trust bundle; an attribute, so a reloaded bundle can replace it.
        nonces: the durable nonce and result store.
        target_exists: returns None when the payload's target exists on this site, else why not.
        clock: unix seconds now.
        skew: how far ahead of ``clock`` a command's issued_at may be; nonces are kept this long past expiry.
    """

    def __init__(self, host: str, site: str, trust: TrustBundle, nonces: NonceStore,
                 target_exists: Callable[[pb.CommandPayload], str | None],
                 clock: Callable[[], float] = time.time, skew: float = DEFAULT_SKEW_S) -> None:
        if not host or not site:
            raise AgentError(f"verifier: host {host!r}, site {site!r}: expected both non-empty")
        self.host, self.site, self.trust = host, site, trust
        self._nonces, self._target_exists, self._clock, self._skew = nonces, target_exists, clock, skew

    def verify_bytes(self, raw: bytes) -> pb.CommandPayload:
        """Verify a SignedCommand as received on the wire (size cap, parse, then ``verify``)."""
        return self.verify(parse_envelope(raw), len(raw))

    def verify(self, command: pb.SignedCommand, size: int | None = None) -> pb.CommandPayload:
        """Run every check, record the nonce and return the payload to execute.

        ``size`` is the envelope's size on the wire when known, else its serialized size. A command seen
        before is refused (REPLAYED_NONCE) even if it ran; ``admit`` returns its stored result instead.
        """
        payload = self._authenticate(command, size)
        self._claim(payload)
        return payload

    def admit(self, command: pb.SignedCommand, size: int | None = None) -> Admission:
        """Like ``verify``, but a command that already ran returns its stored result instead of being refused.

        The stored result is looked up by command id *and* payload sha256 after every check that depends
        only on the envelope and the clock has passed, so only a command carrying a valid, current
        signature over the same bytes gets it; the target check and the nonce are skipped for it (the
        target may have gone since, and the nonce is by design already seen).
        """
        payload = self._authenticate(command, size)
        digest = payload_sha256(command)
        previous = self._nonces.result_for(payload.command_id, digest)
        if previous is not None:
            previous.replayed_result = True
            return Admission(payload, digest, command.key_id, previous)
        self._claim(payload)
        return Admission(payload, digest, command.key_id)

    def release(self, admission: Admission) -> None:
        """Give back the nonce and command id of an admitted command that was not executed (it may come again)."""
        self._nonces.release(admission.payload.nonce, admission.payload.command_id)

    def remember_result(self, admission: Admission, result: pb.CommandResult) -> None:
        """Store the result of running an admitted command, for as long as its envelope could verify."""
        self._nonces.remember_result(admission.payload.command_id, admission.payload_sha256, result,
                                     admission.payload.expires_at + self._skew)

    def _authenticate(self, command: pb.SignedCommand, size: int | None) -> pb.CommandPayload:
        """Every check up to the target's existence, which needs the site's state."""
        self._check_signature(command, command.ByteSize() if size is None else size)
        payload = self._parse(command.payload)
        self._check_audience(payload)
        self._check_window(payload)
        self._check_action_and_target(payload)
        return payload

    def _check_signature(self, command: pb.SignedCommand, size: int) -> None:
        if size > MAX_ENVELOPE_BYTES:
            raise Rejected(pb.REJECT_OVERSIZE, f"envelope is {size} bytes; expected at most {MAX_ENVELOPE_BYTES}")
        if command.payload_type != PAYLOAD_TYPE:
            raise Rejected(pb.REJECT_PAYLOAD_TYPE,
                           f"payload_type: value {show_value(command.payload_type)}: expected {PAYLOAD_TYPE!r}")
        if not command.signature:
            raise Rejected(pb.REJECT_UNSIGNED, "signature: empty: expected an Ed25519 signature")
        key = self.trust.lookup(command.key_id)
        if key is None:
            raise Rejected(pb.REJECT_UNKNOWN_KEY, f"key_id: value {show_value(command.key_id)}: expected a key of the "
                                                  f"trust bundle (version {self.trust.version})")
        refusal = key.refusal(self._clock())
        if refusal is not None:
            raise Rejected(pb.REJECT_REVOKED_KEY, f"key_id: {refusal}")
        try:
            key.public_key.verify(command.signature, pae(command.payload_type, command.payload))
        except InvalidSignature:
            raise Rejected(pb.REJECT_BAD_SIGNATURE, f"signature: does not verify with key {key.key_id} over "
                                                    "the payload as received") from None

    def _parse(self, body: bytes) -> pb.CommandPayload:
        try:
            payload = pb.CommandPayload.FromString(body)
        except DecodeError as exc:
            raise Rejected(pb.REJECT_MALFORMED, f"payload: not a CommandPayload ({exc})") from None
        unknown = _unknown_field_path(payload)
        if unknown:
            raise Rejected(pb.REJECT_MALFORMED, f"{unknown}: unknown to payload version {PAYLOAD_VERSION}; "
                                                "expected only known fields")
        # Protobuf parsing is lenient: a field sent twice keeps its last value, an enum varint wider than
        # 32 bits is cut to its low bits (2^32+4 reads as 4). Only the one encoding that reads back to
        # the same bytes is accepted, so an approval tool and the agent can never read one command two ways.
        if payload.SerializeToString(deterministic=True) != body:
            raise Rejected(pb.REJECT_MALFORMED, "payload: not in canonical encoding (a repeated field, an "
                                                "out-of-range or non-minimal value, a default value sent, or "
                                                "fields out of order); expected the bytes of a deterministic "
                                                "serialization")
        if payload.version != PAYLOAD_VERSION:
            raise Rejected(pb.REJECT_VERSION, f"version: value {payload.version}: expected {PAYLOAD_VERSION}")
        if not ID_PATTERN.fullmatch(payload.command_id):
            raise Rejected(pb.REJECT_MALFORMED, f"command_id: value {show_value(payload.command_id)}: expected an id "
                                                f"matching {ID_PATTERN.pattern}")
        if len(payload.nonce) != NONCE_BYTES:
            raise Rejected(pb.REJECT_MALFORMED, f"nonce: {len(payload.nonce)} bytes: expected {NONCE_BYTES}")
        return payload

    def _check_audience(self, payload: pb.CommandPayload) -> None:
        if payload.audience_host != self.host:
            raise Rejected(pb.REJECT_WRONG_HOST,
                           f"audience_host: value {show_value(payload.audience_host)}: expected {self.host!r}")
        if payload.site_id != self.site:
            raise Rejected(pb.REJECT_WRONG_SITE,
                           f"site_id: value {show_value(payload.site_id)}: expected {self.site!r}")

    def _check_window(self, payload: pb.CommandPayload) -> None:
        now = self._clock()
        ttl = payload.expires_at - payload.issued_at
        if ttl > MAX_TTL_S:
            raise Rejected(pb.REJECT_TTL_TOO_LONG, f"expires_at - issued_at: value {ttl} s: expected at most "
                                                   f"{MAX_TTL_S} s")
        if payload.issued_at > now + self._skew:
            raise Rejected(pb.REJECT_NOT_YET_VALID, f"issued_at: value {payload.issued_at}: expected at most "
                                                    f"now + skew ({now:.0f} + {self._skew:.0f})")
        if now >= payload.expires_at or ttl <= 0:
            raise Rejected(pb.REJECT_EXPIRED, f"expires_at: value {payload.expires_at}: expected after now "
                                              f"({now:.0f}) and after issued_at ({payload.issued_at})")

    def _check_action_and_target(self, payload: pb.CommandPayload) -> None:
        kind = TARGET_OF_ACTION.get(payload.action)
        if kind is None:
            known = ", ".join(pb.Action.Name(a) for a in TARGET_OF_ACTION)
            raise Rejected(pb.REJECT_UNKNOWN_ACTION, f"action: value {payload.action}: expected one of {known}")
        given = payload.WhichOneof("target")
        if given != kind:
            raise Rejected(pb.REJECT_BAD_TARGET, f"target: {given or 'none'}: expected a {kind} for "
                                                 f"{pb.Action.Name(payload.action)}")
        target = getattr(payload, kind)
        for descriptor in target.DESCRIPTOR.fields:
            value = getattr(target, descriptor.name)
            if not ID_PATTERN.fullmatch(value):
                raise Rejected(pb.REJECT_BAD_TARGET, f"{kind}.{descriptor.name}: value {show_value(value)}: expected "
                                                     f"an id matching {ID_PATTERN.pattern}")

    def _claim(self, payload: pb.CommandPayload) -> None:
        """Check the target exists here, then record the nonce on disk (refusing one already seen)."""
        missing = self._target_exists(payload)
        if missing is not None:
            raise Rejected(pb.REJECT_UNKNOWN_TARGET, f"{payload.WhichOneof('target')}: {missing}")
        if not self._nonces.check_and_remember(payload.nonce, payload.expires_at + self._skew):
            raise Rejected(pb.REJECT_REPLAYED_NONCE, f"nonce: already seen (command_id {payload.command_id}); "
                                                     "expected a fresh nonce")
        if not self._nonces.claim_command(payload.command_id, payload.expires_at + self._skew + COMMAND_ID_MEMORY_S):
            raise Rejected(pb.REJECT_REPLAYED_NONCE, f"command_id {payload.command_id}: already claimed by an "
                                                     "earlier command; expected a new id for a new command")
