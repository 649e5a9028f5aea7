"""WebSockets through the gateway: :mod:`proxy` hands every ``Upgrade: websocket``
request here.

The function's side is connected first (so a function that refuses the upgrade answers
with a problem document, not a broken socket), then the client's side is accepted with the
subprotocol the function chose, and two pumps copy messages both ways. When one side
closes, the other is closed with the same code and reason, so close codes pass through.
The socket counts as an open stream: the function stays active while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from pyfaas_common.problems import Problem

from .headers import upstream_target
from .keys import Gateway
from .routes import Route

log = logging.getLogger(__name__)

_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-protocol",
     b"sec-websocket-extensions"}
)  # fmt: skip


def is_websocket_upgrade(request: web.Request) -> bool:
    upgrade = request.headers.get("Upgrade")
    return upgrade is not None and upgrade.lower() == "websocket" and request.method == "GET"


def _sendable(code: int | None) -> int:
    """A close code that may go on the wire (RFC 6455 §7.4): 1005/1006 only describe
    what a peer saw, they are never sent."""
    if code is None or code == 1005:
        return 1000
    if code == 1006 or not (1000 <= code <= 4999):
        return 1011
    return code


class _Activity:
    """The last time a message moved either way: the idle limit is on both directions."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.last = loop.time()
        self.bytes_in = 0
        self.bytes_out = 0


async def _pump(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    activity: _Activity,
    idle: float,
    inbound: bool,
) -> tuple[int, str]:
    """Copy messages until ``source`` closes; returns its close code and reason."""
    while True:
        try:
            msg = await source.receive(timeout=idle or None)
        except TimeoutError:
            if activity.loop.time() - activity.last < idle:
                continue  # the other direction is alive
            return 1001, f"idle for {idle:g}s"
        activity.last = activity.loop.time()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
            size = len(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
            size = len(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        elif msg.type is WSMsgType.ERROR:
            return 1011, "the connection failed"
        else:  # CLOSING / CLOSED
            return source.close_code or 1006, ""
        if inbound:
            activity.bytes_in += size
        else:
            activity.bytes_out += size


async def proxy_websocket(
    gateway: Gateway, request: web.Request, route: Route
) -> web.StreamResponse:
    settings = gateway.settings
    fid = route.function_id
    assert route.endpoint is not None
    headers, _ = gateway.headers.forwarded(request, f"/gateway/{fid}")
    forwarded = [
        (n.decode("latin-1"), v.decode("latin-1"))
        for n, v in headers
        if n.lower() not in _HANDSHAKE and n.lower() != b"content-length"
    ]
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    url = URL(route.endpoint + upstream_target(request.raw_path).decode("latin-1"), encoded=True)
    gateway.access.begin(fid)
    status = 101
    activity = _Activity(asyncio.get_running_loop())
    try:
        try:
            upstream = await gateway.session.ws_connect(
                url, headers=forwarded, protocols=protocols, autoclose=False, autoping=True,
                max_msg_size=settings.max_body_bytes,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
            )  # fmt: skip
        except aiohttp.WSServerHandshakeError as exc:
            gateway.metrics.upstream_errors.labels(route.label, "websocket_refused").inc()
            status = exc.status if 400 <= exc.status < 500 else 502
            raise Problem(
                status, "WebSocket refused",
                f"the function did not accept the WebSocket: {exc.status} {exc.message}",
                "websocket-refused",
            ) from None  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            gateway.metrics.upstream_errors.labels(route.label, "connect").inc()
            status = 502
            raise Problem(
                502, "Function unreachable", f"could not connect to the function: {exc}",
                "upstream-unreachable",
            ) from None  # fmt: skip
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False, autoping=True, max_msg_size=settings.max_body_bytes,
        )  # fmt: skip
        gateway.access.stream_opened(fid)
        gateway.metrics.open_streams.inc()
        try:
            await client.prepare(request)
            idle = settings.stream_idle_timeout
            to_function = asyncio.create_task(_pump(client, upstream, activity, idle, True))
            to_client = asyncio.create_task(_pump(upstream, client, activity, idle, False))
            try:
                done, _ = await asyncio.wait(
                    (to_function, to_client), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (to_function, to_client):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            first = to_client if to_client in done else to_function
            code, reason = (1011, "") if first.cancelled() or first.exception() else first.result()
            # Close the other side with what this side said, then finish this side's
            # closing handshake with the same words.
            other, this = (client, upstream) if first is to_client else (upstream, client)
            with contextlib.suppress(Exception):
                await other.close(code=_sendable(code), message=reason.encode()[:123])
            with contextlib.suppress(Exception):
                await this.close(code=_sendable(code), message=reason.encode()[:123])
        finally:
            gateway.access.stream_closed(fid)
            gateway.metrics.open_streams.dec()
            if not upstream.closed:
                with contextlib.suppress(Exception):
                    await upstream.close()
        return client
    finally:
        gateway.metrics.count_request(route.label, status)
        gateway.access.end(
            fid, bytes_in=activity.bytes_in, bytes_out=activity.bytes_out, error=status >= 500
        )
