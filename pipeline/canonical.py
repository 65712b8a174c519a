"""Canonical JSON: the one byte form every JSON artifact is hashed and stored in.

Sorted keys, UTF-8, no insignificant whitespace, a trailing newline. Two processes that build
the same document get the same bytes, so the sha256 of those bytes is the artifact's identity.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def canonical_bytes(value: Any) -> bytes:
    """Serialise plain JSON data canonically."""
    return (
        json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode("utf-8")


def model_bytes(model: BaseModel) -> bytes:
    """Serialise a pydantic model canonically (JSON mode, so enums and paths become strings)."""
    return canonical_bytes(model.model_dump(mode="json"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """The sha256 of a value's canonical form: the identity of a cache key or a document."""
    if isinstance(value, BaseModel):
        return sha256_hex(model_bytes(value))
    return sha256_hex(canonical_bytes(value))
