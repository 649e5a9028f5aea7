"""The SDK's create is safe to retry: a 503 or a lost answer is sent again with the same
``Idempotency-Key`` (so the API makes one function however often it is sent), and other
errors are not retried. The API here is a stand-in on loopback that fails on purpose; the
API's own handling of the key is tested end to end in tests/e2e/test_user_flow.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from pyfaas.client import ApiError, Client
from pyfaas.config import Config
from tests.services import free_port

CODE = "# /// script\n# dependencies = []\n# ///\nprint('hi')\n"
FUNCTION = {
    "id": "7d0e0c55-3c1b-4a7e-8f5e-2b1f0c9d8e11", "user": "alice", "name": "hi",
    "state": "pending", "desired": "running", "reason": "", "url": "http://gw/gateway/x/",
    "generation": 1, "observed_generation": 0, "runtime": "local", "env": {},
    "idle_timeout": 900, "delete_after": 604800, "created_at": "2026-11-27T00:00:00Z",
    "updated_at": "2026-11-27T00:00:00Z",
}  # fmt: skip


def _problem(status: int) -> web.Response:
    body = {"type": "about:blank", "title": "Service unavailable", "status": status,
            "detail": "NATS JetStream did not acknowledge the command"}  # fmt: skip
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json",
        headers={"Retry-After": "0"},
    )  # fmt: skip


Script = list[Callable[[], web.StreamResponse]]


@pytest.fixture
async def api() -> AsyncIterator[tuple[Client, Script, list[str]]]:
    """A stand-in API whose answers to POST /faas/python are taken from ``script`` in
    turn; ``keys`` is the Idempotency-Key of each request it saw."""
    script: Script = []
    keys: list[str] = []

    async def create(request: web.Request) -> web.StreamResponse:
        keys.append(request.headers.get("Idempotency-Key", ""))
        return script.pop(0)()

    app = web.Application()
    app.router.add_post("/faas/python", create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = Client(Config(api_url=f"http://127.0.0.1:{port}", user="alice"), timeout=0.5)
    try:
        yield client, script, keys
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_503_or_a_proxys_502_504_is_retried_with_the_same_key(
    api: tuple[Client, Script, list[str]],
) -> None:
    client, script, keys = api
    script += [lambda: _problem(503), lambda: _problem(502), lambda: _problem(504),
               lambda: web.json_response(FUNCTION, status=202)]  # fmt: skip
    fn = await client.create(CODE, name="hi")
    assert str(fn.id) == FUNCTION["id"]
    assert len(keys) == 4 and len(set(keys)) == 1 and keys[0]


async def test_a_lost_answer_is_retried_with_the_same_key(
    api: tuple[Client, Script, list[str]],
) -> None:
    client, script, keys = api

    def hang() -> web.StreamResponse:
        raise asyncio.CancelledError  # as if the answer never came: the connection drops

    script += [hang, lambda: web.json_response(FUNCTION, status=202)]
    await client.create(CODE, name="hi", idempotency_key="mine")
    assert keys == ["mine", "mine"]


async def test_retries_end_and_other_errors_are_not_retried(
    api: tuple[Client, Script, list[str]],
) -> None:
    client, script, keys = api
    script += [lambda: _problem(503)] * 3
    with pytest.raises(ApiError) as refused:
        await client.create(CODE, retries=2)
    assert refused.value.status == 503 and len(keys) == 3

    script += [lambda: _problem(422)]
    with pytest.raises(ApiError) as invalid:
        await client.create(CODE)
    assert invalid.value.status == 422 and len(keys) == 4  # asked once
