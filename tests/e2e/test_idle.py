"""Idle functions, end to end with the real reaper: a function nobody calls goes to sleep
(its process stops), says why, wakes when asked, and is deleted after sleeping too long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest

from pyfaas_common.subjects import Subjects
from tests.e2e.conftest import running_platform
from tests.platform import Client, Platform, example, local_only, script

SSE = script(
    "import os, time\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "from urllib.parse import parse_qs, urlparse\n"
    "class Events(BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        seconds = float(parse_qs(urlparse(self.path).query).get('seconds', ['1'])[0])\n"
    "        self.send_response(200)\n"
    "        self.send_header('content-type', 'text/event-stream')\n"
    "        self.end_headers()\n"
    "        for i in range(int(seconds * 2)):\n"
    "            self.wfile.write(f'data: {i}\\n\\n'.encode()); self.wfile.flush()\n"
    "            time.sleep(0.5)\n"
    "ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT'])), Events).serve_forever()\n"
)

# Serves once; when woken it finds its marker and fails as a script would whose
# database went away while it slept.
STARTS_ONCE = script(
    "import os, pathlib\n"
    "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
    "marker = pathlib.Path('started-once')\n"
    "if marker.exists():\n"
    "    raise SystemExit('cannot start: the database is gone')\n"
    "marker.touch()\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
    "HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n"
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def idle_platform(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    async for p in running_platform(
        tmp_path_factory.mktemp("idle"),
        nats_url,
        postgres_url,
        PYFAAS_SWEEP_INTERVAL="0.3",
        # Idle times of a second need access records more often than every 2 s: a
        # function is judged on what the reaper has heard.
        PYFAAS_ACCESS_INTERVAL="0.2",
    ):
        local_only(p)  # needs a sweep interval of its own
        yield p


async def test_an_idle_function_sleeps_and_the_next_request_wakes_it(
    idle_platform: Platform, nats_url: str
) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(example("hello_stdlib.py"), idle_timeout=2, delete_after=0))[
            "id"
        ]
        await client.wait_for(fid, {"ready"})
        assert (await client.call(fid, "hi")).status == 200
        process = idle_platform.data_dir / "functions" / fid / "process.json"
        assert process.exists()

        asleep = await client.wait_for(fid, {"sleeping"}, timeout=20)
        assert asleep["reason"] == "idle for 2 s"
        assert asleep["desired"] == "sleeping"
        assert not process.exists()  # scaled to zero: no process

        # A burst during the wake: every request is held, then served; one wake command.
        responses = await asyncio.gather(*(client.call(fid, f"burst/{i}") for i in range(50)))
        details = [(await r.text())[:300] for r in responses if r.status != 200]
        assert [r.status for r in responses] == [200] * 50, details
        # Those that waited for the wake say how long; on a loaded machine a request
        # can arrive after the wake is over and is then an ordinary (warm) one.
        cold = [
            int(r.headers["X-Pyfaas-Cold-Start"])
            for r in responses
            if "X-Pyfaas-Cold-Start" in r.headers
        ]
        assert cold and all(ms >= 0 for ms in cold)
        assert await _wake_commands(nats_url, idle_platform, fid) == 1

        awake = await client.wait_for(fid, {"ready"})
        assert awake["generation"] == asleep["generation"] + 1
        warm = await client.call(fid, "again")
        assert warm.status == 200 and "X-Pyfaas-Cold-Start" not in warm.headers

        async with session.get(f"{idle_platform.gateway}/metrics") as r:
            metrics = await r.text()
        assert 'pyfaas_gateway_cold_start_seconds_count{phase="total"} 1.0' in metrics


async def test_an_open_stream_keeps_a_function_awake(idle_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(SSE, idle_timeout=1, delete_after=0))["id"]
        await client.wait_for(fid, {"ready"})
        url = f"{idle_platform.gateway}/gateway/{fid}/events?seconds=5"
        async with session.get(url) as r:
            events = [line async for line in r.content if line.startswith(b"data:")]
        assert len(events) == 10  # five seconds of events: the stream was never cut
        status, data = await client.get(fid)
        assert (status, data["state"]) == (200, "ready")  # five times its idle_timeout
        await client.wait_for(fid, {"sleeping"}, timeout=20)  # and idle once it ended


async def test_a_wake_that_fails_answers_every_waiting_request_with_the_reason(
    idle_platform: Platform,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(STARTS_ONCE, idle_timeout=1, delete_after=0))["id"]
        await client.wait_for(fid, {"ready"})
        await client.wait_for(fid, {"sleeping"}, timeout=20)
        started = time.monotonic()
        responses = await asyncio.gather(*(client.call(fid, "x") for _ in range(10)))
        elapsed = time.monotonic() - started
        assert [r.status for r in responses] == [502] * 10
        for r in responses:
            assert "the database is gone" in (await r.json())["detail"]
        assert elapsed < 30  # prompt: well before PYFAAS_WAKE_TIMEOUT (60 s)


async def _wake_commands(nats_url: str, platform: Platform, fid: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        subjects = Subjects(platform.env["PYFAAS_NATS_PREFIX"])
        info = await nc.jetstream().stream_info(
            subjects.command_stream, subjects_filter=subjects.command("wake", fid)
        )
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


async def test_a_function_asleep_too_long_is_deleted(idle_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(example("hello_stdlib.py"), idle_timeout=1, delete_after=1))[
            "id"
        ]
        await client.wait_for(fid, {"sleeping"}, timeout=20)
        await client.wait_for(fid, {"HTTP 404"}, timeout=20)
        assert (await client.call(fid, "")).status == 404
        assert not (idle_platform.data_dir / "functions" / fid).exists()


async def test_never_idle_stays_up(idle_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        never = (await client.create(example("hello_stdlib.py"), idle_timeout=None))["id"]
        quick = (await client.create(example("hello_stdlib.py"), idle_timeout=1))["id"]
        await client.wait_for(quick, {"sleeping"}, timeout=20)  # the reaper has swept since
        status, data = await client.get(never)
        assert (status, data["state"], data["idle_timeout"]) == (200, "ready", 0)
