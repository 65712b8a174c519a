"""The site's error hierarchy: one root, and the refusals an operator sees."""

from __future__ import annotations


class SiteError(Exception):
    """Root of every error the site raises on purpose."""


class SiteNotFound(SiteError):
    """Raised when no site.json is found in the data folder, or it belongs to another site."""


class ControlRefused(SiteError):
    """Raised when an operator control names something that does not exist or is in the wrong state.

    Nothing has changed when it is raised.
    """
