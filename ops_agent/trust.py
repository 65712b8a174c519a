"""The trust bundle file as a running agent sees it: reloaded when it changes, never rolled back."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ops_agent.errors import KeyStoreError
from ops_agent.files import write_file
from ops_agent.keys import TrustBundle

log = logging.getLogger(__name__)


class TrustFile:
    """The trust bundle on disk, read again whenever the file changes; a lower version is refused.

    A missing file at start means an empty bundle: every command is refused (UNKNOWN_KEY) until
    one appears. A file that cannot be read keeps the bundle in use and is logged.
    """

    def __init__(self, path: Path, verifier_trust: Callable[[TrustBundle], None], floor_file: Path) -> None:
        self.path = path
        self._install = verifier_trust
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        # The highest version this agent ever trusted, kept beside its nonces: a restart must not
        # reopen a rollback to an older bundle (one that still trusts a revoked key).
        self._floor_file = floor_file
        self._floor = int(floor_file.read_text()) if floor_file.exists() else 0
        self.bundle = TrustBundle(0, ())
        if path.exists():
            bundle = TrustBundle.load(path)  # a broken bundle at start is the operator's to fix
            if bundle.version < self._floor:
                raise KeyStoreError(f"{path}: version {bundle.version} is older than version {self._floor} this "
                                    f"agent has trusted ({floor_file}); refusing the rollback: expected a bundle "
                                    f"of version {self._floor} or later")
            self._adopt(bundle)
            self._seen = self._stat()
        else:
            log.warning("trust bundle %s does not exist: every command is refused until it does", path)
        self._install(self.bundle)

    def _adopt(self, bundle: TrustBundle) -> None:
        self.bundle = bundle
        if bundle.version > self._floor:
            write_file(self._floor_file, f"{bundle.version}\n".encode(), 0o600)
            self._floor = bundle.version

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> None:
        """Reload when the file changed (one ``stat`` when it did not)."""
        seen = self._stat()
        if seen is None or seen == self._seen:
            return
        with self._lock:
            if seen == self._seen:
                return
            self._seen = seen
            try:
                bundle = TrustBundle.load(self.path)
            except KeyStoreError as exc:
                log.error("trust bundle not reloaded, keeping version %s: %s", self.bundle.version, exc)
                return
            if bundle.version < self.bundle.version:
                log.error("trust bundle %s: version %s is older than version %s in use; refusing the rollback",
                          self.path, bundle.version, self.bundle.version)
                return
            if bundle.version == self.bundle.version:
                if bundle != self.bundle:
                    log.error("trust bundle %s changed without a new version (%s); keeping the one in use",
                              self.path, bundle.version)
                return
            self._adopt(bundle)
            self._install(bundle)
            log.info("trust bundle %s version %s loaded: %s", self.path, bundle.version,
                     ", ".join(f"{k.key_id} ({k.state})" for k in bundle.keys) or "no keys")

    def usable_key_ids(self, now: float) -> list[str]:
        return [k.key_id for k in self.bundle.keys if k.refusal(now) is None]
