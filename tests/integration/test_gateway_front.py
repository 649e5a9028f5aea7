"""The gateway's fast path (``pyfaas_gateway.front``) and its hand-off to aiohttp, on one
connection, as a keep-alive or pipelining client drives it."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.gateway_harness import GatewayUnderTest, Upstream

pytestmark = pytest.mark.timeout(30)


async def _responses(reader: asyncio.StreamReader, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (status line, body) pairs, each body delimited by Content-Length."""
    out = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        out.append((lines[0], await reader.readexactly(length)))
    return out


async def test_pipelined_requests_then_a_hand_off_on_one_connection(
    gw: GatewayUnderTest, upstream: Upstream
) -> None:
    fid = await gw.add_function(upstream.url)
    # Added behind the gateway's back (no event): its first request is a miss, and the
    # miss (a database read, shared by concurrent requests) goes through aiohttp's path.
    reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    writer.write(f"GET /gateway/{fid}/ HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    queries = gw.gateway.routes.db_queries
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Two fast-path requests and one for aiohttp (/healthz), sent in one write; then a
        # body (aiohttp's path too) on the same, now handed-off, connection.
        writer.write(
            f"GET /gateway/{fid}/one?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n"
            f"HEAD /gateway/{fid}/two HTTP/1.1\r\nHost: gw\r\nX-Pyfaas-Secret: no\r\n\r\n"
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            f"POST /gateway/{fid}/three HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc".encode()
        )
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200")
        length = int(first.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        one = json.loads(await reader.readexactly(length))
        assert one["path"] == "/one?x=1"
        headers = dict((k.lower(), v) for k, v in one["headers"])
        assert headers["x-forwarded-prefix"] == f"/gateway/{fid}"
        assert headers["host"] == upstream.url.split("//", 1)[1]
        second = await reader.readuntil(b"\r\n\r\n")  # HEAD: no body follows
        assert second.startswith(b"HTTP/1.1 200")
        (health_status, health), (post_status, post) = await _responses(reader, 2)
        assert health_status.startswith(b"HTTP/1.1 200") and b"ok" in health
        assert post_status.startswith(b"HTTP/1.1 200")
        assert json.loads(post)["body"] == "abc"
    finally:
        writer.close()
    assert gw.gateway.routes.db_queries == queries  # none per request, on either path


async def test_an_unknown_function_is_answered_by_aiohttps_path(gw: GatewayUnderTest) -> None:
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET /gateway/00000000-0000-4000-8000-000000000000/ HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
        [(status, body)] = await _responses(reader, 1)
        assert status.startswith(b"HTTP/1.1 404")
        assert json.loads(body)["status"] == 404
    finally:
        writer.close()


async def _connect(gw: GatewayUnderTest) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))


async def test_small_bodies_on_one_connection_reach_the_function_whole(
    gw: GatewayUnderTest, upstream: Upstream
) -> None:
    # What an MCP client does: small JSON POSTs, one after another on a kept-alive
    # connection; here pipelined in one write, then a body split across two writes.
    fid = await gw.add_function(upstream.url)
    await gw.gateway.routes.lookup(fid)  # in memory: the fast path may serve it
    call = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    reader, writer = await _connect(gw)
    try:
        writer.write(
            f"POST /gateway/{fid}/mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(call)}\r\n\r\n".encode() + call
            + f"GET /gateway/{fid}/after HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
        )  # fmt: skip
        (post_status, post), (get_status, get) = await _responses(reader, 2)
        assert post_status.startswith(b"HTTP/1.1 200") and get_status.startswith(b"HTTP/1.1 200")
        seen = json.loads(post)
        assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/mcp", call.decode())
        assert dict((k.lower(), v) for k, v in seen["headers"])["content-length"] == str(len(call))
        assert json.loads(get)["path"] == "/after"

        head = f"PUT /gateway/{fid}/split HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n"
        writer.write(head.encode() + b"01234")
        await writer.drain()
        await asyncio.sleep(0.2)  # the rest comes a little later
        writer.write(b"56789")
        [(status, body)] = await _responses(reader, 1)
        assert status.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["body"] == "0123456789"
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_connection_header_cannot_unframe_a_body(
    gw: GatewayUnderTest, upstream: Upstream, path: str
) -> None:
    # "Connection: Content-Length" names Content-Length hop-by-hop. Were it dropped, the
    # function would read the body as the start of a next request: a request smuggled
    # past the gateway. The gateway frames the body itself, on either path (a route not
    # in memory yet goes through aiohttp's).
    fid = await gw.add_function(upstream.url)
    if path == "fast":
        await gw.gateway.routes.lookup(fid)
    smuggled = f"GET /gateway/{fid}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    reader, writer = await _connect(gw)
    try:
        writer.write(
            f"POST /gateway/{fid}/form HTTP/1.1\r\nHost: gw\r\nConnection: Content-Length\r\n"
            f"Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
        )  # fmt: skip
        [(status, body)] = await _responses(reader, 1)
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["body"] == smuggled.decode()
    await asyncio.sleep(0.1)
    assert [s["path"] for s in upstream.seen] == ["/form"]
