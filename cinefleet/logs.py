"""Logging for every cinefleet process: one JSON object per line on stderr, secrets redacted.

The components only call ``logging.getLogger(__name__)``; the composition root decides how
records are written. Redaction happens here, at the writer, so a secret that reaches a log
call anyway (a database URL with its password, a PEM key, a bearer token) is masked whatever
module logged it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import TextIO

#: What a secret looks like in text, and what it becomes.
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host (Redis, PostgreSQL, HTTP URLs)
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@\s/]+)@"), r"\g<head>:***@"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
     "[private key redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"""(?i)(["']?\b(?:password|passwd|secret|token|private_key|api_key)\b["']?\s*[:=]\s*)"""
                r"""("[^"]*"|'[^']*'|[^\s,}]+)"""), r"\1***"),
)
#: Chatty libraries kept to warnings.
QUIET = ("alembic", "dramatiq.worker", "uvicorn.access")


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "pid"[, "exception"]}``, redacted, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route every logger to one JSON handler on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
