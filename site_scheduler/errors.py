"""The site's error hierarchy: one root, and the refusals an operator sees."""

from __future__ import annotations

from pipeline.errors import InputError


class SiteError(Exception):
    """Root of every error the site raises on purpose."""


class SiteNotFound(SiteError):
    """Raised when no site.json is found in the data folder, or it belongs to another site."""


class ControlRefused(SiteError):
    """Raised when an operator control names something that does not exist or is in the wrong state.

    Nothing has changed when it is raised.
    """


class SiteUnavailable(SiteError):
    """Raised when the site's Redis, database or store cannot be reached, or a request went unanswered."""


class SubmissionRefused(SiteError, InputError):
    """Raised when a submitted project is bad input; names file, field, value and expectation.

    It is an :class:`~pipeline.errors.InputError` too, so a caller that maps bad input (exit 2,
    HTTP 422) maps it the same way. Nothing was sent.
    """
