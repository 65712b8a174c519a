"""The pipeline's error hierarchy.

Every error the pipeline raises derives from :class:`PipelineError`, so a caller (the CLI, the
site scheduler) can tell "our failure, with a message fit for an operator" from a bug. The two
subclasses that map onto exit codes are :class:`InputError` (bad input, exit 2) and
:class:`GateBlocked` (a quality or canon gate refused, exit 3).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class InputError(PipelineError):
    """Raised when an input file or artifact is invalid; names file, field, value and expectation."""


class GateBlocked(PipelineError):
    """Raised when a gate refuses to let the run publish; names the gate, the rule and the facts."""

    def __init__(self, gate: str, rule: str, facts: str) -> None:
        self.gate = gate
        self.rule = rule
        self.facts = facts
        super().__init__(f"gate {gate!r} blocked: rule {rule!r}: {facts}")


class MediaError(PipelineError):
    """Raised when ffmpeg, espeak-ng or an image operation fails; carries the tool's own words."""
