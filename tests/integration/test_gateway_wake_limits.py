"""How many requests may wait for one sleeping function to wake
(``PYFAAS_WAKE_MAX_WAITING``): those within the limit are held and go through once the
deployer says the function is ready; one more is answered 503 at once, with
``Retry-After``, rather than held too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from pyfaas_common.messages import State
from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream

pytestmark = pytest.mark.timeout(30)

Answer = tuple[int, dict[str, str], bytes]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the code under test offers no event for (who is waiting)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def waiting(gw: GatewayUnderTest, function_id: uuid.UUID) -> int:
    """Requests held for the function's wake, as the waker counts them."""
    wake = gw.gateway.waker._wakes.get(function_id)
    return 0 if wake is None else wake.waiting


async def test_past_wake_max_waiting_a_request_is_503_at_once_and_the_held_go_through(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    # A wake timeout far beyond the test's waits: only the limit can answer at once.
    gw = await start_gateway(wake_max_waiting=2, wake_timeout=60)
    fid = await gw.add_function(None, State.SLEEPING)

    async def call(n: int) -> Answer:
        async with session.get(gw.function_url(fid, f"r{n}")) as r:
            return r.status, dict(r.headers), await r.read()

    held: list[asyncio.Task[Answer]] = []
    try:
        for n in (1, 2):
            held.append(asyncio.create_task(call(n)))
            await until(lambda: waiting(gw, fid) == len(held))

        try:
            status, headers, body = await asyncio.wait_for(call(3), 5)
        except TimeoutError:
            pytest.fail("a request past PYFAAS_WAKE_MAX_WAITING was held for the wake too")
        assert status == 503
        assert headers["Content-Type"] == "application/problem+json"
        assert int(headers["Retry-After"]) >= 1
        doc: dict[str, Any] = json.loads(body)
        assert doc["status"] == 503
        assert "PYFAAS_WAKE_MAX_WAITING" in doc["detail"]
        assert "2 requests are already waiting" in doc["detail"]
        # The first two are still held, and one wake was asked for, not three.
        assert not any(task.done() for task in held)
        assert waiting(gw, fid) == 2
        assert gw.gateway.waker.commands_published == 1
        assert upstream.seen == []

        # What the deployer does once the function is up: the held requests go through.
        await gw.change_state(fid, State.READY, endpoint=upstream.url)
        answers = await asyncio.wait_for(asyncio.gather(*held), 5)
    finally:
        for task in held:
            task.cancel()
        for task in held:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
    for n, (status, headers, body) in enumerate(answers, 1):
        assert status == 200, body
        assert json.loads(body)["path"] == f"/r{n}"
        assert headers["X-Pyfaas-Cold-Start"].isdigit()
    assert sorted(s["path"] for s in upstream.seen) == ["/r1", "/r2"]
    assert waiting(gw, fid) == 0
