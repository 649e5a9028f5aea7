"""Access records: what the gateway saw of each function, aggregated per interval.

The proxy calls :meth:`AccessLog.begin` / :meth:`AccessLog.end` around each request; a
loop publishes one :class:`AccessRecord` per active function per interval to JetStream,
so the message rate follows the number of active functions, not the request rate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from nats.aio.client import Client

from pyfaas_common import bus
from pyfaas_common.messages import AccessRecord, utcnow
from pyfaas_common.subjects import Subjects

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Counters:
    calls: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    in_flight: int = 0
    open_streams: int = 0
    last_access_at: datetime | None = None


class AccessLog:
    def __init__(self, nc: Client, subjects: Subjects, interval: float) -> None:
        self.nc = nc
        self.subjects = subjects
        self.interval = interval
        self._counters: dict[UUID, _Counters] = {}
        self._window_start = utcnow()
        self.published = 0

    def begin(self, function_id: UUID) -> None:
        c = self._counters.setdefault(function_id, _Counters())
        c.calls += 1
        c.in_flight += 1
        c.last_access_at = utcnow()

    def end(self, function_id: UUID, *, bytes_in: int, bytes_out: int, error: bool) -> None:
        c = self._counters.setdefault(function_id, _Counters())
        c.in_flight = max(0, c.in_flight - 1)
        c.bytes_in += bytes_in
        c.bytes_out += bytes_out
        c.errors += int(error)
        c.last_access_at = utcnow()

    async def flush(self) -> None:
        start, end = self._window_start, utcnow()
        self._window_start = end
        current, self._counters = self._counters, {}
        js = self.nc.jetstream()
        for function_id, c in current.items():
            if c.in_flight:  # still active: carry the open requests into the next window
                self._counters[function_id] = _Counters(
                    in_flight=c.in_flight, open_streams=c.open_streams,
                    last_access_at=c.last_access_at,
                )  # fmt: skip
            record = AccessRecord(
                function_id=function_id, window_start=start, window_end=end, calls=c.calls,
                errors=c.errors, bytes_in=c.bytes_in, bytes_out=c.bytes_out,
                in_flight=c.in_flight, open_streams=c.open_streams,
                last_access_at=c.last_access_at or end,
            )  # fmt: skip
            try:
                await js.publish(self.subjects.access(function_id), bus.encode(record), timeout=2)
                self.published += 1
            except Exception as exc:
                log.warning("could not publish access record", extra={"error": repr(exc)})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
