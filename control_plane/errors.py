"""The control plane's error hierarchy: one root; the HTTP and gRPC adapters each map it once."""

from __future__ import annotations


class ControlError(Exception):
    """Root of every error the control plane raises on purpose."""


class ControlInputError(ControlError):
    """Raised when the centre is told something it cannot run with; the message names the option and value."""


class Refused(ControlError):
    """Raised when a caller may not do what it asks (another site's id, an unknown token); recorded, never applied."""
