"""The NATS server crashes (SIGKILL) during a burst of creates and comes back on the same
store directory: every create the API acknowledged (202) is carried out.

The API answers 202 only once JetStream acknowledged the command, and NATS runs with
``sync_interval: always`` (``tests/services.py``, ``faas dev``, ``k8s/nats.yaml``), so an
acknowledged command is on disk before the acknowledgement leaves the server: a crash
right after it loses nothing. Creates the API could not store answer 503; the client
retries them with the same ``Idempotency-Key``, and each makes exactly one function — also
the ones whose first attempt was stored although its acknowledgement never came.
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
ACK_TIMEOUT = "1"
"""The API's wait for JetStream's acknowledgement (PYFAAS_QUERY_TIMEOUT), shorter than the
outage: the creates under way when NATS goes are refused (503) and retried."""


@pytest.mark.timeout(300)
async def test_nats_crash_during_a_burst_of_creates_loses_no_acknowledged_command(
    tmp_path: Path, own_nats: CrashableNats, postgres_url: str
) -> None:
    code = example("hello_stdlib.py")
    async with (
        platform_on(
            tmp_path / "data", own_nats.url, postgres_url, PYFAAS_QUERY_TIMEOUT=ACK_TIMEOUT
        ) as platform,
        aiohttp.ClientSession() as session,
    ):
        acked: dict[str, str] = {}
        refused: list[int] = []
        replayed: list[int] = []

        async def create(i: int) -> None:
            body = {"user": "burst", "name": f"n{i:03}", "code": code}
            headers = {"Idempotency-Key": f"burst-{i}"}
            # A careful client: a 503 (or no answer) is retried with the same key.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    async with session.post(
                        f"{platform.api}/faas/python",
                        json=body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=20),
                    ) as r:
                        data = await r.json(content_type=None)
                        if r.status == 202:
                            acked[data["id"]] = body["name"]
                            if r.headers.get("Idempotent-Replayed") == "true":
                                replayed.append(i)
                            return
                        assert r.status == 503, data  # the client is told to retry
                except (aiohttp.ClientError, TimeoutError):
                    pass
                refused.append(i)
                await asyncio.sleep(0.5)
            raise AssertionError(f"create {i} was never accepted")

        async def burst() -> None:
            # A steady stream of creates, four at a time, across the crash.
            gate = asyncio.Semaphore(4)

            async def one(i: int) -> None:
                async with gate:
                    await create(i)
                    await asyncio.sleep(0.2)

            await asyncio.gather(*(one(i) for i in range(COUNT)))

        creates = asyncio.create_task(burst())
        await wait_until(lambda: _true(len(acked) >= COUNT // 3), 60, "a third acknowledged")
        await asyncio.to_thread(own_nats.crash)
        crashed_at = time.monotonic()
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
        # Nothing twice: every create, retried or not, made exactly one function.
        assert len(acked) == COUNT
        assert refused, "no create was under way during the outage: the test proved nothing"
        assert sorted(r["name"] for r in rows.values()) == sorted(acked.values())
        record(
            "NATS crash + restart",
            f"SIGKILL to nats-server after {COUNT // 3} of {COUNT} creates; back "
            f"{DOWN_SECONDS:g}s later on the same store",
            recovery,
            lost=len(lost),
            detail=f"{len(refused)} attempts refused (503) while NATS was away, retried with "
            f"their Idempotency-Key; {len(replayed)} retries found their first attempt "
            f"stored after all; {len(acked)} creates, {len(rows)} functions, all ready; "
            f"measured from the restart ({restarted_at - crashed_at:.1f}s after the crash)",
        )


async def _true(value: bool) -> bool:
    return value
