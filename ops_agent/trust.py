"""The trust bundle file as a running agent sees it: reloaded when it changes, never rolled back.

The agent keeps a floor beside its nonces: the version *and the hash* of the newest bundle it ever
trusted. A version alone is not enough: a bundle of the same version with other content (one that
un-revokes a key) would be adopted after a restart, and the genuine one refused from then on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops_agent.errors import KeyStoreError, show_value
from ops_agent.files import write_file
from ops_agent.keys import TrustBundle

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Floor:
    """The newest bundle this agent has trusted: its version, and its hash (None in a floor from before hashes)."""

    version: int
    sha256: str | None

    @classmethod
    def read(cls, path: Path) -> Floor:
        """The floor in ``path``; none (version 0) when the agent never trusted a bundle.

        A floor file of an older agent holds the version alone; its hash is bound at the next adoption.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(0, None)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"{path}: cannot read the trust floor: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, int) and not isinstance(data, bool) and data >= 0:
            return cls(data, None)
        if isinstance(data, dict):
            version, sha256 = data.get("version"), data.get("sha256")
            if (isinstance(version, int) and not isinstance(version, bool) and version >= 1
                    and isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
                return cls(version, sha256)
        raise KeyStoreError(f"{path}: value {show_value(text)}: expected the trust floor this agent writes "
                            '({"version": N, "sha256": "<64 hex>"}); restore it or remove it knowingly')

    def write(self, path: Path) -> None:
        write_file(path, (json.dumps({"version": self.version, "sha256": self.sha256}) + "\n").encode(), 0o600)

    def refusal(self, bundle: TrustBundle) -> str | None:
        """Why ``bundle`` would be a rollback below this floor, or None when it may be trusted."""
        if bundle.version < self.version:
            return (f"version {bundle.version} is older than version {self.version} this agent has trusted; "
                    f"refusing the rollback: expected a bundle of version {self.version} or later")
        if bundle.version == self.version and self.sha256 is not None and bundle.sha256 != self.sha256:
            return (f"version {bundle.version} has other content (sha256 {bundle.sha256[:16]}...) than the version "
                    f"{self.version} this agent has trusted (sha256 {self.sha256[:16]}...); refusing it: expected "
                    "that same bundle, or any change as a new version")
        return None


class TrustFile:
    """The trust bundle on disk, read again whenever the file changes; a rollback is refused.

    A missing file at start means an empty bundle: every command is refused (UNKNOWN_KEY) until
    one appears. At start, a bundle below the floor (older, or the same version with other content)
    or a malformed one stops the agent; while running, each is logged as an error and the bundle in
    use is kept.
    """

    def __init__(self, path: Path, verifier_trust: Callable[[TrustBundle], None], floor_file: Path) -> None:
        self.path = path
        self._install = verifier_trust
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._floor_file = floor_file
        self._floor = Floor.read(floor_file)
        self.bundle = TrustBundle(0, ())
        #: Why the bundle file on disk is not the one in use (it was refused), or None.
        self.problem: str | None = None
        if path.exists():
            bundle = TrustBundle.load(path)  # a broken bundle at start is the operator's to fix
            refusal = self._floor.refusal(bundle)
            if refusal is not None:
                raise KeyStoreError(f"{path}: {refusal} ({floor_file})")
            self._adopt(bundle)
            self._seen = self._stat()
        else:
            log.warning("trust bundle %s does not exist: every command is refused until it does", path)
        self._install(self.bundle)

    def _adopt(self, bundle: TrustBundle) -> None:
        self.bundle = bundle
        if bundle.version > self._floor.version or self._floor.sha256 is None:
            floor = Floor(bundle.version, bundle.sha256)
            floor.write(self._floor_file)
            self._floor = floor

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
                self._refused(str(exc))
                return
            if bundle.sha256 == self.bundle.sha256:
                self.problem = None
                return  # the same bundle saved again (or the genuine one put back)
            refusal = self._floor.refusal(bundle)
            if refusal is not None:
                self._refused(f"{self.path}: {refusal}")
                return
            self.problem = None
            self._adopt(bundle)
            self._install(bundle)
            log.info("trust bundle %s version %s loaded: %s", self.path, bundle.version,
                     ", ".join(f"{k.key_id} ({k.state})" for k in bundle.keys) or "no keys")

    def _refused(self, why: str) -> None:
        """Keep the bundle in use, say so loudly, and let health report it until the file is fixed."""
        self.problem = f"trust bundle on disk refused, version {self.bundle.version} still in use: {why}"
        log.error("trust bundle REFUSED, keeping version %s in use: %s", self.bundle.version, why)

    def usable_key_ids(self, now: float) -> list[str]:
        return [k.key_id for k in self.bundle.keys if k.refusal(now) is None]
