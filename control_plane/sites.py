"""Which site may push: per-site tokens, kept only as hashes, and the record of refused calls.

``cinefleet control site add SITE`` makes a random token, stores its sha256 and prints it once;
the site's shipper and its agents send it as ``authorization: Bearer TOKEN``. A call for a
site id whose hash does not match is refused and recorded in the hash-chained audit (kind
``refused``), naming the site the token belongs to when it is another's; a token given or replaced
is an audit row too (kind ``token``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from control_plane.audit import AuditLog, writing
from control_plane.errors import ControlInputError, Refused
from control_plane.tables import SiteRow

_SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_site_id(site_id: str) -> None:
    if not _SITE_ID.fullmatch(site_id):
        raise ControlInputError(f"site: value {site_id!r}: expected 1-64 letters, digits, '.', '_' or '-', starting "
                                "with a letter or digit")


def add_site(engine: Engine, site_id: str, now: float | None = None) -> tuple[str, bool]:
    """Give ``site_id`` a new push token; returns it (shown once, never stored) and whether one was replaced."""
    check_site_id(site_id)
    token = secrets.token_urlsafe(32)
    now = time.time() if now is None else now
    sites = SiteRow.__table__
    with writing(engine) as connection:  # the token and its audit row commit together
        held = connection.execute(select(sites.c.token_hash).where(sites.c.site_id == site_id)).first()
        replaced = held is not None and held.token_hash is not None
        if held is None:
            connection.execute(insert(sites).values(site_id=site_id, cursor=0, first_seen_at=now, site_head=0,
                                                    applied_total=0, events_per_s=0.0, token_hash=token_hash(token)))
        else:
            connection.execute(update(sites).where(sites.c.site_id == site_id).values(token_hash=token_hash(token)))
        AuditLog().append(connection, "cli", "token", f"site {site_id}", {"push_token": "replaced" if replaced
                                                                          else "created"})
    return token, replaced


class Gate:
    """Decides whether a call's token speaks for the site id it claims; refusals are recorded."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.audit = engine, AuditLog()

    def admit(self, site_id: str, token: str | None, method: str, peer: str) -> None:
        """Return if ``token`` is ``site_id``'s; else record the refusal and raise :class:`Refused`."""
        digest = token_hash(token) if token else None
        with self.engine.connect() as connection:  # Core, not the ORM: this runs on every push and report
            expected = connection.execute(select(SiteRow.token_hash).where(SiteRow.site_id == site_id)).scalar()
            if digest is not None and expected is not None and hmac.compare_digest(digest, expected):
                return
            owner = (connection.execute(select(SiteRow.site_id).where(SiteRow.token_hash == digest)).scalar()
                     if digest is not None else None)
        reason = ("no token" if digest is None
                  else f"the token is site {owner}'s, not site {site_id}'s" if owner is not None
                  else f"site {site_id} has no token (cinefleet control site add {site_id})" if expected is None
                  else f"the token is not site {site_id}'s")
        with writing(self.engine) as connection:
            self.audit.append(connection, f"site {owner}" if owner is not None else "anonymous", "refused",
                              f"{method} for site {site_id[:64]}", {"peer": peer[:255], "reason": reason})
        raise Refused(f"{method} for site {site_id!r} refused: {reason}")
