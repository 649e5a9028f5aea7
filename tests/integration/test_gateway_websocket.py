"""WebSockets through the gateway: messages both ways, the subprotocol the function
chose, and close codes passed through in both directions."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.integration.gateway_harness import GatewayUnderTest, Upstream

pytestmark = pytest.mark.timeout(30)


async def test_messages_flow_both_ways_and_the_function_closes_with_its_code(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.ws_connect(
        gw.function_url(fid, "ws"), protocols=("other", "pyfaas.v1")
    ) as ws:
        assert ws.protocol == "pyfaas.v1"
        assert gw.gateway.metrics.open_streams._value.get() == 1
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes(timeout=5) == b"\x03\x02\x01"
        await ws.send_str("close:4001:see you")
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4001, "see you")
    assert ws.close_code == 4001
    assert await asyncio.wait_for(upstream.ws_closed.get(), 5) == 4001


async def test_the_clients_close_code_reaches_the_function(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    ws = await session.ws_connect(gw.function_url(fid, "ws"))
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "echo:ping"
    await ws.close(code=4002, message=b"done")
    assert await asyncio.wait_for(upstream.ws_closed.get(), 5) == 4002
    assert ws.close_code == 4002


async def test_a_function_that_refuses_the_upgrade_answers_a_problem(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(gw.function_url(fid, "not-a-socket"))
    assert refused.value.status == 502
    assert gw.gateway.metrics.open_streams._value.get() == 0
