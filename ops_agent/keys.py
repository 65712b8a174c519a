"""Command-signing keys and the trust bundle the agents verify against.

A signing key is an Ed25519 key with a ``key_id``; only the control plane holds it. Agents hold a trust
bundle: a versioned list of public keys, several at once, so that a rotation trusts the old and the new
key together and no command in flight is refused. Revoking a key is a new bundle version in which the
key is marked ``revoked``; keys are never silently dropped, so an audit can still name them.

Files are JSON, written to a temp file, fsynced and renamed into place, so a reader never sees half a
file. Signing key files are mode 0600. Private key bytes never appear in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ops_agent.errors import KeyStoreError, show_value
from ops_agent.files import write_file

#: The signing key ``init`` and ``rotate`` manage inside a key folder (mode 0600).
SIGNING_KEY_FILE = "signing-key.json"
#: The current signing key's public half, the file to hand to ``add`` on every agent's bundle.
PUBLIC_KEY_FILE = "signing-key.pub.json"
#: The trust bundle ``init`` creates beside the signing key.
BUNDLE_FILE = "trust-bundle.json"
#: What a key id may look like: it is printed, logged and used in file names.
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ACTIVE, REVOKED = "active", "revoked"

_RAW = serialization.Encoding.Raw


def new_key_id() -> str:
    """A fresh key id such as ``cp-20250614-1a2b3c4d``: sortable by creation day, unique by its random tail."""
    return f"cp-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _raw_key(path: Path, name: str, value: Any, secret: bool = False) -> bytes:
    """Decode a base64 field holding 32 raw key bytes, or say which file and field are wrong."""
    shown = "(withheld)" if secret else show_value(value)
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyStoreError(f"{path}: field {name}: value {shown}: expected base64 of 32 raw Ed25519 key bytes")
    return raw


def _key_id(path: Path, name: str, value: Any) -> str:
    if not isinstance(value, str) or not KEY_ID_PATTERN.fullmatch(value):
        raise KeyStoreError(f"{path}: field {name}: value {show_value(value)}: expected a key id matching "
                            f"{KEY_ID_PATTERN.pattern}")
    return value


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyStoreError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyStoreError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise KeyStoreError(f"{path}: value {show_value(data)}: expected a JSON object ({what})")
    return data


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and the id agents know its public half by."""

    key_id: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, key_id: str | None = None) -> SigningKey:
        return cls(key_id or new_key_id(), Ed25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key, as a trust bundle stores it."""
        return self.private_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def public_document(self) -> dict[str, str]:
        """The public key file's content: what ``add`` reads on the agents' side."""
        return {"key_id": self.key_id, "algorithm": "ed25519", "public_key": _b64(self.public_bytes)}

    def save(self, path: Path) -> None:
        """Write the key to ``path``, mode 0600, atomically (an existing key is replaced whole or not at all)."""
        private = self.private_key.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption())
        write_file(path, _dump(self.public_document() | {"private_key": _b64(private)}), 0o600)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key ``save`` wrote; refuse it if the stored public key does not belong to the private one."""
        return cls._from_document(path, _read_json(path, "signing key file"))

    @classmethod
    def _from_document(cls, path: Path, data: dict[str, Any]) -> SigningKey:
        key_id = _key_id(path, "key_id", data.get("key_id"))
        if "private_key" not in data:
            raise KeyStoreError(f"{path}: field private_key: missing: expected a signing key file, "
                                "not a public key file")
        key = cls(key_id, Ed25519PrivateKey.from_private_bytes(
            _raw_key(path, "private_key", data["private_key"], secret=True)))
        if "public_key" in data and _raw_key(path, "public_key", data["public_key"]) != key.public_bytes:
            raise KeyStoreError(f"{path}: field public_key: value {show_value(data['public_key'])}: expected the "
                                "public half of this file's private key")
        return key


@dataclass(frozen=True)
class TrustedKey:
    """One public key of a trust bundle, with its state and optional validity window (unix seconds)."""

    key_id: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    public_bytes: bytes
    state: str = ACTIVE
    not_before: float | None = None
    not_after: float | None = None

    @classmethod
    def from_bytes(cls, key_id: str, public_bytes: bytes) -> TrustedKey:
        return cls(key_id, Ed25519PublicKey.from_public_bytes(public_bytes), public_bytes)

    def refusal(self, now: float) -> str | None:
        """Why this key may not verify a command at ``now``, or None when it may."""
        if self.state != ACTIVE:
            return f"key {self.key_id} is {self.state}"
        if self.not_before is not None and now < self.not_before:
            return f"key {self.key_id} is not valid before {self.not_before:.0f} (now {now:.0f})"
        if self.not_after is not None and now >= self.not_after:
            return f"key {self.key_id} expired at {self.not_after:.0f} (now {now:.0f})"
        return None

    def document(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"key_id": self.key_id, "public_key": _b64(self.public_bytes), "state": self.state}
        if self.not_before is not None:
            entry["not_before"] = self.not_before
        if self.not_after is not None:
            entry["not_after"] = self.not_after
        return entry


def _when(path: Path, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KeyStoreError(f"{path}: field {name}: value {show_value(value)}: expected unix seconds (a number) "
                            "or null")
    return float(value)


def _trusted_key(path: Path, index: int, entry: Any) -> TrustedKey:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise KeyStoreError(f"{path}: field {where}: value {show_value(entry)}: expected an object")
    key_id = _key_id(path, f"{where}.key_id", entry.get("key_id"))
    raw = _raw_key(path, f"{where}.public_key", entry.get("public_key"))
    state = entry.get("state")
    if state not in (ACTIVE, REVOKED):
        raise KeyStoreError(f"{path}: field {where}.state: value {show_value(state)}: expected 'active' or 'revoked'")
    not_before = _when(path, f"{where}.not_before", entry.get("not_before"))
    not_after = _when(path, f"{where}.not_after", entry.get("not_after"))
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise KeyStoreError(f"{path}: field {where}.not_after: value {not_after!r}: expected a time after "
                            f"not_before ({not_before!r})")
    return replace(TrustedKey.from_bytes(key_id, raw), state=state, not_before=not_before, not_after=not_after)


@dataclass(frozen=True)
class TrustBundle:
    """The public keys an agent accepts commands from. Every change makes a new bundle with ``version + 1``."""

    version: int
    keys: tuple[TrustedKey, ...] = ()

    def lookup(self, key_id: str) -> TrustedKey | None:
        """The entry for ``key_id``, revoked or not; None when the bundle has never trusted it."""
        return next((key for key in self.keys if key.key_id == key_id), None)

    def with_key(self, key: TrustedKey, source: Path) -> TrustBundle:
        """A new version that also trusts ``key``; ``source`` names the bundle file in errors."""
        known = self.lookup(key.key_id)
        if known is not None:
            raise KeyStoreError(f"{source}: field keys: key id {key.key_id!r} is already in the bundle "
                                f"({known.state}); expected a new key id")
        twin = next((k for k in self.keys if k.public_bytes == key.public_bytes), None)
        if twin is not None:
            raise KeyStoreError(f"{source}: field keys: this public key is already trusted as {twin.key_id!r}; "
                                "expected a new key")
        return TrustBundle(self.version + 1, (*self.keys, key))

    def with_revoked(self, key_id: str, source: Path) -> TrustBundle:
        """A new version in which ``key_id`` is revoked; ``source`` names the bundle file in errors."""
        known = self.lookup(key_id)
        if known is None:
            ids = ", ".join(k.key_id for k in self.keys) or "none"
            raise KeyStoreError(f"{source}: field keys: value {key_id!r}: expected one of the bundle's key ids "
                                f"({ids})")
        if known.state == REVOKED:
            raise KeyStoreError(f"{source}: field keys: key {key_id!r} is already revoked")
        keys = tuple(replace(k, state=REVOKED) if k.key_id == key_id else k for k in self.keys)
        return TrustBundle(self.version + 1, keys)

    def document(self) -> dict[str, Any]:
        return {"version": self.version, "keys": [k.document() for k in self.keys]}

    @property
    def sha256(self) -> str:
        """sha256 of the bundle's canonical JSON: what an agent binds its rollback floor to.

        Computed over what the bundle means (version, keys, states, windows), not the file's bytes, so
        re-saving the same bundle keeps its hash and any change of meaning changes it.
        """
        canonical = json.dumps(self.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def save(self, path: Path) -> None:
        write_file(path, _dump(self.document()), 0o644)

    @classmethod
    def load(cls, path: Path) -> TrustBundle:
        """Read a bundle; refuse it whole, naming the field, when any part is malformed.

        Unknown fields are ignored (readers of newer bundles keep working); missing or wrong ones are not.
        """
        data = _read_json(path, "trust bundle")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise KeyStoreError(f"{path}: field version: value {show_value(version)}: expected an integer >= 1")
        entries = data.get("keys")
        if not isinstance(entries, list):
            raise KeyStoreError(f"{path}: field keys: value {show_value(entries)}: expected a list of keys")
        keys = tuple(_trusted_key(path, i, entry) for i, entry in enumerate(entries))
        seen: set[str] = set()
        seen_public: dict[bytes, str] = {}
        for i, key in enumerate(keys):
            if key.key_id in seen:
                raise KeyStoreError(f"{path}: field keys[{i}].key_id: value {key.key_id!r}: expected a key id "
                                    "not used by an earlier key")
            # One key under two ids would let revoking one id leave the key trusted under the other.
            twin = seen_public.get(key.public_bytes)
            if twin is not None:
                raise KeyStoreError(f"{path}: field keys[{i}].public_key: value {show_value(_b64(key.public_bytes))}: "
                                    f"expected a key not already trusted under another id (it is {twin!r})")
            seen.add(key.key_id)
            seen_public[key.public_bytes] = key.key_id
        return cls(version, keys)


def read_public_key(path: Path) -> TrustedKey:
    """The active public key in a public key file or a signing key file (only its public half is used)."""
    data = _read_json(path, "key file")
    if "private_key" in data:
        key = SigningKey._from_document(path, data)
        return TrustedKey.from_bytes(key.key_id, key.public_bytes)
    key_id = _key_id(path, "key_id", data.get("key_id"))
    return TrustedKey.from_bytes(key_id, _raw_key(path, "public_key", data.get("public_key")))


@dataclass(frozen=True)
class KeyFolder:
    """Where ``init`` and ``rotate`` keep the control plane's signing key, its public half and a bundle."""

    path: Path

    @property
    def signing_key(self) -> Path:
        return self.path / SIGNING_KEY_FILE

    @property
    def public_key(self) -> Path:
        return self.path / PUBLIC_KEY_FILE

    @property
    def bundle(self) -> Path:
        return self.path / BUNDLE_FILE


def init(folder: Path) -> tuple[SigningKey, TrustBundle]:
    """Create a signing key in ``folder`` and a version-1 bundle trusting it; refuse to replace either."""
    files = KeyFolder(folder)
    existing = [p for p in (files.signing_key, files.public_key, files.bundle) if p.exists()]
    if existing:
        raise KeyStoreError(f"{existing[0]}: already exists; expected an empty key folder (nothing was changed)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = SigningKey.generate()
    bundle = TrustBundle(1, (TrustedKey.from_bytes(key.key_id, key.public_bytes),))
    key.save(files.signing_key)
    write_file(files.public_key, _dump(key.public_document()), 0o644)
    bundle.save(files.bundle)
    return key, bundle


def add(bundle_file: Path, key_file: Path) -> tuple[TrustedKey, TrustBundle]:
    """Trust the key in ``key_file`` (public or signing key file) as active in ``bundle_file``."""
    key = read_public_key(key_file)
    bundle = TrustBundle.load(bundle_file).with_key(key, bundle_file)
    bundle.save(bundle_file)
    return key, bundle


def revoke(bundle_file: Path, key_id: str) -> TrustBundle:
    """Mark ``key_id`` revoked in ``bundle_file``; commands it signed are refused from then on."""
    bundle = TrustBundle.load(bundle_file).with_revoked(key_id, bundle_file)
    bundle.save(bundle_file)
    return bundle


def rotate(folder: Path) -> tuple[str, SigningKey, TrustBundle]:
    """Make a new signing key in ``folder`` and trust it; the old key stays trusted (active) until revoked.

    The bundle is written before the new key replaces the old one, so a crash in between leaves a
    trusted key that is not yet used, never a used key that is not trusted. The old private key is
    discarded: commands it signed stay valid for their TTL, and nothing needs to sign with it again.
    Returns the old key id, the new key and the new bundle.
    """
    files = KeyFolder(folder)
    old = SigningKey.load(files.signing_key)
    bundle = TrustBundle.load(files.bundle)
    new = SigningKey.generate()
    bundle = bundle.with_key(TrustedKey.from_bytes(new.key_id, new.public_bytes), files.bundle)
    bundle.save(files.bundle)
    new.save(files.signing_key)
    write_file(files.public_key, _dump(new.public_document()), 0o644)
    return old.key_id, new, bundle
