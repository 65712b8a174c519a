"""Where a site keeps its things, and ``site.json``, which lets other commands find them.

``cinefleet site serve`` writes ``DIR/site.json`` once its Redis and database are up; every
other site command reads it from ``--data-dir`` and refuses a file that names another site.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import platformdirs

from pipeline.store import atomic_write
from site_scheduler.errors import SiteNotFound

SITE_FILE = "site.json"


def default_data_dir(site_id: str) -> Path:
    return Path(platformdirs.user_data_dir("cinefleet")) / "sites" / site_id


@dataclass(frozen=True)
class SiteEndpoints:
    site_id: str
    data_dir: str
    redis_url: str
    db_url: str
    store: str
    scheduler_pid: int
    api_url: str | None = None  # the loopback HTTP API, when `site serve --api-port` started one

    @property
    def namespace(self) -> str:
        """The dramatiq namespace: one Redis may serve several sites without mixing their queues."""
        return f"cinefleet-{self.site_id}"


def sqlite_url_for(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'site.sqlite').resolve()}"


def write_endpoints(endpoints: SiteEndpoints) -> None:
    data = json.dumps(asdict(endpoints), indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(Path(endpoints.data_dir) / SITE_FILE, data)


def read_endpoints(site_id: str, data_dir: Path) -> SiteEndpoints:
    path = data_dir / SITE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SiteNotFound(f"{path}: no such file; is `cinefleet site serve --site {site_id}` running?") from None
    except json.JSONDecodeError as exc:
        raise SiteNotFound(f"{path}: malformed ({exc.msg}); restart the site to rewrite it") from None
    known = {f.name for f in fields(SiteEndpoints)}
    # A newer site may write more than this reader knows; what it knows is enough to reach the site.
    endpoints = SiteEndpoints(**{key: value for key, value in data.items() if key in known})
    if endpoints.site_id != site_id:
        raise SiteNotFound(f"{path}: belongs to site {endpoints.site_id!r}, not {site_id!r}")
    return endpoints


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
