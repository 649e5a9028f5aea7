"""The route cache as users notice it: a deleted function answers 404 at once with no
restart, a moved one is reached where it went, and in a steady state (or under a flood of
random ids) requests do not become database queries."""

from __future__ import annotations

import uuid

import aiohttp
import pytest
from aiohttp import web

from pyfaas_common.messages import State
from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream, upstream_app
from tests.services import free_port

pytestmark = pytest.mark.timeout(30)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


async def test_steady_state_requests_make_no_database_queries(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway()
    fid = await gw.add_function(upstream.url)  # written after the gateway loaded its table
    for _ in range(50):
        async with session.get(gw.function_url(fid)) as r:
            assert r.status == 200
    assert gw.gateway.routes.db_queries == 2  # the start-up load, and this one miss
    async with session.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    assert metric(text, "pyfaas_gateway_route_db_queries_total") == 2
    assert metric(text, "pyfaas_gateway_route_cache_hits_total") == 49
    assert metric(text, "pyfaas_gateway_route_cache_misses_total") == 1

    # A restarted gateway knows every live function from its start-up load.
    again = await start_gateway()
    async with session.get(again.function_url(fid)) as r:
        assert r.status == 200
    assert again.gateway.routes.db_queries == 1


async def test_a_flood_of_unknown_ids_is_not_a_flood_of_queries(
    start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(route_miss_queries_per_second=10)
    same = uuid.uuid4()
    for _ in range(30):
        async with session.get(gw.function_url(same)) as r:
            assert r.status == 404
    assert gw.gateway.routes.db_queries == 1 + 1  # load + one read, then the negative cache
    for _ in range(200):
        async with session.get(gw.function_url(uuid.uuid4())) as r:
            assert r.status == 404
            assert r.content_type == "application/problem+json"
    assert gw.gateway.routes.db_queries <= 2 + 10 + 2  # the ration, plus a refill or two


async def test_state_events_correct_the_cache_without_a_restart(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid)) as r:
        assert r.status == 200

    await gw.change_state(fid, State.SLEEPING)
    async with session.get(gw.function_url(fid)) as r:
        assert r.status == 503  # no deployer here to wake it: the bounded wait ends
        assert "still waking" in (await r.json())["detail"]

    await gw.change_state(fid, State.READY, endpoint=upstream.url)
    async with session.get(gw.function_url(fid, "back")) as r:
        assert (await r.json())["path"] == "/back"

    queries = gw.gateway.routes.db_queries
    await gw.change_state(fid, State.DELETED)
    for _ in range(5):
        async with session.get(gw.function_url(fid)) as r:
            assert r.status == 404
    assert gw.gateway.routes.db_queries == queries  # the event said enough


async def test_a_function_that_moved_is_reached_where_it_went(
    gw: GatewayUnderTest, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    fid = await gw.add_function(upstream.url)
    async with session.get(gw.function_url(fid)) as r:
        assert r.status == 200
    moved = Upstream()
    runner = web.AppRunner(upstream_app(moved), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await gw.change_state(fid, State.READY, endpoint=f"http://127.0.0.1:{port}")
        async with session.get(gw.function_url(fid, "where")) as r:
            assert r.status == 200
        assert [s["path"] for s in moved.seen] == ["/where"]
    finally:
        await runner.cleanup()
