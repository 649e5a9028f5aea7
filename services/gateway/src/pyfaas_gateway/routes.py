"""Where each function is: the gateway's route table.

A memory cache in front of the database. The deployer's state events keep it true; a
miss reads one row (concurrent misses for one id share that read); an unknown id is
remembered for a moment, so random ids cannot flood the database. ``db_queries`` counts
every read: in a steady state a proxied request makes none.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common.db import FunctionRow
from pyfaas_common.messages import StateChanged


@dataclass(frozen=True, slots=True)
class Route:
    function_id: UUID
    state: str
    endpoint: str | None
    reason: str


class RouteTable:
    def __init__(self, engine: AsyncEngine, negative_ttl: float) -> None:
        self.engine = engine
        self.negative_ttl = negative_ttl
        self._routes: dict[UUID, Route] = {}
        self._unknown: dict[UUID, float] = {}
        self._inflight: dict[UUID, asyncio.Future[Route | None]] = {}
        self.db_queries = 0
        self.hits = 0
        self.misses = 0

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
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(FunctionRow.state, FunctionRow.endpoint, FunctionRow.reason).where(
                        FunctionRow.id == function_id
                    )
                )
            ).first()
        if row is None or row.state == "deleted":
            self._unknown[function_id] = time.monotonic() + self.negative_ttl
            if len(self._unknown) > 100_000:  # keep memory bounded under a flood
                self._unknown.clear()
            return None
        route = Route(function_id, row.state, row.endpoint, row.reason)
        self._routes[function_id] = route
        return route

    def apply(self, event: StateChanged) -> None:
        fn = event.function
        self._unknown.pop(fn.id, None)
        if fn.state == "deleted":
            self._routes.pop(fn.id, None)
            return
        self._routes[fn.id] = Route(fn.id, fn.state, fn.endpoint, fn.reason)

    def forget(self, function_id: UUID) -> None:
        """The route failed us (connection refused): read it again next time."""
        self._routes.pop(function_id, None)

    def clear(self) -> None:
        """After a NATS reconnect events may have been missed: start afresh."""
        self._routes.clear()
        self._unknown.clear()

    def __len__(self) -> int:
        return len(self._routes)
