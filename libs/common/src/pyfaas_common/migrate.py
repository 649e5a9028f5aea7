"""Alembic migrations, run in code: the deployer upgrades the schema at start-up; other
services wait until it is current (:func:`wait_for_schema`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import is_postgres

log = logging.getLogger(__name__)

_LOCK_KEY = 0x70796661  # "pyfa": one migrating deployer at a time on Postgres


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "pyfaas_common:migrations")
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if is_postgres(engine):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        await conn.run_sync(_upgrade)
    log.info("database schema is current", extra={"revision": head_revision()})


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def wait_for_schema(engine: AsyncEngine, timeout: float = 120.0) -> None:
    """Wait until the deployer has migrated the database to the head revision."""
    head = head_revision()
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.1
    while True:
        try:
            if await current_revision(engine) == head:
                return
        except Exception as exc:
            last: Any = exc
        else:
            last = "schema not migrated yet"
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"database schema not at {head} after {timeout}s: {last}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
