"""Postgres stops for ten seconds and starts again (a Postgres of the test's own, on a
fixed port: see ``harness.PostgresServer``). Meanwhile the gateway goes on serving the
functions whose routes it holds, the API goes on accepting creates (they wait in
JetStream), and afterwards every service has recovered by itself — none restarted — and
every create accepted during the outage is carried out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import PostgresServer, platform_on, record, wait_until
from tests.platform import Client, example

OUTAGE_SECONDS = 10.0
SERVICES = ("deployer", "api", "gateway", "reaper")


@pytest.mark.timeout(240)
async def test_postgres_down_for_ten_seconds(
    tmp_path: Path, nats_url: str, own_postgres: PostgresServer
) -> None:
    database_url = await asyncio.to_thread(own_postgres.create_database)
    code = example("hello_stdlib.py")
    async with (
        # The function quota is on, so each create also asks the deployer for a count.
        # Two deliveries before a failing command is given up: an outage takes many more,
        # and a command waiting for the database must not count them.
        platform_on(
            tmp_path / "data",
            nats_url,
            database_url,
            PYFAAS_MAX_FUNCTIONS_PER_USER="50",
            PYFAAS_COMMAND_MAX_DELIVER="2",
        ) as platform,
        aiohttp.ClientSession() as session,
    ):
        client = Client(session, platform)
        warm = [(await client.create(code, user="pg", name=f"warm{i}"))["id"] for i in range(3)]
        for fid in warm:
            await client.wait_for(fid, {"ready"})
            assert (await client.call(fid)).status == 200
        pids = {name: platform.service_pid(name) for name in SERVICES}

        await asyncio.to_thread(own_postgres.stop)
        stopped_at = time.monotonic()
        calls = failed_calls = 0
        accepted: list[str] = []
        create_seconds: list[float] = []
        i = 0
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            # Cached routes: the gateway needs no database to serve them.
            for fid in warm:
                calls += 1
                if (await client.call(fid, "during")).status != 200:
                    failed_calls += 1
            if i < 5:
                started = time.monotonic()
                accepted.append((await client.create(code, user="pg", name=f"late{i}"))["id"])
                create_seconds.append(time.monotonic() - started)
                i += 1
            await asyncio.sleep(0.5)  # the pace of the calls; nothing to wait for
        await asyncio.to_thread(own_postgres.start)
        started_at = time.monotonic()

        for fid in accepted:
            await client.wait_for(fid, {"ready"}, timeout=120)
        recovery = time.monotonic() - started_at

        async def gateway_ready() -> bool:
            async with session.get(f"{platform.gateway}/readyz") as r:
                return r.status == 200

        await wait_until(gateway_ready, 30, "gateway ready again")
        after = (await client.create(code, user="pg", name="after"))["id"]
        await client.wait_for(after, {"ready"}, timeout=60)
        assert (await client.call(after)).status == 200
        # Recovered by themselves: the same processes as before the outage.
        assert {name: platform.service_pid(name) for name in SERVICES} == pids
        assert failed_calls == 0, f"{failed_calls} of {calls} calls to cached routes failed"
        assert max(create_seconds) < 3.0, create_seconds
        record(
            "Postgres outage",
            f"Postgres stopped (pg_ctl stop -m fast) for {OUTAGE_SECONDS:g}s, then started",
            recovery,
            lost=0,
            detail=f"{calls} gateway calls to cached routes during it, {failed_calls} failed; "
            f"{len(accepted)} creates accepted during it (slowest {max(create_seconds):.2f}s), "
            "all ready after; no service restarted",
        )
