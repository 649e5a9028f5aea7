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

from baseline import bare_start, dev_platform, report  # noqa: E402

from pyfaas_common import bus  # noqa: E402
from pyfaas_common.messages import SleepFunction  # noqa: E402
from pyfaas_common.subjects import Subjects  # noqa: E402
from tests.platform import Client, example  # noqa: E402

NO_DEPS = example("hello_stdlib.py")
TWO_DEPS = NO_DEPS.replace("# dependencies = []", '# dependencies = ["six", "idna"]').replace(
    "import json\n", "import json\n\nimport idna  # noqa: F401\nimport six  # noqa: F401\n"
)


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


async def main(count: int) -> None:
    results: dict[str, tuple[list[float], list[float], list[int]]] = {}
    with tempfile.TemporaryDirectory(prefix="pyfaas-cold-") as tmp:
        tmpdir = Path(tmp)
        prefix = f"cold{uuid.uuid4().hex[:8]}"
        async with dev_platform(tmpdir, prefix) as platform, aiohttp.ClientSession() as session:
            nc = await nats.connect(platform.env["PYFAAS_NATS_URL"])
            try:
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
    print(f"\nCold start, {count} wakes and {count} bare starts per script, in one run:")
    for label, (wakes, bare, headers) in results.items():
        print(f"{label}:")
        w_med, w_p99 = report("wake through the gateway (full answer)", wakes)
        b_med, b_p99 = report("bare uv run --script → listening", bare)
        print(f"  {'X-Pyfaas-Cold-Start (median)':<38} {statistics.median(headers):7.0f} ms")
        print(
            f"  {'ratio wake / bare':<38} median {w_med / b_med:7.2f} ×      p99 {w_p99 / b_p99:7.2f} ×"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
