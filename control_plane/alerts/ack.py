"""Signed ack URLs: single-purpose, per alert and receiver, expiring; anything else is refused.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, domain + payload))``; the payload
names the purpose (``ack``), the alert, the receiver it was sent to and its expiry. The key is a
file in the centre's folder (``alert-ack.key``, mode 0600) that both ``alerts serve`` (which
signs) and the web process (which verifies, ``POST /ack/{token}``) read; no database reader can
forge an ack. The domain prefix keeps these MACs apart from any other use of the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from control_plane.errors import ControlError, Forbidden

ACK_KEY_FILE = "alert-ack.key"
DOMAIN = b"cinefleet-alert-ack-v1\n"
PURPOSE = "ack"


class AckRefused(Forbidden):
    """Raised for an ack URL that was tampered with, has expired, or is not an ack URL at all."""


class AckKeyMissing(ControlError):
    """Raised when the web process has no ack key yet (``alerts serve`` makes it on its first start)."""


@dataclass(frozen=True)
class Grant:
    alert_id: int
    receiver: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, alert_id: int, receiver: str, expires_at: float) -> str:
    payload = _b64(json.dumps({"p": PURPOSE, "a": alert_id, "r": receiver, "e": int(expires_at)},
                              sort_keys=True, separators=(",", ":")).encode())
    mac = hmac.new(key, DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(key: bytes, token: str, now: float) -> Grant:
    """The grant ``token`` carries; raises :class:`AckRefused` saying why it is refused."""
    payload, dot, mac = token.partition(".")
    if not dot or not payload or not mac or len(token) > 1024:
        raise AckRefused("ack URL: malformed; expected the link from an alert message")
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        raise AckRefused("ack URL: malformed signature; expected the link from an alert message") from None
    expected = hmac.new(key, DOMAIN + payload.encode("ascii", "replace"), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise AckRefused("ack URL: signature does not match (altered, or signed with another key)")
    try:
        claims = json.loads(_unb64(payload))
        purpose, alert_id, receiver, expires = claims["p"], int(claims["a"]), str(claims["r"]), float(claims["e"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise AckRefused("ack URL: payload unreadable") from None
    if purpose != PURPOSE:
        raise AckRefused(f"ack URL: purpose {purpose!r}: expected {PURPOSE!r}")
    if now > expires:
        raise AckRefused(f"ack URL: expired {now - expires:.0f} s ago; ack from the dashboard or the CLI instead")
    return Grant(alert_id, receiver, expires)


def load_key(path: Path, create: bool = False) -> bytes:
    """The key in ``path``; with ``create``, a new random one is written (0600) when the file is absent."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if not create:
            raise AckKeyMissing(f"{path}: no ack key yet (`cinefleet alerts serve` makes it)") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_key(path)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AckKeyMissing(f"{path}: not a hex key; expected 64 hex digits") from None
    if len(key) < 16:
        raise AckKeyMissing(f"{path}: key of {len(key)} bytes; expected at least 16")
    return key
