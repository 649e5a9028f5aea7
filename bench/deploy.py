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
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.platform import Client, Platform, example  # noqa: E402
from tests.services import NATS_URL, NatsServer, free_port, reachable  # noqa: E402

SCRIPT = example("hello_stdlib.py")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def bare_start(workdir: Path) -> float:
    """``uv run --script`` by hand, to its first accepted connection."""
    from uv import find_uv_bin

    path = workdir / "main.py"
    path.write_text(SCRIPT)
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        find_uv_bin(), "run", "--script", str(path),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    return time.perf_counter() - start
            except OSError:
                if time.perf_counter() - start > 60:
                    raise TimeoutError("bare start did not listen within 60s") from None
                await asyncio.sleep(0.005)
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()


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


def report(name: str, values: list[float]) -> tuple[float, float]:
    med, p99 = statistics.median(values), percentile(values, 99)
    print(f"{name:<34} n={len(values):<3} median {med * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms")
    return med, p99


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pyfaas-bench-") as tmp:
        tmpdir = Path(tmp)
        nats_server = None
        nats_url = NATS_URL
        if not reachable(nats_url, 4222):
            nats_server = NatsServer(tmpdir / "nats")
            nats_server.start()
            nats_url = nats_server.url
        platform = Platform(tmpdir / "data", nats_url, f"bench{uuid.uuid4().hex[:8]}")
        platform.data_dir.mkdir()
        await platform.start()
        try:
            # One warm-up of each, so that neither pays for uv's first cache fill.
            await bare_start(tmpdir)
            async with aiohttp.ClientSession() as session:
                client = Client(session, platform)
                await platform_start(client, -1)
                through = [await platform_start(client, i) for i in range(count)]
            bare = [await bare_start(tmpdir) for _ in range(count)]
        finally:
            await platform.stop()
            if nats_server:
                nats_server.stop()
    print(f"\nPOST → ready for {count} functions with no dependencies (embedded SQLite):")
    p_med, p_p99 = report("pyfaas (POST → GET says ready)", through)
    b_med, b_p99 = report("bare uv run --script → listening", bare)
    print(
        f"{'ratio pyfaas / bare':<34}        median {p_med / b_med:7.2f} ×      p99 {p_p99 / b_p99:7.2f} ×"
    )
    print(f"{'platform share (median)':<34}        {(p_med - b_med) * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
