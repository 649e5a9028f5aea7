"""Every limit of the gateway, each with the answer a client can act on, and a client that
goes away mid-stream: the function's request is cancelled and nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream, open_fds

pytestmark = pytest.mark.timeout(30)


async def until(check: object, timeout: float = 5.0) -> None:
    """Poll a condition the code under test offers no event for (fd counts)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def test_a_body_over_the_limit_is_413_before_the_function_sees_it(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(max_body_bytes=1000)
    fid = await gw.add_function(upstream.url)
    async with session.post(gw.function_url(fid, "upload"), data=b"x" * 2000) as r:
        assert r.status == 413
        assert r.content_type == "application/problem+json"
        assert "1000 bytes" in (await r.json())["detail"]
    assert upstream.seen == []

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 300

    async with session.post(gw.function_url(fid, "upload"), data=chunked()) as r:
        assert r.status == 413
        assert r.content_type == "application/problem+json"

    async with session.post(gw.function_url(fid, "upload"), data=b"z" * 1000) as r:
        assert r.status == 200
        assert (await r.json())["size"] == 1000


@contextlib.contextmanager
def unresponsive_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connecting to it hangs (SYNs are
    dropped), like a function whose node went away."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(server.getsockname())
            fillers.append(s)
        yield server.getsockname()[1]
    finally:
        for s in fillers:
            s.close()
        server.close()


async def test_an_unreachable_function_is_502_naming_the_reason(
    start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream_connect_timeout=0.3)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = await gw.add_function(f"http://127.0.0.1:{closed_port}")
    async with session.get(gw.function_url(refused)) as r:
        assert r.status == 502
        assert r.content_type == "application/problem+json"
        assert "could not connect" in (await r.json())["detail"]

    with unresponsive_port() as port:
        silent = await gw.add_function(f"http://127.0.0.1:{port}")
        started = time.monotonic()
        async with session.get(gw.function_url(silent)) as r:
            assert r.status == 502
            assert "within 0.3s" in (await r.json())["detail"]
        assert time.monotonic() - started < 3


async def test_a_function_that_does_not_start_answering_is_504(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(upstream_first_byte_timeout=0.3)
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid, "stall?headers=0")) as r:
        assert r.status == 504
        assert r.content_type == "application/problem+json"
        assert "0.3s" in (await r.json())["detail"]
    # The gateway hung up on the function: its handler is cancelled, not left running.
    assert await asyncio.wait_for(upstream.cancelled.get(), 5) == "stall"
    await until(lambda: gw.gateway.pool.open_connections == 0)


async def test_a_stream_that_goes_quiet_is_cut_and_seen_as_incomplete(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(stream_idle_timeout=0.3)
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid, "stall")) as r:
        assert r.status == 200
        assert await r.content.readexactly(7) == b"partial"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()  # the chunked body never ends cleanly: the client knows
    assert await asyncio.wait_for(upstream.cancelled.get(), 5) == "stall"


async def test_long_streams_are_not_cut_by_any_timer_but_the_operators(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    # Idle and first-byte limits far below the stream's length: it is never idle, so it
    # lives as long as the function keeps talking.
    gw = await start_gateway(stream_idle_timeout=0.3, upstream_first_byte_timeout=0.3)
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid, "ticks?n=10&every=0.1")) as r:
        body = await r.read()
    assert body.count(b"data: ") == 10

    capped = await start_gateway(max_duration=0.4)
    fid = await capped.add_function(upstream.url)
    async with session.get(capped.function_url(fid, "ticks?n=30&every=0.05")) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    async with session.get(capped.function_url(fid, "stall?headers=0")) as r:
        assert r.status == 504
        assert "0.4s" in (await r.json())["detail"]


async def test_a_client_that_goes_away_cancels_the_function_and_leaks_nothing(
    gw: GatewayUnderTest, upstream: Upstream
) -> None:
    fid = await gw.add_function(upstream.url)
    # Warm up once so that lazily made things (the pool's first connection, the
    # metrics children) are not counted as leaks.
    async with aiohttp.ClientSession() as s, s.get(gw.function_url(fid, "warm")) as r:
        await r.read()
    assert gw.gateway.pool.open_connections == 1  # kept alive, idle
    fds, tasks = open_fds(), len(asyncio.all_tasks())

    for _ in range(5):
        async with aiohttp.ClientSession() as s:
            r = await s.get(gw.function_url(fid, "sse"))
            assert await r.content.readuntil(b"\n\n") == b"data: first\n\n"
            assert gw.gateway.metrics.open_streams._value.get() == 1
            r.close()  # the client goes away mid-stream
        assert await asyncio.wait_for(upstream.cancelled.get(), 5) == "sse"

    # Each stream took the idle connection and closed it when the client left.
    await until(lambda: gw.gateway.pool.open_connections == 0)
    await until(lambda: open_fds() <= fds)
    await until(lambda: len(asyncio.all_tasks()) <= tasks)
    assert gw.gateway.metrics.open_streams._value.get() == 0
    assert gw.gateway.metrics.in_flight._value.get() == 0
