"""The site's error hierarchy: one root, the refusals an operator sees, and how a run that did not complete ended.

Each class says what happened, not how it is reported: the site API maps them to HTTP statuses
(``site_scheduler.api.ERROR_STATUS``) and ``cinefleet`` to exit codes (``cinefleet.cli.EXIT_CODES``).
"""

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


class SiteUnreachable(SiteError):
    """Raised when the site does not answer: its Redis or database cannot be reached, or the scheduler
    did not take a request in time. Whether anything changed is said in the message."""


class RunNotCompleted(SiteError):
    """Raised by ``cinefleet submit --wait`` when the run it waited for ended other than completed."""

    def __init__(self, run_id: str, status: str, detail: str) -> None:
        super().__init__(f"run {run_id} {status}" + (f": {detail}" if detail else ""))
        self.run_id, self.status, self.detail = run_id, status, detail


class RunFailed(RunNotCompleted):
    """The run failed: a stage failed and was not retried."""


class RunBlocked(RunNotCompleted):
    """A gate blocked the run from publishing; the message names the rule and the facts."""


class RunCancelled(RunNotCompleted):
    """An operator cancelled the run."""


#: The error for each way a run can end other than completed (any other status is a failure).
RUN_ENDINGS: dict[str, type[RunNotCompleted]] = {"failed": RunFailed, "blocked": RunBlocked,
                                                 "cancelled": RunCancelled}


class SubmissionRefused(SiteError, InputError):
    """Raised when a submitted project is bad input; names file, field, value and expectation.

    It is an :class:`~pipeline.errors.InputError` too, so a caller that maps bad input (exit 2,
    HTTP 422) maps it the same way. Nothing was sent.
    """
