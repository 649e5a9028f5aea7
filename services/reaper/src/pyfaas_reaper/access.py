"""Keeping ``function_access`` up to date from the gateway's access records.

Called by the reaper's JetStream consumer for each record. An upsert that applies a
record only if its stream sequence is newer than the last one applied: a redelivered
record changes nothing, so the handler is idempotent by a key the database enforces.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common.db import FunctionAccess, is_postgres
from pyfaas_common.messages import AccessRecord, utcnow


async def record_access(engine: AsyncEngine, record: AccessRecord, seq: int) -> None:
    insert: Any = pg_insert if is_postgres(engine) else sqlite_insert
    table = FunctionAccess.__table__
    values = {
        "function_id": record.function_id,
        "last_access_at": record.last_access_at,
        "calls": record.calls,
        "errors": record.errors,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "in_flight": record.in_flight,
        "open_streams": record.open_streams,
        "last_seq": seq,
        "updated_at": utcnow(),
    }
    stmt = insert(table).values(**values)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.function_id],
        set_={
            "last_access_at": func.max(table.c.last_access_at, excluded.last_access_at)
            if not is_postgres(engine)
            else func.greatest(table.c.last_access_at, excluded.last_access_at),
            "calls": table.c.calls + excluded.calls,
            "errors": table.c.errors + excluded.errors,
            "bytes_in": table.c.bytes_in + excluded.bytes_in,
            "bytes_out": table.c.bytes_out + excluded.bytes_out,
            "in_flight": excluded.in_flight,
            "open_streams": excluded.open_streams,
            "last_seq": excluded.last_seq,
            "updated_at": excluded.updated_at,
        },
        where=table.c.last_seq < excluded.last_seq,
    )
    async with engine.begin() as conn:
        await conn.execute(stmt)
