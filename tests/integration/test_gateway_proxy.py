"""The gateway as a reverse proxy, as a client of a function sees it: every method, bodies
streamed both ways (chunked uploads, server-sent events as they are flushed), header
hygiene, the keep-alive pool, and the answers for functions that cannot take a request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pyfaas_common.messages import State
from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_reaches_the_function_with_its_path_and_body(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession, method: str
) -> None:
    fid = await gw.add_function(upstream.url)
    url = gw.function_url(fid, "a%2Fb/c?x=1&y=%20z")
    async with session.request(method, url, data=b"payload") as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["method"] == method
    assert answer["path"] == "/a%2Fb/c?x=1&y=%20z"  # as the client wrote it, not re-encoded
    assert answer["body"] == "payload"
    assert r.headers["X-Function"] == "echo"


async def test_head_answers_headers_only(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.head(gw.function_url(fid, "x")) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) > 0
        assert await r.read() == b""
    # The connection is still good for the next request.
    async with session.get(gw.function_url(fid, "after-head")) as r:
        assert (await r.json())["path"] == "/after-head"


async def test_the_id_alone_reaches_the_functions_root(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    for url in (f"{gw.url}/gateway/{fid}", f"{gw.url}/gateway/{fid}?q=1"):
        async with session.get(url) as r:
            assert (await r.json())["path"] in ("/", "/?q=1")


async def test_each_server_sent_event_arrives_when_the_function_flushes_it(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid, "sse")) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        # The function holds the stream open until released: the first event must
        # arrive before that, or the gateway is buffering.
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        assert first == b"data: first\n\n"
        assert not upstream.release.is_set()
        upstream.release.set()
        assert await r.content.read() == b"data: second\n\n"


async def test_a_chunked_upload_streams_to_the_function_as_it_is_sent(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    sent = bytearray()

    async def body() -> AsyncIterator[bytes]:
        for i in range(50):
            chunk = bytes([i]) * 10_000
            sent.extend(chunk)
            yield chunk
            if i == 0:
                # The rest is sent only once the function has the first chunk: a gateway
                # that buffered the upload would wait here for ever.
                await asyncio.wait_for(upstream.first_chunk.wait(), 5)

    async with session.post(gw.function_url(fid, "upload"), data=body()) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    import hashlib

    assert answer == {"size": len(sent), "sha256": hashlib.sha256(sent).hexdigest()}
    assert upstream.seen[-1]["headers"]["Transfer-Encoding"] == "chunked"


async def test_headers_are_cleaned_and_forwarding_headers_set(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    sent = {
        "Connection": "keep-alive, X-Hop-Named",
        "X-Hop-Named": "dropped because Connection names it",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "X-Pyfaas-Internal": "platform only",
        "Forwarded": "for=6.6.6.6",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-End-To-End": "kept",
        "Authorization": "Bearer user-token",
    }
    async with session.get(gw.function_url(fid, "h"), headers=sent) as r:
        got = {k.lower(): v for k, v in (await r.json())["headers"]}
    for dropped in (
        "x-hop-named", "keep-alive", "proxy-authorization", "te", "x-pyfaas-internal",
        "forwarded",
    ):  # fmt: skip
        assert dropped not in got, dropped
    assert got["x-end-to-end"] == "kept"
    assert got["authorization"] == "Bearer user-token"  # the function's own auth passes
    assert got["host"] == upstream.url.removeprefix("http://")
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert got["x-forwarded-host"] == gw.url.removeprefix("http://")  # not the client's claim
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-prefix"] == f"/gateway/{fid}"

    async with session.get(gw.function_url(fid, "hop")) as r:
        assert await r.text() == "ok"
        assert r.headers["X-End-To-End"] == "kept"
        assert "X-Resp-Hop" not in r.headers
        assert "Keep-Alive" not in r.headers


async def test_the_blocked_header_list_is_configurable(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(blocked_headers="X-Tenant-*, Cookie", trust_forwarded=True)
    fid = await gw.add_function(upstream.url)
    headers = {
        "X-Tenant-Id": "7", "X-Tenant-Role": "admin", "Cookie": "a=b", "X-Pyfaas-Note": "now allowed",
        "X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https",
    }  # fmt: skip
    async with session.get(gw.function_url(fid), headers=headers) as r:
        got = {k.lower(): v for k, v in (await r.json())["headers"]}
    assert "x-tenant-id" not in got and "x-tenant-role" not in got and "cookie" not in got
    assert got["x-pyfaas-note"] == "now allowed"
    assert got["x-forwarded-host"] == "public.example"  # trusted when the operator says so
    assert got["x-forwarded-proto"] == "https"


async def test_requests_share_keep_alive_connections(
    gw: GatewayUnderTest, upstream: Upstream
) -> None:
    fid = await gw.add_function(upstream.url)
    # A new client connection per request: only the gateway's pool can keep them few.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for i in range(40):
            async with s.get(gw.function_url(fid, f"n{i}")) as r:
                assert r.status == 200
    assert len(upstream.peers) == 1
    assert gw.gateway.pool.open_connections == 1


async def test_states_that_cannot_take_a_request(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    cases = [
        (await gw.add_function(None, State.DEPLOYING), 503, "not ready yet"),
        (await gw.add_function(None, State.PENDING), 503, "not ready yet"),
        # No deployer here to carry the wake out: the bounded wait ends in a 503.
        (await gw.add_function(None, State.SLEEPING), 503, "still waking"),
        (await gw.add_function(None, State.FAILED, reason="ImportError: numpy"), 502, "numpy"),
    ]
    for fid, status, words in cases:
        async with session.get(gw.function_url(fid, "x")) as r:
            assert r.status == status
            assert r.content_type == "application/problem+json"
            assert words in (await r.json())["detail"]
            if status == 503:
                assert r.headers["Retry-After"].isdigit()
    for url in (
        gw.function_url("not-a-uuid"),
        gw.function_url("0" * 8 + "-0000-0000-0000-" + "0" * 12),
    ):  # type: ignore[arg-type]
        async with session.get(url) as r:
            assert r.status == 404
            assert r.content_type == "application/problem+json"


async def test_problem_documents_are_json(
    gw: GatewayUnderTest, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{gw.url}/gateway/nope/x") as r:
        doc = json.loads(await r.read())
    assert doc["status"] == 404 and doc["title"] and doc["detail"]
