"""What the two FastStream workers (deployer, reaper) share about consuming messages.

Their handlers are typed with the message models of :mod:`messages`, so FastStream
validates every body and the AsyncAPI document it generates (``docs/asyncapi/``) shows
the real payloads. A body that does not validate will never validate: it is rejected
(JetStream ``TERM``) at once instead of being redelivered until ``max_deliver``.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import RejectMessage
from faststream.nats import NatsBroker
from pydantic import ValidationError

log = logging.getLogger(__name__)


class RejectWhatDoesNotParse(BaseMiddleware):
    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            log.error(
                "rejecting a message that does not match its schema",
                extra={"subject": getattr(msg.raw_message, "subject", ""), "error": str(exc)},
            )
            raise RejectMessage() from exc


def make_broker(nats_url: str) -> NatsBroker:
    """A FastStream NATS broker the way both workers want it: reconnecting for ever (a NATS
    restart must not take a worker down), logging through our JSON handler with the
    per-message lines at DEBUG, and rejecting bodies that do not parse."""
    return NatsBroker(
        nats_url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
        middlewares=[RejectWhatDoesNotParse],
    )
