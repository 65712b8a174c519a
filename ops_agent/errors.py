"""The ops agent's error hierarchy: one root, the refusal of a command, and bad key material on disk."""

from __future__ import annotations

from protos import ops_agent_pb2


def show_value(value: object) -> str:
    """A value as an error message quotes it: its repr, cut to 80 characters (values may come from a sender)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class AgentError(Exception):
    """Root of every error the ops agent raises on purpose."""


class Rejected(AgentError):
    """Raised when a signed command fails verification; nothing has run.

    ``reason`` is an ``ops_agent_pb2.RejectReason`` value, so the result sent back and the counters agree
    with the contract. ``detail`` is a sentence naming the field, its value and what was expected; it never
    carries key material or signature bytes, because it is logged and returned to the caller.
    """

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(f"{ops_agent_pb2.RejectReason.Name(reason)}: {detail}")
        self.reason = reason
        self.detail = detail


class KeyStoreError(AgentError):
    """Raised when a key file or trust bundle is malformed or an operation on it makes no sense.

    The message names the file, the field, its value (never a private key's) and what was expected.
    Nothing has been written when it is raised.
    """


class AuditLogError(AgentError):
    """Raised when an audit log cannot be opened for appending (unreadable tail, or another writer holds it)."""
