"""The reaper's idle policy against a real database (Postgres, and the embedded SQLite):
which functions it puts to sleep, which it deletes, and why — decided by one query each,
with command ids that make two sweeps publish the same commands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common import migrate
from pyfaas_common.db import FunctionAccess, FunctionRow, make_engine, sessionmaker
from pyfaas_common.messages import CommandBase, DeleteFunction, SleepFunction, utcnow
from pyfaas_reaper.settings import ReaperSettings
from pyfaas_reaper.sweep import sweep

NOW = utcnow()


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'reaper.db'}"
    engine = make_engine(url)
    await migrate.upgrade(engine)
    async with engine.begin() as conn:  # each test starts from empty tables
        await conn.execute(FunctionAccess.__table__.delete())
        await conn.execute(FunctionRow.__table__.delete())
    yield engine
    await engine.dispose()


async def add(
    engine: AsyncEngine,
    *,
    desired: str = "running",
    state: str = "ready",
    changed: timedelta = timedelta(hours=1),
    accessed: timedelta | None = None,
    in_flight: int = 0,
    open_streams: int = 0,
    idle_timeout: int | None = 60,
    delete_after: int | None = 3600,
    reported: timedelta | None = None,
) -> uuid.UUID:
    fid = uuid.uuid4()
    async with sessionmaker(engine)() as s, s.begin():
        s.add(FunctionRow(
            id=fid, owner="alice", name="f", code="", code_digest="", env={}, runtime="local",
            idle_timeout=idle_timeout, delete_after=delete_after, desired=desired, state=state,
            reason="", endpoint=None, generation=3, observed_generation=3, last_command_seq=1,
            created_at=NOW - timedelta(days=30), updated_at=NOW - changed,
        ))  # fmt: skip
        if accessed is not None:
            s.add(FunctionAccess(
                function_id=fid, last_access_at=NOW - accessed, calls=1, errors=0, bytes_in=0,
                bytes_out=0, in_flight=in_flight, open_streams=open_streams, last_seq=1,
                updated_at=NOW - (reported or min(accessed, timedelta(seconds=2))),
            ))  # fmt: skip
    return fid


async def run(engine: AsyncEngine, **settings: Any) -> dict[uuid.UUID, CommandBase]:
    published: list[CommandBase] = []

    async def publish(command: CommandBase) -> None:
        published.append(command)

    decisions = await sweep(engine, ReaperSettings(**settings), NOW, publish)
    assert decisions is not None
    assert [d.command for d in decisions] == published
    return {c.function_id: c for c in published}


async def test_who_sleeps_and_why(engine: AsyncEngine) -> None:
    idle = await add(engine, accessed=timedelta(minutes=5))
    never_called = await add(engine, changed=timedelta(minutes=5))
    recent = await add(engine, accessed=timedelta(seconds=30))
    just_woken = await add(engine, accessed=timedelta(hours=2), changed=timedelta(seconds=10))
    streaming = await add(engine, accessed=timedelta(minutes=5), open_streams=1)
    in_flight = await add(engine, accessed=timedelta(minutes=5), in_flight=2)
    never_idle = await add(engine, accessed=timedelta(days=3), idle_timeout=0)
    failed = await add(engine, state="failed", accessed=timedelta(minutes=5))
    starting = await add(engine, state="deploying", accessed=timedelta(minutes=5))
    default = await add(engine, accessed=timedelta(minutes=20), idle_timeout=None)

    commands = await run(engine, idle_timeout=900)

    assert set(commands) == {idle, never_called, failed, default}
    assert all(isinstance(c, SleepFunction) for c in commands.values())
    assert commands[idle].reason == "idle for 1 min"  # type: ignore[attr-defined]
    assert commands[default].reason == "idle for 15 min"  # type: ignore[attr-defined]
    for kept in (recent, just_woken, streaming, in_flight, never_idle, starting):
        assert kept not in commands


async def test_a_stale_in_flight_count_does_not_keep_a_function_awake(engine: AsyncEngine) -> None:
    """Its gateway stopped reporting (it died with the request open)."""
    fid = await add(
        engine, accessed=timedelta(minutes=10), in_flight=1, reported=timedelta(minutes=5)
    )
    assert fid in await run(engine, access_stale_after=60)


async def test_who_is_deleted_after_sleeping(engine: AsyncEngine) -> None:
    stale = await add(engine, desired="sleeping", state="sleeping", changed=timedelta(hours=2))
    fresh = await add(engine, desired="sleeping", state="sleeping", changed=timedelta(minutes=5))
    keep = await add(
        engine, desired="sleeping", state="sleeping", changed=timedelta(days=400), delete_after=0
    )
    by_default = await add(
        engine, desired="sleeping", state="sleeping", changed=timedelta(days=8), delete_after=None
    )
    commands = await run(engine)
    assert set(commands) == {stale, by_default}
    assert all(isinstance(c, DeleteFunction) for c in commands.values())
    assert fresh not in commands and keep not in commands


async def test_idle_action_delete_deletes_at_once(engine: AsyncEngine) -> None:
    fid = await add(engine, accessed=timedelta(minutes=5))
    commands = await run(engine, idle_action="delete")
    assert isinstance(commands[fid], DeleteFunction)


async def test_two_sweeps_publish_the_same_command_ids(engine: AsyncEngine) -> None:
    """A sweep repeated before the deployer acts (or another reaper's) publishes identical
    Nats-Msg-Ids, which JetStream stores once."""
    for _ in range(3):
        await add(engine, accessed=timedelta(minutes=5))
    first = {c.command_id for c in (await run(engine)).values()}
    second = {c.command_id for c in (await run(engine)).values()}
    assert first == second and len(first) == 3


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_on_postgres_one_reaper_sweeps_at_a_time(engine: AsyncEngine) -> None:
    """The advisory lock is Postgres's; SQLite serves one machine and one reaper."""
    await add(engine, accessed=timedelta(minutes=5))
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow_publish(command: CommandBase) -> None:
        inside.set()
        await release.wait()

    settings = ReaperSettings()
    holder = asyncio.create_task(sweep(engine, settings, NOW, slow_publish))
    await asyncio.wait_for(inside.wait(), 10)

    async def publish(command: CommandBase) -> None:
        raise AssertionError("a second reaper swept while the first held the lock")

    assert await sweep(engine, settings, NOW, publish) is None
    release.set()
    assert len(await holder or []) == 1


async def test_busy_functions_among_many_are_left_alone(engine: AsyncEngine) -> None:
    """Only rows that match come back from the query (bench/reaper.py measures the cost)."""
    async with sessionmaker(engine)() as s, s.begin():
        for _ in range(2000):
            s.add(FunctionRow(
                id=uuid.uuid4(), owner="bob", name="f", code="", code_digest="", env={},
                runtime="local", idle_timeout=900, delete_after=3600, desired="running",
                state="ready", reason="", endpoint=None, generation=1, observed_generation=1,
                last_command_seq=1, created_at=NOW, updated_at=NOW,
            ))  # fmt: skip
    idle = await add(engine, accessed=timedelta(minutes=5))
    assert set(await run(engine)) == {idle}
