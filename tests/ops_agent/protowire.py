"""Protobuf wire-format pieces for tests that hand-craft payloads the official encoder never writes."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` as a base-128 varint, least significant group first."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
