"""Only the signed path changes a site: its Redis, folder and files are closed to other local users."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from site_scheduler.config import SiteEndpoints, read_endpoints, write_endpoints
from site_scheduler.testing import SITE, Site


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_and_everything_in_it_is_private(site: Site) -> None:
    site.cli("site", "pause-queue", "cpu_queue")  # something written by the scheduler after start
    assert _mode(site.data_dir) == 0o700
    wide = [(str(p), oct(_mode(p))) for p in site.data_dir.rglob("*")
            if (p.is_file() and _mode(p) & 0o077) or (p.is_dir() and _mode(p) & 0o077)]
    assert wide == [], "files and folders of a site are for its own user only"
    text = (site.data_dir / "site.json").read_text()
    password = (site.data_dir / "redis" / "password").read_text().strip()
    assert password not in text and len(password) >= 32
    assert json.loads(text)["redis_url"].startswith("redis://site@127.0.0.1:")


def test_the_sites_redis_needs_its_password_and_refuses_admin_commands(site: Site) -> None:
    url = site.client.endpoints.redis_url
    port = url.rsplit(":", 1)[1].split("/")[0]
    anonymous = redis.Redis(host="127.0.0.1", port=int(port), socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.lpush("cinefleet-t1:controls", "{}")
    guessed = redis.Redis(host="127.0.0.1", port=int(port), username="site", password="guess", socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        guessed.ping()
    insider = redis.Redis.from_url(url, socket_timeout=5)
    assert insider.ping()
    for command in (("CONFIG", "SET", "dir", "/tmp"), ("SAVE",), ("BGSAVE",), ("DEBUG", "SLEEP", "0"),
                    ("FLUSHALL",), ("SHUTDOWN",), ("ACL", "LIST"), ("MODULE", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            insider.execute_command(*command)
    assert site.cli("site", "queues").returncode == 0, "the site still works"


def test_a_second_scheduler_on_the_same_folder_is_refused(site: Site) -> None:
    assert site.scheduler is not None
    second = subprocess.run([sys.executable, "-m", "cinefleet", "site", "serve", "--site", SITE, "--data-dir",
                             str(site.data_dir)], capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert f"already served by the scheduler with pid {site.scheduler.pid}" in second.stderr
    assert site.cli("site", "pause-queue", "media_queue").returncode == 0, "the first one still serves"
    assert site.client.endpoints.scheduler_pid == site.scheduler.pid, "site.json was not rewritten"


def test_url_passwords_stay_out_of_site_json(tmp_path: Path) -> None:
    endpoints = SiteEndpoints(site_id="s", data_dir=str(tmp_path), redis_url="redis://site:r3dis@127.0.0.1:1/0",
                              db_url="postgresql+psycopg://cf:pg%2Fpw@db.example:5432/site", store="x",
                              scheduler_pid=1)
    write_endpoints(endpoints)
    text = (tmp_path / "site.json").read_text()
    assert "r3dis" not in text and "pg%2Fpw" not in text
    assert json.loads(text)["db_url"] == "postgresql+psycopg://cf@db.example:5432/site"
    assert _mode(tmp_path / "site.json") == 0o600 and _mode(tmp_path / "secrets.json") == 0o600
    assert read_endpoints("s", tmp_path) == endpoints, "a reader gets the whole URLs back"
