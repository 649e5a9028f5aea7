"""The code fetcher against a real HTTP server on loopback. Loopback is exactly what the
fetcher refuses, so these tests allow 127.0.0.1 as an operator would allow an internal
source — and check that a redirect to a host outside the allowlist is refused again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pyfaas_common.fetch import FetchPolicy, FetchRefused, fetch_script
from tests.services import free_port

SCRIPT = "# /// script\n# dependencies = []\n# ///\nprint('hi')\n"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def main(request: web.Request) -> web.Response:
        return web.Response(text=SCRIPT)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"#" * 2_000_000)

    async def to_localhost(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{request.url.port}/main.py")

    async def to_main(request: web.Request) -> web.Response:
        raise web.HTTPFound("/main.py")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text=SCRIPT)

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/main.py", main)
    app.router.add_get("/big.py", big)
    app.router.add_get("/to-localhost", to_localhost)
    app.router.add_get("/to-main", to_main)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


INTERNAL = FetchPolicy(allow_http=True, allowed_hosts={"127.0.0.1"}, timeout=1.0)


async def _refused(url: str, policy: FetchPolicy) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        await fetch_script(url, policy)
    return caught.value


async def test_an_allowed_internal_source_is_fetched(server: str) -> None:
    assert await fetch_script(f"{server}/main.py", INTERNAL) == SCRIPT
    assert await fetch_script(f"{server}/to-main", INTERNAL) == SCRIPT


async def test_loopback_is_refused_without_the_allowlist(server: str) -> None:
    refusal = await _refused(f"{server}/main.py", FetchPolicy(allow_http=True))
    assert refusal.rule == "public-addresses-only"


async def test_a_redirect_is_checked_again(server: str) -> None:
    """127.0.0.1 is allowed; ``localhost`` is not, and resolves to loopback."""
    refusal = await _refused(f"{server}/to-localhost", INTERNAL)
    assert refusal.rule == "public-addresses-only"
    assert "localhost resolves to" in refusal.detail


async def test_limits(server: str) -> None:
    assert (await _refused(f"{server}/big.py", INTERNAL)).rule == "size-cap"
    assert (await _refused(f"{server}/loop", INTERNAL)).rule == "redirects"
    assert (await _refused(f"{server}/slow", INTERNAL)).rule == "timeout"
    assert (await _refused(f"{server}/missing", INTERNAL)).rule == "status-200"
