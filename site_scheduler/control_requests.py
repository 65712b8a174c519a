"""Operator controls as the scheduler receives them: applied one transaction each, always answered.

What each control does is :mod:`site_scheduler.controls`; here it is taken from Redis, refused
if its sender has stopped waiting, applied, and answered on the sender's reply key.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from site_scheduler.controls import apply_control
from site_scheduler.errors import ControlRefused
from site_scheduler.messages import Control, ControlReply
from site_scheduler.results import DATABASE_OUTAGES

if TYPE_CHECKING:
    from site_scheduler.scheduler import Scheduler

log = logging.getLogger(__name__)

#: How long an answer waits for its sender to read it.
REPLY_TTL_S = 60


def handle_control(scheduler: Scheduler, request: Control) -> None:
    with Session(scheduler.engine) as session:
        try:
            if time.time() > request.expires:
                # Its sender stopped waiting and reported it unanswered: applying it now would
                # be a change nobody asked for any more.
                raise ControlRefused(f"{request.action} expired before the site took it; nothing changed")
            with session.begin():
                message = apply_control(scheduler, session, request.action, dict(request.args))
            reply = ControlReply(ok=True, message=message)
        except ControlRefused as exc:
            reply = ControlReply(ok=False, message=str(exc))
        except DATABASE_OUTAGES:
            raise  # the database did not answer: the control stays in Redis and is applied after the outage
        except Exception as exc:
            # A bug must not take the scheduler down; the operator sees it, the log keeps it.
            log.exception("control %s failed", request.action)
            reply = ControlReply(ok=False, message=f"internal error: {exc!r}")
    key = scheduler.keys.reply(request.id)
    pipe = scheduler.redis.pipeline()
    pipe.rpush(key, reply.encode())
    pipe.expire(key, REPLY_TTL_S)
    pipe.execute()
