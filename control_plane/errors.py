"""The control plane's error hierarchy: one root; the HTTP and gRPC adapters each map it once."""

from __future__ import annotations


class ControlError(Exception):
    """Root of every error the control plane raises on purpose."""


class ControlInputError(ControlError):
    """Raised when a caller's input (an option, a field, a name) is invalid; nothing was changed.

    The message names the field, its value and what was expected.
    """


class NotFound(ControlError):
    """Raised when a named user, token or command does not exist; nothing was changed."""


class Conflict(ControlError):
    """Raised when a request contradicts what is recorded (a user that exists, a command already approved)."""


class Unauthenticated(ControlError):
    """Raised when a caller presents no token, or one that is unknown, revoked or of a disabled user."""


class Forbidden(ControlError):
    """Raised when an authenticated caller's role or tenants do not allow what it asked; nothing was changed."""


class Unreachable(ControlError):
    """Raised when the centre's API (or its signer) does not answer; nothing is known to have changed."""


class Refused(ControlError):
    """Raised when a caller may not do what it asks (another site's id, an unknown token); recorded, never applied."""
