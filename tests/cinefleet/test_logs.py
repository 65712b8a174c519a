"""Every cinefleet process logs JSON lines with secrets masked at the writer."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from cinefleet import logs
from pipeline.testing import wait_for


def test_a_record_is_one_json_line_with_its_secrets_masked() -> None:
    stream = io.StringIO()
    logs.configure(stream=stream)
    try:
        log = logging.getLogger("cinefleet.test")
        log.info("connecting to %s and %s", "postgresql://render:pa55word@db:5432/site",
                 "redis://:hunter2@127.0.0.1:6379/0")
        log.warning('sent {"token": "abc123", "actor": "ops"} with Authorization: Bearer eyJhbGciOi.x.y')
        try:
            raise ValueError("password=swordfish")
        except ValueError:
            log.exception("failed with key -----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----")
    finally:
        logging.getLogger().handlers.clear()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["level"] for e in entries] == ["info", "warning", "error"]
    assert entries[0]["logger"] == "cinefleet.test" and entries[0]["pid"] == os.getpid()
    text = stream.getvalue()
    for secret in ("pa55word", "hunter2", "abc123", "eyJhbGciOi", "swordfish", "MC4CAQAw"):
        assert secret not in text
    assert "postgresql://render:***@db:5432/site" in entries[0]["message"]
    assert '"actor": "ops"' in entries[1]["message"], "only the secret is masked"


def test_a_site_logs_json_without_the_password_of_its_redis_url(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the scheduler keeps retrying
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "cinefleet", "site", "serve", "--site", "logs",
                                    "--data-dir", str(tmp_path / "site"), "--redis-url", url],
                                   stderr=handle, start_new_session=True)

    def says_where_it_schedules() -> bool:
        assert process.poll() is None, f"the site exited {process.returncode}: {log.read_text()}"
        return "scheduling on" in log.read_text()

    try:
        wait_for(says_where_it_schedules, "the site to log the Redis it schedules on", timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    stderr = log.read_text()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    scheduling = [e for e in lines if "scheduling on" in e["message"]]
    assert scheduling and f"redis://:***@127.0.0.1:{port}/0" in scheduling[0]["message"]
    assert "s3cret-pw" not in stderr
    assert "s3cret-pw" not in (tmp_path / "site" / "site.json").read_text(), "site.json keeps no secret"
