"""The control plane's error hierarchy: one root; the HTTP and gRPC adapters each map it once."""

from __future__ import annotations


class ControlError(Exception):
    """Root of every error the control plane raises on purpose."""
