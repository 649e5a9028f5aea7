"""The NATS server crashes (SIGKILL) during a burst of creates and comes back on the same
store directory: every create the API acknowledged (202) is carried out.

The API answers 202 only once JetStream acknowledged the command, and NATS runs with
``sync_interval: always`` (``tests/services.py``, ``faas dev``, ``k8s/nats.yaml``), so an
acknowledged command is on disk before the acknowledgement leaves the server: a crash
right after it loses nothing. Creates the API could not store answer 503 and the client
knows to retry them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import (
    FULL,
    CrashableNats,
    function_rows,
    platform_on,
    record,
    wait_until,
)
from tests.platform import example

COUNT = 60 if FULL else 40
DOWN_SECONDS = 7.0 if FULL else 3.0
"""Longer than the API's 5 s wait for an acknowledgement in the full version: some creates
are then refused (503), none lost."""


@pytest.mark.timeout(300)
async def test_nats_crash_during_a_burst_of_creates_loses_no_acknowledged_command(
    tmp_path: Path, own_nats: CrashableNats, postgres_url: str
) -> None:
    code = example("hello_stdlib.py")
    async with (
        platform_on(tmp_path / "data", own_nats.url, postgres_url) as platform,
        aiohttp.ClientSession() as session,
    ):
        acked: dict[str, str] = {}
        refused: list[int] = []
        crashed = asyncio.Event()
        sent = 0

        async def create(i: int) -> None:
            nonlocal sent
            body = {"user": "burst", "name": f"n{i:03}", "code": code}
            sent += 1
            try:
                async with session.post(
                    f"{platform.api}/faas/python",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=20),
                ) as r:
                    data = await r.json(content_type=None)
                    if r.status == 202:
                        acked[data["id"]] = body["name"]
                    else:
                        assert r.status == 503, data  # not stored, and the client is told
                        refused.append(i)
            except (aiohttp.ClientError, TimeoutError):
                refused.append(i)

        async def burst() -> None:
            # A steady stream of creates, four at a time, across the crash.
            gate = asyncio.Semaphore(4)

            async def one(i: int) -> None:
                async with gate:
                    await create(i)
                    await asyncio.sleep(0.05)

            await asyncio.gather(*(one(i) for i in range(COUNT)))

        creates = asyncio.create_task(burst())
        await wait_until(lambda: _true(len(acked) >= COUNT // 3), 60, "a third acknowledged")
        await asyncio.to_thread(own_nats.crash)
        crashed_at = time.monotonic()
        crashed.set()
        await asyncio.sleep(DOWN_SECONDS)  # the outage itself: nothing to wait for
        await asyncio.to_thread(own_nats.start)
        restarted_at = time.monotonic()
        await creates

        database_url = platform.env["PYFAAS_DATABASE_URL"]

        async def all_carried_out() -> bool:
            rows = {str(r["id"]): r for r in await function_rows(database_url)}
            return all(fid in rows and rows[fid]["state"] == "ready" for fid in acked)

        await wait_until(all_carried_out, 150, "every acknowledged create ready", interval=0.5)
        recovery = time.monotonic() - restarted_at
        rows = {str(r["id"]): r for r in await function_rows(database_url)}
        lost = [fid for fid in acked if fid not in rows]
        assert not lost
        # Nothing twice: one row per name (a create the client saw fail may still have been
        # stored, as at-least-once allows; it is then carried out once, never twice).
        names = [r["name"] for r in rows.values()]
        assert len(names) == len(set(names))
        record(
            "NATS crash + restart",
            f"SIGKILL to nats-server after {COUNT // 3} of {COUNT} creates; back "
            f"{DOWN_SECONDS:g}s later on the same store",
            recovery,
            lost=len(lost),
            detail=f"{len(acked)} acknowledged (202), all ready; {len(refused)} refused (503) "
            f"while NATS was away, of which {len(rows) - len(acked)} were stored anyway; "
            f"measured from the restart ({restarted_at - crashed_at:.1f}s after the crash)",
        )


async def _true(value: bool) -> bool:
    return value
