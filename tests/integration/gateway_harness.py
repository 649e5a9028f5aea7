"""What the gateway's integration tests share (no tests here): the gateway app running
in-process on a real port against the real NATS and Postgres of ``tests/conftest.py``, a
small aiohttp app standing in for a function, and helpers to add a route row and to
publish the deployer's state events.

A route is a row in ``functions`` that the test writes as the deployer would; the
gateway learns of changes through ``StateChanged`` events on NATS, as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as Nats
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common import bus
from pyfaas_common.db import FunctionRow
from pyfaas_common.messages import Desired, FunctionView, State, StateChanged, utcnow
from pyfaas_common.subjects import Subjects
from pyfaas_gateway.app import start as start_listening
from pyfaas_gateway.keys import GATEWAY, Gateway
from pyfaas_gateway.settings import GatewaySettings
from tests.services import free_port


@dataclass
class Upstream:
    """A function, as far as the gateway can tell: an aiohttp app on a loopback port."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    """What each request looked like on arrival (method, path, headers)."""
    peers: set[tuple[str, int]] = field(default_factory=set)
    """Distinct client connections: the gateway's keep-alive pool at work."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a test to let a paused handler go on."""
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    """Names of handlers that were cancelled because the gateway hung up."""
    ws_closed: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    """Close codes the function saw from its WebSocket clients."""


def upstream_app(state: Upstream) -> web.Application:
    async def note(request: web.Request) -> None:
        state.seen.append(
            {"method": request.method, "path": request.raw_path, "headers": request.headers}
        )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            state.peers.add(peer)

    async def echo(request: web.Request) -> web.StreamResponse:
        await note(request)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("latin-1"),
            },
            headers={"X-Function": "echo"},
        )

    async def upload(request: web.Request) -> web.StreamResponse:
        await note(request)
        digest, size, chunks = hashlib.sha256(), 0, 0
        async for chunk in request.content.iter_any():
            if not chunks:
                state.first_chunk.set()
            digest.update(chunk)
            size += len(chunk)
            chunks += 1
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def sse(request: web.Request) -> web.StreamResponse:
        """One event, then (when the test releases it) a second, then the end."""
        await note(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b"data: first\n\n")
            await state.release.wait()
            await response.write(b"data: second\n\n")
        except asyncio.CancelledError:
            state.cancelled.put_nowait("sse")
            raise
        await response.write_eof()
        return response

    async def ticks(request: web.Request) -> web.StreamResponse:
        """``n`` events ``every`` seconds apart: a long stream that is never idle."""
        await note(request)
        n, every = int(request.query.get("n", "5")), float(request.query.get("every", "0.1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(n):
            await response.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(every)  # the function's own pace, not a test's wait
        await response.write_eof()
        return response

    async def stall(request: web.Request) -> web.StreamResponse:
        """Starts an answer and stops sending (or never answers with ?headers=0)."""
        await note(request)
        try:
            if request.query.get("headers") == "0":
                await state.release.wait()
                return web.Response(text="late")
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"partial")
            await state.release.wait()
            await response.write_eof()
            return response
        except asyncio.CancelledError:
            state.cancelled.put_nowait("stall")
            raise

    async def hop(request: web.Request) -> web.StreamResponse:
        await note(request)
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Resp-Hop",
                "X-Resp-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "X-End-To-End": "kept",
            },
        )

    async def status(request: web.Request) -> web.StreamResponse:
        """Answers with the status its path names (``/status/503``): a function's own error."""
        await note(request)
        await request.read()
        return web.Response(status=int(request.match_info["code"]), text="as asked")

    async def ws(request: web.Request) -> web.StreamResponse:
        await note(request)
        socket = web.WebSocketResponse(protocols=("pyfaas.v1",))
        await socket.prepare(request)
        async for msg in socket:
            if msg.type is aiohttp.WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    _, code, reason = msg.data.split(":", 2)
                    await socket.close(code=int(code), message=reason.encode())
                    break
                await socket.send_str(f"echo:{msg.data}")
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await socket.send_bytes(msg.data[::-1])
        state.ws_closed.put_nowait(socket.close_code)
        return socket

    app = web.Application()
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ticks", ticks)
    app.router.add_get("/stall", stall)
    app.router.add_get("/hop", hop)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", r"/status/{code:\d{3}}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    runner = web.AppRunner(upstream_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"http://127.0.0.1:{port}"
    yield state
    state.release.set()
    await runner.cleanup()


@dataclass
class GatewayUnderTest:
    url: str
    app: web.Application
    engine: AsyncEngine
    nc: Nats
    subjects: Subjects

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    def function_url(self, function_id: uuid.UUID, path: str = "") -> str:
        return f"{self.url}/gateway/{function_id}/{path}"

    async def add_function(
        self,
        endpoint: str | None,
        state: State = State.READY,
        reason: str = "",
        *,
        visibility: str = "public",
        owner: str = "alice",
        invoke_key_hash: str | None = None,
    ) -> uuid.UUID:
        """A function row, written before the gateway hears of it (a cache miss)."""
        function_id = uuid.uuid4()
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                FunctionRow.__table__.insert().values(
                    id=function_id,
                    owner=owner,
                    name="fn",
                    code="",
                    code_digest="0" * 64,
                    env={},
                    secrets={},
                    visibility=visibility,
                    invoke_key_hash=invoke_key_hash,
                    runtime="local",
                    idle_timeout=None,
                    desired="running",
                    state=state.value,
                    reason=reason,
                    endpoint=endpoint,
                    generation=1,
                    observed_generation=1,
                    last_command_seq=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        return function_id

    async def change_state(
        self,
        function_id: uuid.UUID,
        state: State,
        endpoint: str | None = None,
        reason: str = "",
        **view: Any,
    ) -> None:
        """What the deployer does: write the row, then publish the event; returns once
        the gateway has applied it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(FunctionRow)
                .where(FunctionRow.id == function_id)
                .values(state=state.value, endpoint=endpoint, reason=reason)
            )
        now = utcnow()
        view = FunctionView(
            id=function_id, user="alice", name="fn", state=state,
            desired=Desired.DELETED if state is State.DELETED else Desired.RUNNING,
            reason=reason, endpoint=endpoint, generation=1, observed_generation=1,
            runtime="local", created_at=now, updated_at=now, **view,
        )  # fmt: skip
        applied = asyncio.Event()
        original = self.gateway.routes.apply

        def apply_and_tell(event: StateChanged) -> None:
            original(event)
            if event.function.id == function_id:
                applied.set()

        self.gateway.routes.apply = apply_and_tell  # type: ignore[method-assign]
        try:
            await self.nc.publish(
                self.subjects.event(function_id, state.value),
                bus.encode(StateChanged(function=view)),
            )
            await asyncio.wait_for(applied.wait(), 5)
        finally:
            self.gateway.routes.apply = original  # type: ignore[method-assign]


StartGateway = Callable[..., Awaitable[GatewayUnderTest]]


@pytest.fixture
async def start_gateway(
    nats_url: str, prefix: str, postgres_url: str, engine: AsyncEngine, data_dir: Any
) -> AsyncIterator[StartGateway]:
    """Start a gateway with settings overridden by keyword (``stream_idle_timeout=0.3``)."""
    runners: list[web.AppRunner] = []
    clients: list[Nats] = []

    async def start(**overrides: Any) -> GatewayUnderTest:
        port = free_port()
        settings = GatewaySettings(
            nats_url=nats_url, nats_prefix=prefix, database_url=postgres_url,
            data_dir=data_dir, gateway_port=port, **{"access_interval": 60.0, "wake_timeout": 0.5, **overrides},
        )  # fmt: skip
        # As in production: connections start on the fast path (pyfaas_gateway.front).
        runner = await start_listening(settings)
        runners.append(runner)
        nc = await nats.connect(nats_url)
        clients.append(nc)
        return GatewayUnderTest(
            f"http://127.0.0.1:{port}", runner.app, engine, nc, Subjects(prefix)
        )

    yield start
    for runner in runners:
        await runner.cleanup()
    for nc in clients:
        await nc.close()


@pytest.fixture
async def gw(start_gateway: StartGateway) -> GatewayUnderTest:
    return await start_gateway()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def problem(body: bytes) -> dict[str, Any]:
    return dict(json.loads(body))
