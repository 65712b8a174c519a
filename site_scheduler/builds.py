"""The media builds a site pins, so that no episode and no cached clip is made by two builds.

Another ffmpeg or espeak-ng build encodes other bytes from the same inputs, and a media
stage's cache key names the builds its render plan recorded. A worker with other builds would
make clips its key does not describe, and every later run would reuse them (issue 9). So the
site pins the builds its first ``site serve`` found (``--repin-builds`` replaces them), keeps
them in its database and hands them to its workers in ``site.json``; a worker whose builds
differ says so in its heartbeat and consumes only the queues no build-dependent kind runs on.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.errors import MediaError
from pipeline.kinds import KINDS
from pipeline.steps import BUILDS
from site_scheduler.keys import QUEUES
from site_scheduler.tables import PinnedBuildRow

log = logging.getLogger(__name__)

#: How each tool's build is named to an operator.
LABELS = {"ffmpeg": "ffmpeg build", "voice": "voice engine"}


def own_builds() -> dict[str, str]:
    """This machine's build of each tool; one it cannot run is ``unavailable: why``, which matches no pin."""
    found = {}
    for tool, read in BUILDS.items():
        try:
            found[tool] = read()
        except MediaError as error:
            found[tool] = f"unavailable: {error}"
    return found


def pin_builds(engine: Engine, site_id: str, seen: dict[str, str], *, repin: bool = False) -> dict[str, str]:
    """The site's pinned builds: those recorded, or ``seen`` for a tool none is recorded for (or all, ``repin``).

    A build this process could not read is never pinned: it would refuse every worker.
    """
    with Session(engine) as session, session.begin():
        rows = {row.tool: row for row in session.scalars(select(PinnedBuildRow))}
        for tool, build in seen.items():
            if build.startswith("unavailable:"):
                log.warning("no %s pinned: %s", LABELS[tool], build)
                continue
            row = rows.get(tool)
            if row is None:
                rows[tool] = row = PinnedBuildRow(tool=tool, site_id=site_id, build=build, pinned_at=time.time())
                session.add(row)
                log.info("pinned the site's %s: %s", LABELS[tool], build)
            elif row.build != build and repin:
                log.warning("re-pinned the site's %s: %s (was %s)", LABELS[tool], build, row.build)
                row.build, row.pinned_at = build, time.time()
            elif row.build != build:
                log.warning("this host's %s %r differs from the site's pinned %r; workers like it take no media "
                            "work (site serve --repin-builds pins it)", LABELS[tool], build, row.build)
        return {tool: row.build for tool, row in sorted(rows.items())}


def refusal(own: dict[str, str], pinned: dict[str, str]) -> str | None:
    """Why a worker with builds ``own`` must take no build-dependent stage at a site that pinned ``pinned``."""
    for tool, build in sorted(pinned.items()):
        if own.get(tool) != build:
            return f"{LABELS.get(tool, tool)} {own.get(tool)!r} differs from the site's pinned {build!r}"
    return None


def build_free_queues() -> frozenset[str]:
    """The queues no build-dependent stage kind runs on: all a worker with other builds may consume."""
    return frozenset(QUEUES) - {kind.queue for kind in KINDS.values() if kind.builds}
