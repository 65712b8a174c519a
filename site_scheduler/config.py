"""Where a site keeps its things, and ``site.json``, which lets other commands find them.

``cinefleet site serve`` writes ``DIR/site.json`` once its Redis and database are up; every
other site command reads it from ``--data-dir`` and refuses a file that names another site.

``site.json`` holds no secret: the passwords of the Redis and database URLs go to
``DIR/secrets.json`` (0600), and a reader puts them back; the HTTP API's bearer token is
``DIR/api.token`` (0600). The data folder is 0700, so only the site's own user reaches any of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from pipeline.errors import InputError
from pipeline.store import atomic_write
from site_scheduler.errors import SiteNotFound

SITE_FILE = "site.json"
SECRETS_FILE = "secrets.json"
#: The endpoints whose URLs may carry a password.
SECRET_URLS = ("redis_url", "db_url")
#: The HTTP API's bearer token: whoever can read it may call the API, as whoever can read
#: ``secrets.json`` may talk to Redis.
TOKEN_FILE = "api.token"
#: The tenant a site renders for unless ``site serve --tenant`` says otherwise.
DEFAULT_TENANT = "default"
#: How long a worker's heartbeat lives in Redis unless ``site serve --heartbeat-ttl`` says otherwise: a
#: worker unheard for this long is offline (its stages are sent again) and gives up its own job.
DEFAULT_HEARTBEAT_TTL_S = 10.0
#: The bounds of ``--heartbeat-ttl``: at least four of the workers' half-second beats must fit in it.
HEARTBEAT_TTL_RANGE_S = (2.0, 3600.0)
#: How long the site's processes wait on one Redis reply before they call it stalled (redis-py's
#: socket timeout) unless ``site serve --redis-timeout`` says otherwise.
DEFAULT_REDIS_TIMEOUT_S = 5.0
REDIS_TIMEOUT_RANGE_S = (0.5, 60.0)


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
    #: Every run submitted to this site renders for this tenant, whatever its project file claims:
    #: the tenant is who submits, so a project cannot share (or poison) another tenant's cache.
    tenant: str = DEFAULT_TENANT
    #: The ffmpeg and espeak-ng builds the site pinned (tool -> build, ``site_scheduler.builds``): a
    #: worker with others takes no build-dependent stage. Empty from a site that pinned none.
    builds: dict[str, str] = field(default_factory=dict)
    #: ``site serve --heartbeat-ttl``: every worker of the site beats with this TTL.
    heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S
    #: ``site serve --redis-timeout``: the socket timeout of every Redis client of the site.
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S

    @property
    def namespace(self) -> str:
        """The dramatiq namespace: one Redis may serve several sites without mixing their queues."""
        return f"cinefleet-{self.site_id}"


def sqlite_url_for(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'site.sqlite').resolve()}"


def make_data_dir(data_dir: Path) -> None:
    """Create the site's folder 0700 (and tighten one that exists): everything in it is the site's."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it can name a tenant (it becomes a folder of the store); else an InputError."""
    from pipeline.models.canon import ID_PATTERN  # the models: only ``site serve`` checks a tenant

    if not re.fullmatch(ID_PATTERN, tenant) or len(tenant) > 64:
        raise InputError(f"--tenant: value {tenant!r}: expected 1 to 64 of a-z, 0-9, '_' and '-', "
                         "starting with a letter or digit")
    return tenant


def check_seconds(option: str, value: float, bounds: tuple[float, float]) -> float:
    """``value`` if it lies within ``bounds``; else an InputError naming ``option``."""
    low, high = bounds
    if not low <= value <= high:
        raise InputError(f"{option}: value {value!r}: expected seconds between {low:g} and {high:g}")
    return value


def ensure_api_token(data_dir: Path) -> str:
    """The site's API token, made (random, 0600) the first time; kept across restarts so clients keep working."""
    path = data_dir / TOKEN_FILE
    if path.is_file():
        os.chmod(path, 0o600)  # tighten a copy restored with looser modes, as make_data_dir does the folder
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    atomic_write(path, token.encode() + b"\n", mode=0o600)
    return token


def read_api_token(data_dir: Path) -> str:
    """The token a program on the site host sends to the API (``Authorization: Bearer TOKEN``)."""
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SiteNotFound(f"{path}: no such file; start the site with `cinefleet site serve --api-port`") from None
    except PermissionError:
        raise SiteNotFound(f"{path}: not readable by this user; call the API as the site's own user") from None


def without_password(url: str) -> str:
    """``url`` with any password replaced by nothing (the user name stays, to say who connects)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def write_endpoints(endpoints: SiteEndpoints) -> None:
    folder = Path(endpoints.data_dir)
    secret = {name: getattr(endpoints, name) for name in SECRET_URLS
              if without_password(getattr(endpoints, name)) != getattr(endpoints, name)}
    # Typed Any: these are str fields (SECRET_URLS), which dataclasses.replace cannot tell from a dict's keys.
    bare: dict[str, Any] = {name: without_password(url) for name, url in secret.items()}
    public = dataclasses.replace(endpoints, **bare)
    atomic_write(folder / SECRETS_FILE, json.dumps(secret, sort_keys=True).encode() + b"\n", mode=0o600)
    data = json.dumps(asdict(public), indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(folder / SITE_FILE, data, mode=0o600)


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
    secrets: dict[str, Any] = _secrets(data_dir / SECRETS_FILE)  # str fields, as above
    return dataclasses.replace(endpoints, **secrets)


def _secrets(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return {}  # written by a site that had no secret to keep
    except PermissionError:
        raise SiteNotFound(f"{path}: not readable by this user; run site commands as the site's own user") from None
    except json.JSONDecodeError as exc:
        raise SiteNotFound(f"{path}: malformed ({exc.msg}); restart the site to rewrite it") from None
    return {name: str(found[name]) for name in SECRET_URLS if name in found}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
