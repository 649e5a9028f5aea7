"""Access records: what the gateway saw of each function, aggregated per interval.

The proxy calls :meth:`AccessLog.begin` / :meth:`AccessLog.end` around each request and
:meth:`AccessLog.stream_opened` / :meth:`AccessLog.stream_closed` around each stream; a
loop (started in :mod:`app`) publishes one :class:`AccessRecord` per active function per
interval to JetStream, so the message rate follows the number of active functions, not
the request rate. A function with a request in flight or a stream open is active: its
record goes out every interval with ``last_access_at`` set to the end of the window, so
the reaper never puts a function to sleep under an open stream.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
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


class AccessLog:
    def __init__(self, nc: Client, subjects: Subjects, interval: float) -> None:
        self.nc = nc
        self.subjects = subjects
        self.interval = interval
        self._counters: dict[UUID, _Counters] = {}
        self._window_start = utcnow()
        self.published = 0

    def _of(self, function_id: UUID) -> _Counters:
        c = self._counters.get(function_id)
        if c is None:
            c = self._counters[function_id] = _Counters()
        return c

    def begin(self, function_id: UUID) -> None:
        c = self._of(function_id)
        c.calls += 1
        c.in_flight += 1

    def end(self, function_id: UUID, *, bytes_in: int, bytes_out: int, error: bool) -> None:
        c = self._of(function_id)
        c.in_flight = max(0, c.in_flight - 1)
        c.bytes_in += bytes_in
        c.bytes_out += bytes_out
        c.errors += error

    def stream_opened(self, function_id: UUID) -> None:
        self._of(function_id).open_streams += 1

    def stream_closed(self, function_id: UUID) -> None:
        c = self._of(function_id)
        c.open_streams = max(0, c.open_streams - 1)

    def snapshot(self) -> dict[UUID, AccessRecord]:
        """Close the current window: the records to publish, one per active function."""
        start, end = self._window_start, utcnow()
        self._window_start = end
        current, self._counters = self._counters, {}
        records: dict[UUID, AccessRecord] = {}
        for function_id, c in current.items():
            if c.in_flight or c.open_streams:  # still active: carried into the next window
                self._counters[function_id] = _Counters(
                    in_flight=c.in_flight, open_streams=c.open_streams
                )
            records[function_id] = AccessRecord(
                function_id=function_id, window_start=start, window_end=end, calls=c.calls,
                errors=c.errors, bytes_in=c.bytes_in, bytes_out=c.bytes_out,
                in_flight=c.in_flight, open_streams=c.open_streams,
                # Every request of the window ended by its end or is still going on; the
                # clock is read once per window, not per request.
                last_access_at=end,
            )  # fmt: skip
        return records

    async def flush(self) -> None:
        records = self.snapshot()
        if not records:
            return
        js = self.nc.jetstream()

        async def publish(record: AccessRecord) -> None:
            try:
                await js.publish(
                    self.subjects.access(record.function_id), bus.encode(record), timeout=2
                )
                self.published += 1
            except Exception as exc:
                log.warning("could not publish access record", extra={"error": repr(exc)})

        await asyncio.gather(*(publish(r) for r in records.values()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
