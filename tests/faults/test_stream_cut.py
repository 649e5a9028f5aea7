"""A function's process is killed (SIGKILL) in the middle of a streamed response.

The gateway cuts the client's stream: it closes the connection without the final chunk,
so the client sees an incomplete body (aiohttp: ``ClientPayloadError``; curl: exit 18; an
``EventSource`` reconnects) rather than an end that would pass a broken stream off as
whole (docs/gateway.md, "Limits"). The gateway stays healthy and the deployer restarts
the function.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import platform_on, record, wait_until
from tests.platform import Client, example, script

STREAMER = script(
    "import os, time\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def do_GET(self):\n"
    "        self.send_response(200)\n"
    "        self.send_header('content-type', 'text/event-stream')\n"
    "        self.send_header('transfer-encoding', 'chunked')\n"
    "        self.end_headers()\n"
    "        for n in range(100000):\n"
    "            data = f'data: {n}\\n\\n'.encode()\n"
    "            self.wfile.write(b'%x\\r\\n%b\\r\\n' % (len(data), data))\n"
    "            self.wfile.flush()\n"
    "            time.sleep(0.05)\n"
    "ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n"
)


@pytest.mark.timeout(120)
async def test_function_killed_mid_stream(tmp_path: Path, nats_url: str, postgres_url: str) -> None:
    async with (
        platform_on(tmp_path / "data", nats_url, postgres_url) as platform,
        aiohttp.ClientSession() as session,
    ):
        client = Client(session, platform)
        fid = (await client.create(STREAMER, user="stream", name="events"))["id"]
        other = (await client.create(example("hello_stdlib.py"), user="stream", name="other"))["id"]
        await client.wait_for(fid, {"ready"})
        await client.wait_for(other, {"ready"})
        gateway = platform.service_pid("gateway")
        process = Path(platform.env["PYFAAS_DATA_DIR"]) / "functions" / fid / "process.json"
        pid = int(json.loads(process.read_text())["pid"])

        events = 0
        outcome = "ended cleanly"
        async with session.get(f"{platform.gateway}/gateway/{fid}/events") as response:
            assert response.status == 200
            try:
                async with asyncio.timeout(20):
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            events += 1
                            if events == 10:
                                os.killpg(pid, signal.SIGKILL)
                                killed_at = time.monotonic()
            except aiohttp.ClientPayloadError as exc:
                outcome = f"cut ({type(exc).__name__})"
        seen_end = time.monotonic() - killed_at
        # The cut, not a fake end: the body was chunked and its last chunk never came.
        assert outcome.startswith("cut"), outcome
        assert seen_end < 5

        async with session.get(f"{platform.gateway}/healthz") as r:
            assert r.status == 200
        assert platform.service_pid("gateway") == gateway
        assert (await client.call(other, "still")).status == 200

        async def restarted() -> bool:
            try:
                new = int(json.loads(process.read_text())["pid"])
            except (OSError, ValueError):
                return False
            if new == pid:
                return False
            status, data = await client.get(fid)
            return status == 200 and data["state"] == "ready"

        await wait_until(restarted, 30, "the function restarted")
        recovery = time.monotonic() - killed_at
        async with session.get(f"{platform.gateway}/gateway/{fid}/again") as response:
            assert response.status == 200
            assert (await response.content.readline()).startswith(b"data: 0")
        record(
            "function killed mid-stream",
            "SIGKILL to a function's process group after 10 server-sent events",
            recovery,
            lost=0,
            detail=f"the client saw the stream {outcome} {seen_end:.2f}s after the kill; "
            "gateway healthy, another function served meanwhile, the function restarted",
        )
