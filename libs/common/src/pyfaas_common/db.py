"""The SQLAlchemy 2 models and the async engine every service opens.

The deployer is the only writer of ``functions``; the reaper owns ``function_access``;
the gateway only reads. SQL stays portable (Postgres in production, the embedded SQLite
file for ``make dev``); where Postgres can do better, the difference sits behind
:func:`is_postgres`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    Uuid,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class FunctionRow(Base):
    """One function: what the user asked for (desired, generation) and what the deployer
    last observed (state, reason, endpoint, observed_generation)."""

    __tablename__ = "functions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    code: Mapped[str] = mapped_column(Text)
    code_digest: Mapped[str] = mapped_column(String(64))
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Environment variables whose values are never returned, published or logged."""
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    invoke_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 (hex) of the private function's invoke key; the key itself is not kept."""
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 (hex) of the create request, when it came with an ``Idempotency-Key``."""
    runtime: Mapped[str] = mapped_column(String(32))
    idle_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Seconds without a request before sleep; 0 never; None: the reaper's default."""
    delete_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Seconds asleep before deletion; 0 never; None: the reaper's default."""

    desired: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    endpoint: Mapped[str | None] = mapped_column(String(255), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    last_command_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    """Stream sequence of the last command applied; an older command arriving late is
    ignored, so redeliveries and reordering are harmless."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_functions_owner", "owner"),
        Index("ix_functions_state", "desired", "state"),
    )


class FunctionAccess(Base):
    """What the reaper knows of a function's use; written only by the reaper."""

    __tablename__ = "function_access"

    function_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    last_access_at: Mapped[datetime] = mapped_column(UTCDateTime())
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    open_streams: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    """Stream sequence of the last access record applied: a redelivered record is not
    counted twice."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the gateway read while the deployer writes; busy_timeout waits for
            # the write lock instead of failing at once.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(url, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
