"""The Redis keys a site's scheduler and workers share, all under the site's namespace.

Workers never touch the site database: they learn about pauses, drains and cancellations from
these keys, and report heartbeats and results through them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The site's queues by resource type (spec §13), defined with the operator actions that name them.
from protos.actions import QUEUES as QUEUES


@dataclass(frozen=True)
class Keys:
    namespace: str

    @property
    def submissions(self) -> str:
        return f"{self.namespace}:submissions"

    @property
    def results(self) -> str:
        return f"{self.namespace}:results"

    @property
    def controls(self) -> str:
        return f"{self.namespace}:controls"

    def processing(self, source: str) -> str:
        """Where the scheduler holds an item of ``source`` while it applies it."""
        return f"{source}:processing"

    def reply(self, request_id: str) -> str:
        return f"{self.namespace}:reply:{request_id}"

    @property
    def workers(self) -> str:
        """Set of worker names that ever reported."""
        return f"{self.namespace}:workers"

    def worker(self, name: str) -> str:
        return f"{self.namespace}:worker:{name}"

    def drain(self, name: str) -> str:
        """Set while a worker drains; holds ``{"until": unix seconds}``, its deadline."""
        return f"{self.namespace}:drain:{name}"

    def restart(self, name: str) -> str:
        """Set while a worker restarts; holds ``{"undrain": bool}``: whether it comes back taking work."""
        return f"{self.namespace}:restart:{name}"

    def hints(self, tenant_id: str, stage: str) -> str:
        """Hash derivation key -> artifact: what workers derived below the stage level (AAC chunks)."""
        return f"{self.namespace}:hints:{tenant_id}:{stage}"

    def attempts(self, run_id: str) -> str:
        """Hash stage -> its latest attempt, for stages sent more than once: older attempts are stale."""
        return f"{self.namespace}:attempts:{run_id}"

    def abandon(self, name: str) -> str:
        """Set of ``run/stage/attempt`` a worker must stop: the drain deadline passed and they run elsewhere."""
        return f"{self.namespace}:abandon:{name}"

    def completed(self, queue: str) -> str:
        """Sorted set of the queue's stages finished in the last hour, scored by time."""
        return f"{self.namespace}:completed:{queue}"

    def paused(self, queue: str) -> str:
        return f"{self.namespace}:paused:{queue}"

    def cancelled(self, run_id: str) -> str:
        return f"{self.namespace}:cancelled:{run_id}"

    @property
    def scheduler(self) -> str:
        """Hash of the scheduler's own health: ``status`` (ok, or what is unavailable), ``error``, ``since``."""
        return f"{self.namespace}:scheduler"

    def host_state(self, host: str) -> str:
        return f"{self.namespace}:host:{host}"


#: Pushed onto the results list beside a submission or control: the idle scheduler blocks on
#: that list alone, so the marker wakes it; it carries nothing and is dropped.
DOORBELL = "{}"
