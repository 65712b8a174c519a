"""Calls that never send their request: raw HTTP/2 streams opened with HEADERS and then left silent.

gRPC's Python client always sends a unary call's request at once, so a stalled call is made by hand:
the client preface, a SETTINGS frame, then one HEADERS frame (no END_STREAM) per call. A reader
thread per connection acknowledges the server's SETTINGS and PINGs, as a live client would, so the
server has no reason to drop the connection, and records any RST_STREAM or GOAWAY it gets.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x1, 0x3, 0x4, 0x6, 0x7
END_HEADERS, ACK = 0x4, 0x1


def frame(kind: int, flags: int, stream: int, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(body))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + body


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman coding (RFC 7541 §6.2.2)."""
    out = b"\x00"
    for text in (name, value):
        data = text.encode()
        assert len(data) < 127, "one-byte length prefix only"
        out += bytes([len(data)]) + data
    return out


class StalledConnection:
    """One TCP connection to ``address`` holding ``calls`` gRPC calls to ``method`` whose request never comes."""

    def __init__(self, address: str, method: str, calls: int) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.reset: list[int] = []  # streams the server reset
        self.goaway = False
        block = b"".join(_literal(n, v) for n, v in (
            (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", address),
            ("content-type", "application/grpc"), ("te", "trailers")))
        data = PREFACE + frame(SETTINGS, 0, 0)
        data += b"".join(frame(HEADERS, END_HEADERS, 2 * n + 1, block) for n in range(calls))
        self.sock.sendall(data)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        self.sock.settimeout(None)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind, flags = buffer[3], buffer[4]
                    stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    body, buffer = buffer[9:9 + length], buffer[9 + length:]
                    if kind == SETTINGS and not flags & ACK:
                        self.sock.sendall(frame(SETTINGS, ACK, 0))
                    elif kind == PING and not flags & ACK:
                        self.sock.sendall(frame(PING, ACK, 0, body))
                    elif kind == RST_STREAM:
                        self.reset.append(stream)
                    elif kind == GOAWAY:
                        self.goaway = True
        except OSError:
            return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader out of recv()
        self.sock.close()
        self._reader.join(5)


class StalledCalls:
    """``connections`` connections of ``per_connection`` stalled calls each, to the given methods in turn."""

    def __init__(self, address: str, methods: list[str], connections: int, per_connection: int) -> None:
        self.held = [StalledConnection(address, methods[n % len(methods)], per_connection)
                     for n in range(connections)]

    @property
    def refused(self) -> int:
        """How many of the stalled calls the server reset or cut off (0 while all are held)."""
        return sum(len(c.reset) for c in self.held) + sum(1 for c in self.held if c.goaway)

    def __enter__(self) -> StalledCalls:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for connection in self.held:
            connection.close()
