"""The deployer is killed with SIGKILL while 100 creates are in flight: after ``faas dev``
restarts it, all 100 functions are ready, each once (one row, one process, one
directory), and nothing is left that belongs to no function."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import (
    function_dirs,
    function_processes,
    function_rows,
    platform_on,
    record,
    side_records,
    wait_until,
)
from tests.platform import Client, example

COUNT = 100


@pytest.mark.timeout(300)
async def test_deployer_killed_while_100_creates_are_in_flight(
    tmp_path: Path, nats_url: str, postgres_url: str
) -> None:
    code = example("hello_stdlib.py")
    async with (
        platform_on(tmp_path / "data", nats_url, postgres_url) as platform,
        aiohttp.ClientSession() as session,
    ):
        client = Client(session, platform)
        deployer = platform.service_pid("deployer")
        acked: list[str] = []
        enough = asyncio.Event()
        gate = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with gate:
                data = await client.create(code, user="burst", name=f"f{i:03}")
            acked.append(data["id"])
            if len(acked) >= COUNT // 3:
                enough.set()

        creates = asyncio.gather(*(create(i) for i in range(COUNT)))
        await asyncio.wait_for(enough.wait(), 60)
        os.kill(deployer, signal.SIGKILL)
        killed_at = time.monotonic()
        await creates  # the API takes the rest while no deployer runs: they wait in JetStream
        assert len(acked) == COUNT

        async def all_ready() -> bool:
            rows = await function_rows(platform.env["PYFAAS_DATABASE_URL"])
            return len(rows) == COUNT and all(r["state"] == "ready" for r in rows)

        await wait_until(all_ready, 180, "all 100 functions ready", interval=0.5)
        recovery = time.monotonic() - killed_at
        assert platform.service_pid("deployer") != deployer

        rows = await function_rows(platform.env["PYFAAS_DATABASE_URL"])
        data_dir = Path(platform.env["PYFAAS_DATA_DIR"])
        ids = {str(r["id"]) for r in rows}
        # None twice: one row per acknowledged create, one process and one directory each.
        assert ids == set(acked)
        assert sorted(r["name"] for r in rows) == [f"f{i:03}" for i in range(COUNT)]

        async def settled() -> bool:
            # A second process the killed deployer had started is stopped by the next one.
            processes = function_processes(data_dir)
            return set(processes) == ids and all(len(p) == 1 for p in processes.values())

        await wait_until(settled, 30, "one process per function")
        # No orphan: no directory, process or half-written record that belongs to nobody.
        assert function_dirs(data_dir) == ids
        assert side_records(data_dir) == []
        for fid in list(ids)[:10]:
            assert (await client.call(fid, "after")).status == 200
        record(
            "deployer SIGKILL",
            f"SIGKILL to the deployer after {COUNT // 3} of {COUNT} creates were acknowledged",
            recovery,
            lost=COUNT - len(ids),
            detail=f"{COUNT} acknowledged, {len(ids)} ready, each with one row, one process",
        )
