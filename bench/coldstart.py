"""Cold start: waking a sleeping function through the gateway, against starting the same
script by hand.

Run: ``uv run python bench/coldstart.py [N]`` (part of ``make bench``). Starts ``faas dev``
(embedded SQLite; the NATS at $PYFAAS_TEST_NATS_URL or one it starts). For each of two
scripts — one with no dependencies, one with two (cached by a warm-up run first) — it puts
the function to sleep N times (the same sleep command the reaper sends) and times a request
through the gateway from send to the full answer (the wake included); then it times N bare
``uv run --script`` starts of the same script to its first accepted connection. Both in
one run: read the ratio. Loopback only; every wait is bounded.
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
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyfaas_common import bus  # noqa: E402
from pyfaas_common.messages import SleepFunction  # noqa: E402
from pyfaas_common.subjects import Subjects  # noqa: E402
from tests.platform import Client, Platform, example  # noqa: E402
from tests.services import NATS_URL, NatsServer, free_port, reachable  # noqa: E402

NO_DEPS = example("hello_stdlib.py")
TWO_DEPS = NO_DEPS.replace("# dependencies = []", '# dependencies = ["six", "idna"]').replace(
    "import json\n", "import json\n\nimport idna  # noqa: F401\nimport six  # noqa: F401\n"
)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


async def bare_start(workdir: Path, code: str) -> float:
    from uv import find_uv_bin

    # One path per script, as a person re-running it would have: uv keeps that script's
    # resolved environment, as it does for the function's main.py across sleeps.
    path = workdir / f"bare-{abs(hash(code)):x}.py"
    path.write_text(code)
    port = free_port()
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        find_uv_bin(), "run", "--script", str(path),
        env={**os.environ, "PORT": str(port)}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    return time.perf_counter() - started
            except OSError:
                if time.perf_counter() - started > 120:
                    raise TimeoutError("bare start did not listen") from None
                await asyncio.sleep(0.002)
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()


async def wake_once(
    client: Client, nc: nats.NATS, subjects: Subjects, fid: str
) -> tuple[float, int]:
    await bus.publish_command(
        nc, subjects, SleepFunction(function_id=uuid.UUID(fid), reason="bench")
    )
    await client.wait_for(fid, {"sleeping"}, timeout=60)
    started = time.perf_counter()
    response = await client.call(fid, "wake")
    elapsed = time.perf_counter() - started
    assert response.status == 200, await response.text()
    return elapsed, int(response.headers["X-Pyfaas-Cold-Start"])


def line(name: str, values: list[float]) -> tuple[float, float]:
    med, p99 = statistics.median(values), percentile(values, 99)
    print(f"  {name:<38} median {med * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms")
    return med, p99


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pyfaas-cold-") as tmp:
        tmpdir = Path(tmp)
        server = None
        nats_url = NATS_URL
        if not reachable(nats_url, 4222):
            server = NatsServer(tmpdir / "nats")
            server.start()
            nats_url = server.url
        prefix = f"cold{uuid.uuid4().hex[:8]}"
        platform = Platform(tmpdir / "data", nats_url, prefix)
        platform.data_dir.mkdir()
        await platform.start()
        nc = await nats.connect(nats_url)
        results: dict[str, tuple[list[float], list[float], list[int]]] = {}
        try:
            async with aiohttp.ClientSession() as session:
                client = Client(session, platform)
                for label, code in (
                    ("no dependencies", NO_DEPS),
                    ("two cached dependencies", TWO_DEPS),
                ):
                    await bare_start(tmpdir, code)  # warm uv's cache for this script
                    fid = (await client.create(code, name="cold", idle_timeout=0))["id"]
                    await client.wait_for(fid, {"ready"}, timeout=120)
                    wakes, headers = [], []
                    for _ in range(count):
                        elapsed, header = await wake_once(client, nc, Subjects(prefix), fid)
                        wakes.append(elapsed)
                        headers.append(header)
                    bare = [await bare_start(tmpdir, code) for _ in range(count)]
                    results[label] = (wakes, bare, headers)
        finally:
            await nc.close()
            await platform.stop()
            if server:
                server.stop()
    print(f"\nCold start, {count} wakes and {count} bare starts per script, in one run:")
    for label, (wakes, bare, headers) in results.items():
        print(f"{label}:")
        w_med, w_p99 = line("wake through the gateway (full answer)", wakes)
        b_med, b_p99 = line("bare uv run --script → listening", bare)
        print(f"  {'X-Pyfaas-Cold-Start (median)':<38} {statistics.median(headers):7.0f} ms")
        print(
            f"  {'ratio wake / bare':<38} median {w_med / b_med:7.2f} ×      p99 {w_p99 / b_p99:7.2f} ×"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
