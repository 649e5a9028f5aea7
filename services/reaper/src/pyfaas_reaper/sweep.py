"""The idle policy: which functions to put to sleep, and which to delete.

Called by the reaper's sweep loop (``app.py``) every ``PYFAAS_SWEEP_INTERVAL``. Each
decision is one SQL query over ``functions`` joined with ``function_access`` — the
database does the filtering, not Python — and becomes a command to the deployer whose id
is derived from the function and its generation, so that two reapers sweeping at once (or
one sweeping twice) publish the same ``Nats-Msg-Id`` and JetStream stores it once. On
Postgres an advisory lock also lets only one reaper sweep at a time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from pyfaas_common.db import FunctionAccess, FunctionRow, UTCDateTime, is_postgres
from pyfaas_common.messages import CommandBase, DeleteFunction, SleepFunction

from .settings import ReaperSettings

log = logging.getLogger(__name__)

_SWEEP_LOCK = 0x72656170  # "reap"
_IDS = uuid.UUID("0d6e5c1e-9a57-4d7e-8f0b-7a1d2a3b4c5d")


@dataclass(frozen=True, slots=True)
class Decision:
    command: CommandBase
    why: str


def human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _older_than(
    column: Any, seconds: ColumnElement[Any], now: datetime, postgres: bool
) -> ColumnElement[bool]:
    """``column < now - seconds``, per row: the one place the SQL differs by backend."""
    now_param = literal(now, UTCDateTime())
    if postgres:
        return column < now_param - func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return func.julianday(column) < func.julianday(now_param) - seconds / 86400.0


async def decide(conn: AsyncConnection, settings: ReaperSettings, now: datetime) -> list[Decision]:
    postgres = conn.dialect.name == "postgresql"
    f, a = FunctionRow, FunctionAccess
    idle_timeout = func.coalesce(f.idle_timeout, settings.idle_timeout)
    delete_after = func.coalesce(f.delete_after, settings.delete_after)
    # Idle since the later of its last request and its last change (a wake, a deploy).
    last_active = case(
        (and_(a.last_access_at.is_not(None), a.last_access_at > f.updated_at), a.last_access_at),
        else_=f.updated_at,
    )
    quiet = or_(
        a.function_id.is_(None),
        and_(a.in_flight == 0, a.open_streams == 0),
        a.updated_at < now - timedelta(seconds=settings.access_stale_after),
    )
    idle = await conn.execute(
        select(f.id, f.generation, idle_timeout.label("idle_timeout"))
        .select_from(f)
        .outerjoin(a, a.function_id == f.id)
        .where(
            f.desired == "running",
            f.state.in_(("ready", "failed")),
            idle_timeout > 0,
            quiet,
            _older_than(last_active, idle_timeout, now, postgres),
        )
    )
    stale = await conn.execute(
        select(f.id, f.generation, delete_after.label("delete_after")).where(
            f.desired == "sleeping",
            f.state == "sleeping",
            delete_after > 0,
            _older_than(f.updated_at, delete_after, now, postgres),
        )
    )
    decisions: list[Decision] = []
    for row in idle:
        why = f"idle for {human(int(row.idle_timeout))}"
        key = f"{row.id}:{row.generation}"
        if settings.idle_action == "delete":
            command: CommandBase = DeleteFunction(
                function_id=row.id, command_id=uuid.uuid5(_IDS, f"idle-delete:{key}")
            )
        else:
            command = SleepFunction(
                function_id=row.id, command_id=uuid.uuid5(_IDS, f"sleep:{key}"), reason=why
            )
        decisions.append(Decision(command, why))
    for row in stale:
        why = f"asleep for {human(int(row.delete_after))}"
        decisions.append(
            Decision(
                DeleteFunction(
                    function_id=row.id,
                    command_id=uuid.uuid5(_IDS, f"stale-delete:{row.id}:{row.generation}"),
                ),
                why,
            )
        )
    return decisions


Publish = Callable[[CommandBase], Awaitable[Any]]


async def sweep(
    engine: AsyncEngine, settings: ReaperSettings, now: datetime, publish: Publish
) -> list[Decision] | None:
    """Decide and publish one sweep's commands; None if another reaper is sweeping.

    The commands are published while the lock is held, so a second reaper that sweeps
    right after sees the same functions only if the deployer has not applied them yet —
    and then publishes the same command ids, which JetStream de-duplicates.
    """
    async with engine.begin() as conn:
        if is_postgres(engine):
            locked = await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _SWEEP_LOCK}
            )
            if not locked:
                return None
        decisions = await decide(conn, settings, now)
        for decision in decisions:
            await publish(decision.command)
    return decisions
