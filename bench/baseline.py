"""What the benchmarks share: the bare ``uv run --script`` start they compare against, a
running platform to measure, and how figures are printed.

Imported by ``bench/deploy.py`` and ``bench/coldstart.py`` (run from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.platform import Platform  # noqa: E402
from tests.services import free_port, nats_service  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


def report(name: str, values: list[float], width: int = 38) -> tuple[float, float]:
    med, p99 = statistics.median(values), percentile(values, 99)
    print(
        f"  {name:<{width}} n={len(values):<3} median {med * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
    )
    return med, p99


async def bare_start(workdir: Path, code: str) -> float:
    """``uv run --script`` by hand, to its first accepted connection. One path per script,
    as a person re-running it would have: uv keeps that script's resolved environment, as
    it does for a function's ``main.py``."""
    from uv import find_uv_bin

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
                    raise TimeoutError("bare start did not listen within 120s") from None
                await asyncio.sleep(0.002)
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()


@contextlib.asynccontextmanager
async def dev_platform(tmpdir: Path, prefix: str) -> AsyncIterator[Platform]:
    """``faas dev`` on the embedded SQLite, on the NATS at $PYFAAS_TEST_NATS_URL or on one
    started here."""
    with nats_service(tmpdir / "nats", print) as nats_url:
        # A benchmark is one user's burst: the per-user quotas would cut it short.
        quotas_off = {"PYFAAS_MAX_CREATES_PER_MINUTE": "0", "PYFAAS_MAX_FUNCTIONS_PER_USER": "0"}
        platform = Platform(tmpdir / "data", nats_url, prefix, extra_env=quotas_off)
        platform.data_dir.mkdir()
        await platform.start()
        try:
            yield platform
        finally:
            await platform.stop()
