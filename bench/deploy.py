"""POST → ready through pyfaas, against a bare ``uv run --script`` of the same script.

Run: ``make bench`` (or ``uv run python bench/deploy.py [N]``). Starts ``faas dev`` on free
ports (embedded SQLite, the NATS at $PYFAAS_TEST_NATS_URL or one it starts), deploys N
functions (default 20) one after another, timing each from the POST to the first GET that
says ``ready``; then starts the same script N times by hand to its first accepted
connection. Both are measured in the same run, since this machine is noisy: the ratio is
the figure to read. Only loopback traffic; bounded by a timeout per function.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from baseline import bare_start, dev_platform, report

from tests.platform import Client, example

SCRIPT = example("hello_stdlib.py")


async def platform_start(client: Client, index: int) -> float:
    start = time.perf_counter()
    created = await client.create(SCRIPT, name=f"bench-{index}")
    deadline = start + 60
    while True:
        status, data = await client.get(created["id"])
        if status == 200 and data["state"] == "ready":
            return time.perf_counter() - start
        if status == 200 and data["state"] == "failed":
            raise RuntimeError(data["reason"])
        if time.perf_counter() > deadline:
            raise TimeoutError("not ready within 60s")
        await asyncio.sleep(0.005)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pyfaas-bench-") as tmp:
        tmpdir = Path(tmp)
        async with dev_platform(tmpdir, f"bench{uuid.uuid4().hex[:8]}") as platform:
            # One warm-up of each, so that neither pays for uv's first cache fill.
            await bare_start(tmpdir, SCRIPT)
            async with aiohttp.ClientSession() as session:
                client = Client(session, platform)
                await platform_start(client, -1)
                through = [await platform_start(client, i) for i in range(count)]
            bare = [await bare_start(tmpdir, SCRIPT) for _ in range(count)]
    print(f"\nPOST → ready for {count} functions with no dependencies (embedded SQLite):")
    p_med, p_p99 = report("pyfaas (POST → GET says ready)", through)
    b_med, b_p99 = report("bare uv run --script → listening", bare)
    print(
        f"  {'ratio pyfaas / bare':<38}        median {p_med / b_med:7.2f} ×      p99 {p_p99 / b_p99:7.2f} ×"
    )
    print(f"  {'platform share (median)':<38}        {(p_med - b_med) * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
