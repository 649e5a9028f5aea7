"""What the gateway tells the rest of the platform and its operators: aggregated access
records on NATS (a few messages per active function, whatever the request rate; an open
stream keeps a function active), ``/metrics``, ``/healthz`` and ``/readyz``, and several
worker processes on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from nats.aio.msg import Msg

from pyfaas_common.db import make_engine
from pyfaas_common.messages import AccessRecord
from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream
from tests.services import free_port

pytestmark = pytest.mark.timeout(60)


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        base, _, rest = series.partition("{")
        if base == name and all(part in rest for part in want.split(",") if part):
            total += float(value)
    return total


async def records(gw: GatewayUnderTest) -> asyncio.Queue[AccessRecord]:
    queue: asyncio.Queue[AccessRecord] = asyncio.Queue()

    async def on(msg: Msg) -> None:
        queue.put_nowait(AccessRecord.model_validate_json(msg.data))

    await gw.nc.subscribe(gw.subjects.all_access, cb=on)
    return queue


async def test_access_records_are_aggregated_per_function_per_interval(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(access_interval=0.5)
    queue = await records(gw)
    busy, quiet = await gw.add_function(upstream.url), await gw.add_function(upstream.url)
    started = time.monotonic()
    for i in range(300):
        async with session.post(gw.function_url(busy, f"r{i}"), data=b"12345") as r:
            await r.read()
    async with session.get(gw.function_url(quiet)) as r:
        await r.read()
    elapsed = time.monotonic() - started

    got: dict[uuid.UUID, list[AccessRecord]] = {busy: [], quiet: []}
    while sum(r.calls for r in got[busy]) < 300 or not got[quiet]:
        record = await asyncio.wait_for(queue.get(), 5)
        got[record.function_id].append(record)
    # Messages follow the intervals, not the 300 requests.
    assert len(got[busy]) <= elapsed / 0.5 + 2
    assert sum(r.errors for r in got[busy]) == 0
    assert sum(r.bytes_in for r in got[busy]) == 300 * 5
    assert sum(r.bytes_out for r in got[busy]) > 300 * 50
    assert [r.calls for r in got[quiet]] == [1]


async def test_access_records_count_each_5xx_as_an_error_on_both_paths(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw = await start_gateway(access_interval=0.3)
    queue = await records(gw)
    via_front = await gw.add_function(upstream.url)
    via_aiohttp = await gw.add_function(upstream.url)
    gone = await gw.add_function(f"http://127.0.0.1:{free_port()}")
    # (function, method, path, status the client gets); a fresh connection for each, so
    # a plain GET to a function already in memory is served by the fast path (front.py),
    # and a body (or a route not in memory yet) by aiohttp's (proxy.py).
    plan = [
        (via_front, "GET", "", 200),  # the cache miss: aiohttp's path, then in memory
        (via_front, "GET", "status/500", 500),
        (via_front, "GET", "status/503", 503),
        (via_front, "GET", "status/404", 404),  # the caller's fault: not an error
        (via_front, "GET", "status/503", 503),
        (via_front, "GET", "", 200),
        (via_aiohttp, "POST", "status/502", 502),
        (via_aiohttp, "POST", "", 200),
        (via_aiohttp, "POST", "status/504", 504),
        (via_aiohttp, "POST", "status/400", 400),
        (gone, "GET", "", 502),  # unreachable: the gateway's own 502
        (gone, "POST", "", 502),
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for fid, method, path, status in plan:
            data = b"body" if method == "POST" else None
            async with s.request(method, gw.function_url(fid, path), data=data) as r:
                await r.read()
                assert r.status == status, (method, path)

    names = {via_front: "fast path", via_aiohttp: "aiohttp path", gone: "unreachable"}
    # (calls, errors) per function: every request a call, every 5xx an error.
    expected = {"fast path": (6, 3), "aiohttp path": (4, 2), "unreachable": (2, 2)}
    assert expected == {
        name: (
            sum(1 for f, *_ in plan if f == fid),
            sum(1 for f, _, _, status in plan if f == fid and status >= 500),
        )
        for fid, name in names.items()
    }
    got: dict[uuid.UUID, list[AccessRecord]] = {fid: [] for fid in names}

    def counted(fid: uuid.UUID) -> bool:
        # Every call counted, and none still in flight (its error would come later).
        seen = got[fid]
        return sum(r.calls for r in seen) >= expected[names[fid]][0] and seen[-1].in_flight == 0

    while not all(counted(fid) for fid in got):
        record = await asyncio.wait_for(queue.get(), 5)
        got[record.function_id].append(record)
    assert {
        names[fid]: (sum(r.calls for r in seen), sum(r.errors for r in seen))
        for fid, seen in got.items()
    } == expected


async def test_an_open_stream_keeps_its_function_active(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw = await start_gateway(access_interval=0.3)
    queue = await records(gw)
    fid = await gw.add_function(upstream.url)
    async with aiohttp.ClientSession() as s, s.get(gw.function_url(fid, "sse")) as r:
        await r.content.readuntil(b"\n\n")
        # No new request for several intervals, yet a record every interval, each
        # saying the stream is open and the function was used up to its end.
        seen = [await asyncio.wait_for(queue.get(), 5) for _ in range(3)]
        assert [(x.calls, x.open_streams, x.in_flight) for x in seen] == [
            (1, 1, 1), (0, 1, 1), (0, 1, 1),
        ]  # fmt: skip
        assert all(x.last_access_at == x.window_end for x in seen)
        upstream.release.set()
        await r.read()
    closing = await asyncio.wait_for(queue.get(), 5)
    assert (closing.open_streams, closing.in_flight) == (0, 0)
    with pytest.raises(TimeoutError):  # idle now: no more messages
        await asyncio.wait_for(queue.get(), 0.8)


async def test_metrics_count_what_users_did(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    gone = await gw.add_function(f"http://127.0.0.1:{free_port()}")
    for _ in range(7):
        async with session.get(gw.function_url(fid)) as r:
            assert r.status == 200
    async with session.get(gw.function_url(gone)) as r:
        assert r.status == 502
    async with session.get(gw.function_url(fid, "sse")) as stream:
        await stream.content.readuntil(b"\n\n")
        async with session.get(f"{gw.url}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        upstream.release.set()
        await stream.read()
    assert metric(text, "pyfaas_gateway_requests_total", function=str(fid), status="200") == 7
    assert metric(text, "pyfaas_gateway_requests_total", function=str(gone), status="502") == 1
    assert metric(text, "pyfaas_gateway_response_latency_seconds_count") == 8
    assert metric(text, "pyfaas_gateway_open_streams") == 1
    assert metric(text, "pyfaas_gateway_in_flight_requests") == 1
    assert metric(text, "pyfaas_gateway_upstream_errors_total", kind="connect") == 1
    assert metric(text, "pyfaas_gateway_route_cache_hits_total") >= 7


async def test_health_and_readiness(gw: GatewayUnderTest, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{gw.url}/healthz") as r:
        assert r.status == 200
    async with session.get(f"{gw.url}/readyz") as r:
        assert (r.status, await r.json()) == (
            200, {"status": "ready", "nats": "ok", "database": "ok"},
        )  # fmt: skip
    working = gw.gateway.engine
    gw.gateway.engine = make_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/x")
    try:
        async with session.get(f"{gw.url}/readyz") as r:
            assert r.status == 503
            assert r.content_type == "application/problem+json"
            assert "database" in (await r.json())["detail"]
    finally:
        await gw.gateway.engine.dispose()
        gw.gateway.engine = working


async def test_several_workers_share_one_port_and_one_set_of_metrics(
    nats_url: str,
    prefix: str,
    postgres_url: str,
    gw: GatewayUnderTest,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    log = tmp_path / "gateway.log"
    fid = await gw.add_function(upstream.url)
    port = free_port()
    env = {
        **os.environ,
        "PYFAAS_NATS_URL": nats_url, "PYFAAS_NATS_PREFIX": prefix,
        "PYFAAS_DATABASE_URL": postgres_url, "PYFAAS_GATEWAY_PORT": str(port),
        "PYFAAS_GATEWAY_WORKERS": "2", "PYFAAS_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyfaas_gateway", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 30
        # A fresh connection per request: the kernel picks a worker for each.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            while len(workers) < 2:
                assert time.monotonic() < deadline, "never saw two workers answer"
                try:
                    async with s.get(f"{base}/healthz") as r:
                        workers.add((await r.json())["worker"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)  # not listening yet
            for _ in range(20):
                async with s.get(f"{base}/gateway/{fid}/x") as r:
                    assert r.status == 200
            totals = set()
            for _ in range(4):  # whichever worker answers, the sum is the same
                async with s.get(f"{base}/metrics") as r:
                    text = await r.text()
                totals.add(metric(text, "pyfaas_gateway_requests_total", function=str(fid)))
        assert totals == {20.0}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, log.read_text()
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True
