"""Driving the dashboard as a person does: signing in over HTTP, and a real headless Chromium.

Test support shipped in the package, as :mod:`control_plane.testing` is, so the browser tests, the
screenshots and ``cinefleet bench dashboard`` sign in the same way. The browser is the system's
Chromium (``apt-get install chromium``, which ``scripts/setup --test`` does) driven by Playwright
with ``executable_path``: Playwright's own browser download is never used (no network here, and
the system build is the one an operator's machine has). Playwright is a test dependency, so it is
imported only when a browser starts. Nothing here imports pytest; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from playwright.sync_api import Browser as PlaywrightBrowser
    from playwright.sync_api import Page, Playwright

#: Names the system Chromium goes by (Debian: ``chromium``); ``CINEFLEET_CHROMIUM`` overrides them.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
CHROMIUM_ENV = "CINEFLEET_CHROMIUM"
#: The viewports the dashboard is made for.
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Milliseconds any one browser step may wait (navigation, a selector, an expectation).
STEP_TIMEOUT_MS = 20_000
_NONCE = re.compile(r'name="login_nonce" value="([^"]+)"')


class ChromiumMissing(RuntimeError):
    """Raised when no system Chromium is found; says how to install one."""


def chromium_path() -> str:
    """The system Chromium's executable: ``$CINEFLEET_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES` on PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        if not Path(named).is_file() or not os.access(named, os.X_OK):
            raise ChromiumMissing(f"{CHROMIUM_ENV}: value {named!r}: expected an executable Chromium")
        return named
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}): install it with "
                          f"`apt-get install chromium` (scripts/setup --test does) or set {CHROMIUM_ENV}")


def sign_in(client: httpx.Client, token: str) -> None:
    """Sign ``client`` in with an API token through the login form (its double-submit cookie included).

    Raises:
        AssertionError: the centre did not accept the sign-in.
    """
    form = client.get("/login")
    found = _NONCE.search(form.text)
    assert form.status_code == 200 and found, f"GET /login: {form.status_code}: no login form"
    answer = client.post("/login", data={"token": token, "login_nonce": found.group(1), "next": "/"})
    assert answer.status_code == 303 and "cinefleet_session" in client.cookies, (
        f"POST /login: {answer.status_code}: {answer.text[:300]}")


class Browser:
    """A headless system Chromium for one test module; :meth:`page` opens a fresh, signed-out tab."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright  # a test dependency: only when a browser starts

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        except BaseException:
            self._playwright.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    @property
    def version(self) -> str:
        assert self._browser is not None, "the browser is not started"
        return self._browser.version

    def page(self, viewport: dict[str, int] | None = None, timezone: str = "Europe/Berlin") -> Page:
        """A new tab in its own context (its own cookies), with ``viewport`` (default: the laptop)."""
        assert self._browser is not None, "the browser is not started"
        context = self._browser.new_context(base_url=self.base_url, viewport=viewport or LAPTOP,  # type: ignore[arg-type]
                                            timezone_id=timezone)
        context.set_default_timeout(STEP_TIMEOUT_MS)
        return context.new_page()

    def signed_in(self, token: str, viewport: dict[str, int] | None = None) -> Page:
        """A new tab signed in with ``token`` through the login page, as a person does, left on the fleet page."""
        page = self.page(viewport)
        page.goto("/login")
        page.fill("input[name=token]", token)
        page.click(".login form button[type=submit]")
        page.wait_for_url(re.compile(r".*/$"))
        return page


def horizontal_overflow(page: Page) -> dict[str, Any]:
    """The document's scroll and client widths: a page scrolls sideways when the first exceeds the second."""
    widths: dict[str, Any] = page.evaluate(
        "() => ({scrollWidth: document.documentElement.scrollWidth, "
        "clientWidth: document.documentElement.clientWidth, path: location.pathname})")
    return widths
