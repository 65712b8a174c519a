"""Silences: matchers over an alert's fields plus a time window; an alert matching every matcher sends nothing.

A matcher is ``field=value`` (exact) on one of :data:`MATCH_FIELDS`. Silences are rows of the
fleet database (who made one and why, who removed it and when), so the web process, the CLI and
``alerts serve`` all see the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.errors import ControlInputError
from control_plane.tables import AlertRow, SilenceRow

#: Matcher field -> the alert column it compares.
MATCH_FIELDS = {"type": "alert_type", "severity": "severity", "site": "site_id", "tenant": "tenant_id",
                "host": "host", "run": "run_id", "stage": "stage", "id": "id"}


def parse_matchers(items: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """``["type=host_down", "site=s1"]`` (or a mapping) as a checked mapping; at least one matcher."""
    pairs = list(items.items()) if isinstance(items, Mapping) else []
    if not isinstance(items, Mapping):
        for item in items:
            name, sep, value = item.partition("=")
            if not sep:
                raise ControlInputError(f"matcher: value {item!r}: expected FIELD=VALUE")
            pairs.append((name.strip(), value.strip()))
    matchers: dict[str, str] = {}
    for name, value in pairs:
        if name not in MATCH_FIELDS:
            raise ControlInputError(f"matcher: field {name!r}: expected one of {', '.join(MATCH_FIELDS)}")
        if not isinstance(value, str) or not value or len(value) > 256:
            raise ControlInputError(f"matcher {name}: value {value!r}: expected a non-empty value")
        matchers[name] = value
    if not matchers:
        raise ControlInputError("matchers: none given; expected at least one FIELD=VALUE (a silence of everything "
                                "is a mistake)")
    return matchers


def active_silences(session: Session, now: float) -> Sequence[SilenceRow]:
    return session.scalars(select(SilenceRow).where(SilenceRow.removed_at.is_(None), SilenceRow.starts_at <= now,
                                                    SilenceRow.ends_at > now)).all()


def silence_matches(silence: SilenceRow, alert: AlertRow) -> bool:
    return all(str(getattr(alert, MATCH_FIELDS[name], None)) == value
               for name, value in (silence.matchers or {}).items() if name in MATCH_FIELDS)
