"""Where each function is: the gateway's route table, consulted by :mod:`proxy`.

A memory copy of every live route: loaded in one query at start (and again after a NATS
reconnect, when events may have been missed), then kept true by the deployer's state
events (subscribed in :mod:`app`). An id the table does not know is read from the
database (concurrent misses for one id share that read) and, when unknown there too,
remembered as unknown for a moment. Misses are also rationed (``miss_queries_per_second``):
a flood of random ids must not become a flood of database queries, and with the whole
table in memory an id that is not in it is almost certainly unknown anyway.
``db_queries`` counts every read: in a steady state a proxied request makes none.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common.db import FunctionRow
from pyfaas_common.messages import FunctionView, StateChanged

from .upstream import Endpoint

_MAX_UNKNOWN = 100_000


@dataclass(frozen=True, slots=True)
class Route:
    function_id: UUID
    state: str
    endpoint: str | None
    reason: str
    target: Endpoint | None = field(default=None, compare=False)
    label: str = ""
    """The function id as a metrics label, made once."""
    generation: int = 0
    """The generation this route describes: a wake names the sleep it ends by it."""
    private: bool = False
    """Only the owner's token, an admin's, or the invoke key may call it (:mod:`access`)."""
    owner: str = ""
    key_hash: str | None = field(default=None, repr=False)
    """SHA-256 of the function's invoke key (never the key)."""

    @classmethod
    def of(
        cls,
        function_id: UUID,
        state: str,
        endpoint: str | None,
        reason: str,
        generation: int = 0,
        *,
        visibility: str = "public",
        owner: str = "",
        key_hash: str | None = None,
    ) -> Route:
        target = Endpoint.parse(endpoint) if endpoint else None
        return cls(
            function_id, state, endpoint, reason, target, str(function_id), generation,
            visibility != "public", owner, key_hash,
        )  # fmt: skip

    @classmethod
    def from_view(cls, fn: FunctionView) -> Route:
        return cls.of(
            fn.id, fn.state, fn.endpoint, fn.reason, fn.generation,
            visibility=fn.visibility, owner=fn.user, key_hash=fn.invoke_key_hash,
        )  # fmt: skip

    @classmethod
    def from_row(cls, function_id: UUID, row: Any) -> Route:
        return cls.of(
            function_id, row.state, row.endpoint, row.reason, row.generation,
            visibility=row.visibility, owner=row.owner, key_hash=row.invoke_key_hash,
        )  # fmt: skip


_COLUMNS = (
    FunctionRow.state,
    FunctionRow.endpoint,
    FunctionRow.reason,
    FunctionRow.generation,
    FunctionRow.visibility,
    FunctionRow.owner,
    FunctionRow.invoke_key_hash,
)


class RouteTable:
    def __init__(
        self, engine: AsyncEngine, negative_ttl: float, miss_queries_per_second: float = 50.0
    ) -> None:
        self.engine = engine
        self.negative_ttl = negative_ttl
        self.miss_rate = miss_queries_per_second
        self._tokens = miss_queries_per_second
        self._tokens_at = time.monotonic()
        self.rationed = 0
        """Misses answered as unknown without a query, because the ration was spent."""
        self._routes: dict[UUID, Route] = {}
        self._unknown: dict[UUID, float] = {}
        self._inflight: dict[UUID, asyncio.Future[Route | None]] = {}
        self._events_seen: dict[UUID, int] = {}
        self._events = 0
        self.db_queries = 0
        self.hits = 0
        self.misses = 0
        self.reported: dict[str, int] = {}
        """What :class:`metrics.Metrics` has already added to its counters."""

    def cached(self, function_id: UUID) -> Route | None:
        """The route when it is in memory, without counting a hit (the caller counts one
        when it uses it: :mod:`front` hands a request it cannot serve to :meth:`lookup`)."""
        return self._routes.get(function_id)

    async def lookup(self, function_id: UUID) -> Route | None:
        route = self._routes.get(function_id)
        if route is not None:
            self.hits += 1
            return route
        expires = self._unknown.get(function_id)
        if expires is not None:
            if expires > time.monotonic():
                self.hits += 1
                return None
            del self._unknown[function_id]
        self.misses += 1
        pending = self._inflight.get(function_id)
        if pending is not None:
            return await asyncio.shield(pending)
        if not self._may_query():
            self.rationed += 1
            self._remember_unknown(function_id)
            return None
        future: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
        self._inflight[function_id] = future
        try:
            route = await self._load(function_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the waiters (if any) re-raise it
            raise
        finally:
            self._inflight.pop(function_id, None)
        future.set_result(route)
        return route

    async def _load(self, function_id: UUID) -> Route | None:
        self.db_queries += 1
        events_before = self._events
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*_COLUMNS).where(FunctionRow.id == function_id))
            ).first()
        if self._events_seen.get(function_id, -1) >= events_before:
            # An event for this function arrived while we read: it is newer than the row.
            return self._routes.get(function_id)
        if row is None or row.state == "deleted":
            self._remember_unknown(function_id)
            return None
        route = Route.from_row(function_id, row)
        self._routes[function_id] = route
        return route

    def _remember_unknown(self, function_id: UUID) -> None:
        if len(self._unknown) > _MAX_UNKNOWN:  # keep memory bounded under a flood
            self._unknown.clear()
        self._unknown[function_id] = time.monotonic() + self.negative_ttl

    def _may_query(self) -> bool:
        """A token bucket: ``miss_rate`` queries a second, bursts of as many."""
        now = time.monotonic()
        self._tokens = min(self.miss_rate, self._tokens + (now - self._tokens_at) * self.miss_rate)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def load_all(self) -> None:
        """Replace the table with every live function's route, in one query."""
        self.db_queries += 1
        events_before = self._events
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(FunctionRow.id, *_COLUMNS).where(FunctionRow.state != "deleted")
                )
            ).all()
        fresh = {r.id: Route.from_row(r.id, r) for r in rows}
        for function_id, seen in self._events_seen.items():
            if seen >= events_before:  # an event newer than the snapshot wins
                route = self._routes.get(function_id)
                if route is None:
                    fresh.pop(function_id, None)
                else:
                    fresh[function_id] = route
        self._routes = fresh
        self._unknown.clear()

    def apply(self, event: StateChanged) -> None:
        fn = event.function
        self._events_seen[fn.id] = self._events
        self._events += 1
        if len(self._events_seen) > _MAX_UNKNOWN:
            self._events_seen.clear()
        self._unknown.pop(fn.id, None)
        if fn.state == "deleted":
            self._routes.pop(fn.id, None)
            self._unknown[fn.id] = time.monotonic() + self.negative_ttl
            return
        self._routes[fn.id] = Route.from_view(fn)

    def forget(self, function_id: UUID) -> None:
        """The route failed us (connection refused): read it again next time."""
        self._routes.pop(function_id, None)

    def clear(self) -> None:
        """Forget everything (when even a reload failed): every id is read afresh."""
        self._routes.clear()
        self._unknown.clear()

    def __len__(self) -> int:
        return len(self._routes)
