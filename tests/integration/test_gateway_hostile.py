"""Hostile input to the gateway (in-process, real Postgres and NATS, a real upstream):
path tricks that aim at another function, control characters and huge headers, a body
that stalls. None may get a 5xx from the gateway, reach another function, or take the
gateway down."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream, upstream_app
from tests.services import free_port

pytestmark = pytest.mark.timeout(30)


async def _raw_request(gw: GatewayUnderTest, head: bytes) -> bytes:
    """Send bytes as they are (no client library normalises them) and read the answer."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def _healthy(gw: GatewayUnderTest, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{gw.url}/healthz") as r:
        assert r.status == 200


async def test_dot_dot_and_encoded_slashes_never_reach_another_function(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    other = Upstream()
    runner = web.AppRunner(upstream_app(other), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    other.url = f"http://127.0.0.1:{port}"
    try:
        mine = await gw.add_function(upstream.url)
        theirs = await gw.add_function(other.url)
        for path in (
            f"/gateway/{mine}/../{theirs}/secret",
            f"/gateway/{mine}/..%2F{theirs}%2Fsecret",
            f"/gateway/{mine}/%2e%2e/%2e%2e/gateway/{theirs}/secret",
        ):
            answer = await _raw_request(
                gw, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert await _status(answer) == 200, answer[:200]
        # Everything went to my function, under my prefix, and none to theirs.
        assert len(upstream.seen) == 3
        assert other.seen == []
        for path in (
            f"/gateway/{mine}%2F..%2F{theirs}/secret",
            f"/gateway/..%2F{theirs}/secret",
            f"/gateway/{theirs}%00/secret",
        ):
            answer = await _raw_request(
                gw, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert await _status(answer) == 404, (path, answer[:200])
        assert other.seen == []
    finally:
        await runner.cleanup()
    await _healthy(gw, session)


async def test_control_characters_in_headers_are_400(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    for bad in (b"X-A: a\rb\r\n", b"X-A: a\x00b\r\n", b" folded: x\r\n", b"X\r\nInjected: 1\r\n"):
        answer = await _raw_request(
            gw, f"GET /gateway/{fid}/x HTTP/1.1\r\nHost: x\r\n".encode() + bad + b"\r\n"
        )
        assert 400 <= await _status(answer) < 500, (bad, answer[:200])
    assert all("Injected" not in dict(seen["headers"]) for seen in upstream.seen)
    await _healthy(gw, session)


async def test_huge_headers_are_refused_without_a_5xx(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid, "x"), headers={"X-Big": "x" * 100_000}) as r:
        assert 400 <= r.status < 500
    many = {f"X-H{i}": "v" for i in range(300)}
    async with session.get(gw.function_url(fid, "x"), headers=many) as r:
        assert 400 <= r.status < 500
    await _healthy(gw, session)


async def test_a_body_that_stalls_is_cut_off_with_408(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(stream_idle_timeout=0.5)
    fid = await gw.add_function(upstream.url)
    head = (
        f"POST /gateway/{fid}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"only a little")  # and then nothing
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.split(b" ", 2)[1] == b"408", status_line
    await _healthy(gw, session)


async def test_a_client_trickling_its_headers_is_cut_off(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    # Slowloris: a head sent a byte at a time never completes; the connection is closed
    # after PYFAAS_KEEPALIVE_TIMEOUT, and other clients are served meanwhile.
    gw = await start_gateway(keepalive_timeout=1.0)
    fid = await gw.add_function(upstream.url)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"GET /gateway/{fid}/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() + b"a" * 200

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    started = asyncio.get_running_loop().time()
    try:
        async with session.get(gw.function_url(fid, "other")) as r:
            assert r.status == 200  # not held up by the slow one
        async with asyncio.timeout(10):
            answer = await reader.read()  # until the gateway closes the connection
    finally:
        sender.cancel()
        writer.close()
    assert asyncio.get_running_loop().time() - started < 10
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:100]
    assert all(seen["path"] != "/slow" for seen in upstream.seen)
    await _healthy(gw, session)


async def test_two_authorization_headers_are_refused(
    gw: GatewayUnderTest, upstream: Upstream
) -> None:
    # Which one counts would be anybody's guess, and the one not judged could carry the
    # caller's platform token to the function.
    fid = await gw.add_function(upstream.url)
    await gw.gateway.routes.lookup(fid)  # in memory: the fast path would see it first
    answer = await _raw_request(
        gw,
        f"GET /gateway/{fid}/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic dTpw\r\n"
        f"Authorization: Bearer a.b.c\r\nConnection: close\r\n\r\n".encode(),
    )
    assert await _status(answer) == 400
    assert b"one Authorization header" in answer
    assert upstream.seen == []
