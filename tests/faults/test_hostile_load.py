"""200 concurrent clients against a function that randomly answers, fails, stalls, closes
the connection before answering, and breaks off mid-answer; some clients give up early
themselves. The gateway does not crash, and afterwards its open file descriptors and its
memory are back to their level before the load (10 s in ``make test``, 30 s in
``make faults``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import FULL, open_fds, platform_on, record, rss_kib, wait_until
from tests.platform import Client, example, script

CLIENTS = 200
SECONDS = 30.0 if FULL else 10.0
MAX_IDLE = 8
"""PYFAAS_UPSTREAM_MAX_IDLE_PER_FUNCTION: the keep-alive connections the gateway may keep."""

HOSTILE = script(
    "import os, random, socket, time\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *args): pass\n"
    "    def reply(self, status, body):\n"
    "        self.send_response(status)\n"
    "        self.send_header('content-length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def do_GET(self):\n"
    "        r = random.random()\n"
    "        if r < 0.40: return self.reply(200, b'ok' * 50)\n"
    "        if r < 0.55: return self.reply(500, b'boom')\n"
    "        if r < 0.70:\n"
    "            time.sleep(random.uniform(0.5, 3.0)); return self.reply(200, b'late')\n"
    "        if r < 0.80:\n"
    "            self.close_connection = True\n"
    "            self.connection.shutdown(socket.SHUT_RDWR); return\n"
    "        if r < 0.90:\n"
    "            self.send_response(200); self.send_header('content-length', '1000')\n"
    "            self.end_headers(); self.wfile.write(b'partial'); self.wfile.flush()\n"
    "            self.close_connection = True; return\n"
    "        self.send_response(200); self.send_header('transfer-encoding', 'chunked')\n"
    "        self.end_headers()\n"
    "        for _ in range(random.randint(1, 5)):\n"
    "            self.wfile.write(b'5\\r\\nchunk\\r\\n'); self.wfile.flush()\n"
    "            time.sleep(random.uniform(0, 0.5))\n"
    "        if random.random() < 0.5: self.wfile.write(b'0\\r\\n\\r\\n')\n"
    "        else: self.close_connection = True\n"
    "class S(ThreadingHTTPServer):\n"
    "    request_queue_size = 512\n"
    "    daemon_threads = True\n"
    "S(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n"
)


async def _hammer(gateway: str, fid: str, seconds: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            rng = random.Random(n)
            while time.monotonic() < deadline:
                # A client that gives up early cancels its request mid-way.
                timeout = aiohttp.ClientTimeout(total=rng.choice([0.2, 1.0, 5.0, 5.0]))
                try:
                    async with session.get(f"{gateway}/gateway/{fid}/x", timeout=timeout) as r:
                        await r.read()
                        outcomes[str(r.status)] += 1
                except TimeoutError:
                    outcomes["client gave up"] += 1
                except aiohttp.ClientPayloadError:
                    outcomes["cut"] += 1
                except aiohttp.ClientError as exc:
                    outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return outcomes


@pytest.mark.timeout(180)
async def test_200_hostile_clients_leave_no_trace(
    tmp_path: Path, nats_url: str, postgres_url: str
) -> None:
    async with (
        platform_on(
            tmp_path / "data", nats_url, postgres_url,
            PYFAAS_UPSTREAM_FIRST_BYTE_TIMEOUT="2", PYFAAS_STREAM_IDLE_TIMEOUT="2",
            PYFAAS_UPSTREAM_MAX_IDLE_PER_FUNCTION=str(MAX_IDLE),
        ) as platform,
        aiohttp.ClientSession() as session,
    ):  # fmt: skip
        client = Client(session, platform)
        fid = (await client.create(HOSTILE, user="load", name="hostile"))["id"]
        healthy = (await client.create(example("hello_stdlib.py"), user="load", name="ok"))["id"]
        await client.wait_for(fid, {"ready"})
        await client.wait_for(healthy, {"ready"})
        gateway = platform.service_pid("gateway")
        assert (await client.call(healthy)).status == 200
        fds_before, rss_before = open_fds(gateway), rss_kib(gateway)

        outcomes = await _hammer(platform.gateway, fid, SECONDS)
        ended = time.monotonic()

        async def settled() -> bool:
            return open_fds(gateway) <= fds_before + MAX_IDLE

        await wait_until(settled, 30, "the gateway's descriptors back to their level", 0.5)
        recovery = time.monotonic() - ended
        fds_after, rss_after = open_fds(gateway), rss_kib(gateway)
        assert platform.service_pid("gateway") == gateway, "the gateway restarted"
        async with session.get(f"{platform.gateway}/healthz") as r:
            assert r.status == 200
        assert (await client.call(healthy, "after")).status == 200
        grown_mib = (rss_after - rss_before) / 1024
        assert grown_mib < 40, f"gateway memory grew {grown_mib:.1f} MiB"
        total = sum(outcomes.values())
        assert total > CLIENTS
        record(
            "hostile load",
            f"{CLIENTS} clients for {SECONDS:g}s against a function that fails, stalls, "
            "closes and breaks off at random",
            recovery,
            lost=0,
            detail=f"{total} requests: {dict(outcomes.most_common())}; gateway fds "
            f"{fds_before} -> {fds_after} (pool keeps ≤ {MAX_IDLE}), RSS "
            f"{rss_before // 1024} -> {rss_after // 1024} MiB; no restart",
        )
