"""A site's artifact store and registry seen by one tenant: how stages keep and find their work.

Every derived artifact is remembered under a key, the sha256 of everything that determines
its bytes (input hashes, parameters, tool versions), so a stage whose key is known and whose
blob is still in the store is skipped. That single rule gives caching, resume after an
interruption, and "edit one line, re-render one shot".
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine

from pipeline.canonical import digest, model_bytes
from pipeline.models import Versioned
from pipeline.registry import Registry, sqlite_url
from pipeline.store import ArtifactStore

V = TypeVar("V", bound=Versioned)

REGISTRY_FILE = "registry.sqlite"


class DerivationHints(Protocol):
    """Where else a derivation may be known: a site worker's registry lives in memory for one
    stage, so without hints every chunk of a mix it encoded before would be encoded again.

    A hint is only a hint: an artifact it names is used only if the store holds it, and the
    same key always derives the same bytes, so a stale or lost hint costs time, never bytes.
    """

    def get(self, tenant_id: str, stage: str, key: str) -> str | None: ...

    def put(self, tenant_id: str, stage: str, key: str, output: str) -> None: ...


class Workspace:
    def __init__(self, root: Path, tenant_id: str, site_id: str, registry_url: str | Engine | None = None,
                 hints: DerivationHints | None = None) -> None:
        self.root = Path(root)
        self.hints = hints
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ArtifactStore(self.root)
        self.registry = Registry(registry_url or sqlite_url(self.root / REGISTRY_FILE))
        self.tenant_id = tenant_id
        self.site_id = site_id
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.registry.close()

    # -- blobs -----------------------------------------------------------------------------

    def path(self, digest_: str) -> Path:
        return self.store.path(self.tenant_id, digest_)

    def has(self, digest_: str) -> bool:
        return self.store.has(self.tenant_id, digest_)

    def put_bytes(
        self,
        data: bytes,
        kind: str,
        parents: list[str],
        params: dict[str, Any] | None = None,
        schema_version: str | None = None,
    ) -> str:
        found = self.store.put_bytes(self.tenant_id, data)
        self.registry.record_artifact(
            tenant_id=self.tenant_id,
            site_id=self.site_id,
            digest=found,
            kind=kind,
            size=len(data),
            schema_version=schema_version,
            parents=parents,
            params=params,
        )
        return found

    def put_document(self, document: Versioned, parents: list[str], params: dict[str, Any] | None = None) -> str:
        return self.put_bytes(model_bytes(document), type(document).__name__, parents, params,
                              schema_version=document.schema_version)

    def load_document(self, digest_: str, cls: type[V]) -> V:
        return cls.model_validate_json(self.store.read_bytes(self.tenant_id, digest_))

    def put_file(
        self,
        source: Path,
        kind: str,
        parents: list[str],
        params: dict[str, Any] | None = None,
        license: dict[str, Any] | None = None,
        owned: bool = False,
    ) -> str:
        found = self.store.put_file(self.tenant_id, source, owned=owned)
        self.registry.record_artifact(
            tenant_id=self.tenant_id,
            site_id=self.site_id,
            digest=found,
            kind=kind,
            size=source.stat().st_size,
            parents=parents,
            params=params,
            license=license,
        )
        return found

    # -- derivations -----------------------------------------------------------------------

    def key(self, stage: str, material: dict[str, Any]) -> str:
        return digest({"stage": stage, **material})

    def lookup(self, stage: str, key: str) -> str | None:
        """The artifact a stage already made for this key, if it is still in the store."""
        found = self.registry.derived(self.tenant_id, key)
        if found is None and self.hints is not None:
            found = self.hints.get(self.tenant_id, stage, key)
            if found is not None and self.has(found):
                self.registry.remember(self.tenant_id, key, stage, found)
        hit = found is not None and self.has(found)
        with self._lock:
            (self.hits if hit else self.misses)[stage] += 1
        return found if hit else None

    def remember(self, stage: str, key: str, output: str) -> None:
        self.registry.remember(self.tenant_id, key, stage, output)
        if self.hints is not None:
            self.hints.put(self.tenant_id, stage, key, output)

    def derive_file(
        self,
        stage: str,
        material: dict[str, Any],
        make: Callable[[Path], None],
        *,
        kind: str,
        parents: list[str],
        suffix: str,
    ) -> tuple[str, bool]:
        """Return the artifact for ``material``, making it with ``make(target)`` on a miss.

        ``make`` writes one finished file; it is stored only when ``make`` returns, so an
        interrupted stage leaves nothing behind but its scratch folder.
        """
        key = self.key(stage, material)
        found = self.lookup(stage, key)
        if found is not None:
            return found, True
        scratch = self.store.scratch()
        try:
            target = scratch / f"output{suffix}"
            make(target)
            made = self.put_file(target, kind, parents, params={"stage": stage, "key": key}, owned=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.remember(stage, key, made)
        return made, False

    def derive_document(
        self, stage: str, material: dict[str, Any], make: Callable[[], V], cls: type[V], parents: list[str]
    ) -> tuple[str, V, bool]:
        key = self.key(stage, material)
        found = self.lookup(stage, key)
        if found is not None:
            return found, self.load_document(found, cls), True
        document = make()
        made = self.put_document(document, parents, params={"stage": stage, "key": key})
        self.remember(stage, key, made)
        return made, document, False
