"""Hostile input to the API (in-process, on a real NATS; no deployer, so nothing a refusal
lets through could be carried out): control characters, path tricks, deep JSON, huge
headers, random bytes, and clients that trickle their request. None may get a 5xx, and the
API must go on answering afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pyfaas_api.app import init_app
from pyfaas_api.settings import ApiSettings
from tests.platform import example
from tests.services import free_port

GOOD = example("hello_stdlib.py")


class Api:
    """HTTP to the API on its port, plus the address for raw sockets."""

    host = "127.0.0.1"

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port

    async def request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.session.request(method, path, **kwargs)
        await response.read()
        return response

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kwargs)


@pytest.fixture
async def api(nats_url: str, prefix: str) -> AsyncIterator[Api]:
    """The API served the way ``main`` serves it (a runner with its keep-alive timeout,
    here one second), so the connection-level defences are the real ones."""
    settings = ApiSettings(
        nats_url=nats_url, nats_prefix=prefix, query_timeout=1.0, body_timeout=1.0,
        keepalive_timeout=1.0, max_creates_per_minute=0,
    )  # fmt: skip
    runner = web.AppRunner(init_app(settings), keepalive_timeout=settings.keepalive_timeout)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield Api(session, port)
    finally:
        await runner.cleanup()


async def still_up(api: Api) -> None:
    assert (await api.get("/healthz")).status == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", "alice\r\nX-Injected: 1"),
        ("user", "al\x00ice"),
        ("user", "../bob"),
        ("user", "bob%2F.."),
        ("name", "a\nb"),
        ("name", ".."),
        ("name", "a/b"),
        ("name", "\u202ename"),
    ],
)
async def test_names_with_control_characters_or_path_tricks_are_refused(
    api: Api, field: str, value: str
) -> None:
    body = {"user": "alice", "name": "ok", "code": GOOD, field: value}
    response = await api.post("/faas/python", json=body)
    assert response.status == 422, await response.text()
    assert field in {e["field"] for e in (await response.json())["errors"]}
    await still_up(api)


async def test_env_names_with_crlf_are_refused(api: Api) -> None:
    body = {"user": "alice", "code": GOOD, "env": {"A\r\nB": "x"}}
    assert (await api.post("/faas/python", json=body)).status == 422


async def test_very_deep_json_is_400(api: Api) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await api.post(
        "/faas/python", data=deep, headers={"content-type": "application/json"}
    )
    assert response.status == 400
    assert "nests deeper" in (await response.json())["detail"]
    await still_up(api)


async def test_very_large_headers_are_refused_without_a_5xx(api: Api) -> None:
    response = await api.get("/faas/python?user=alice", headers={"X-Big": "x" * 100_000})
    assert 400 <= response.status < 500
    many = {f"X-H{i}": "v" for i in range(300)}
    response = await api.get("/faas/python?user=alice", headers=many)
    assert 400 <= response.status < 500
    await still_up(api)


async def test_random_bytes_as_body_or_script(api: Api) -> None:
    noise = os.urandom(4096)
    response = await api.post(
        "/faas/python", data=noise, headers={"content-type": "application/json"}
    )
    assert response.status == 400
    as_text = noise.decode("latin-1")
    response = await api.post("/faas/python", json={"user": "alice", "code": as_text})
    assert response.status == 422
    await still_up(api)


async def test_ids_that_are_not_uuids(api: Api) -> None:
    for raw in ("..", "..%2F..%2Fetc", "%00", "x" * 5000, "1;DROP TABLE functions"):
        response = await api.get(f"/faas/python/{raw}")
        assert 400 <= response.status < 500, raw
    await still_up(api)


async def _raw(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(api.host, api.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    async with asyncio.timeout(seconds):
        return await reader.read()  # until the server closes


async def test_a_client_trickling_its_headers_is_cut_off(api: Api) -> None:
    reader, writer = await _raw(api)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    started = time.monotonic()

    async def trickle() -> None:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(trickle())
    try:
        await _closed_within(reader, 10)
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < 10
    await still_up(api)


async def test_a_client_trickling_its_body_gets_408(api: Api) -> None:
    reader, writer = await _raw(api)
    body = json.dumps({"user": "alice", "code": GOOD}).encode()
    writer.write(
        b"POST /faas/python HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()

    async def trickle() -> None:
        for byte in body[10:]:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(10):
            status_line = await reader.readline()
    finally:
        sender.cancel()
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    await still_up(api)


async def test_crlf_and_bare_cr_in_a_raw_header_are_400(api: Api) -> None:
    for bad in (b"X-A: a\rb\r\n", b"X-A: a\x00b\r\n", b" folded: x\r\n"):
        reader, writer = await _raw(api)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n")
        await writer.drain()
        answer = await _closed_within(reader, 5)
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400", (bad, answer[:100])
    await still_up(api)
