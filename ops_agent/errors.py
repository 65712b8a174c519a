"""The ops agent's error hierarchy: one root, the refusal of a command, bad input, and what else goes wrong.

Each class says what happened, not how a transport reports it: the agent's command service turns
them into a ``CommandResult`` outcome (``ops_agent.service``) and ``cinefleet`` into an exit code
(``cinefleet.cli.EXIT_CODES``), each in one place.
"""

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

    def __init__(self, reason: ops_agent_pb2.RejectReason, detail: str) -> None:
        super().__init__(f"{ops_agent_pb2.RejectReason.Name(reason)}: {detail}")
        self.reason = reason
        self.detail = detail


class AgentInputError(AgentError):
    """Raised when an operator's input (an option, a file, a spec) is invalid; nothing was changed or sent.

    The message names the file or option, the field, its value and what was expected.
    """


class CommandFailed(AgentError):
    """Raised by ``cinefleet ops`` when the agent verified a command but could not carry it out."""


class AuditChainBroken(AgentError):
    """Raised when an audit log's hash chain shows an edited, deleted or reordered entry."""


class KeyStoreError(AgentInputError):
    """Raised when a key file or trust bundle is malformed or an operation on it makes no sense.

    The message names the file, the field, its value (never a private key's) and what was expected.
    Nothing has been written when it is raised.
    """


class AuditLogError(AgentError):
    """Raised when an audit log cannot be opened for appending (unreadable tail, or another writer holds it)."""


class AuditUnavailable(AgentError):
    """Raised when an audit entry cannot be written (a full or failing volume); nothing was executed.

    The message says why in the system's words, never the log's path: it is sent to the caller,
    which gets a gRPC ``UNAVAILABLE`` and may send the same command again later.
    """
