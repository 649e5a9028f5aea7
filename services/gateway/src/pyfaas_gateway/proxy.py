"""``ANY /gateway/{id}/{path}``: the reverse proxy to a function.

:mod:`app` routes every method here, except the plain case (no body or a small one, a
ready public route already in memory), which :mod:`front` serves on its fast path with
the same answers; what it does not serve it hands to aiohttp, and so here. The route comes from the cache (:mod:`routes`); a
function that is not ready answers 503 with ``Retry-After``, a failed one 502 with its
reason, an unknown id 404, a sleeping one goes through :func:`wake` (the seam the
idle-functions issue fills in). A private function's caller is checked first
(:mod:`authorize`). A WebSocket upgrade goes to :mod:`websocket`; everything
else is one exchange on the keep-alive pool (:mod:`upstream`): the request body streams
to the function as the client sends it, the response streams back as the function
flushes it (each server-sent event when it is written), and a client that goes away
cancels the handler (``handler_cancellation``), which closes the upstream connection.

Limits, each a problem document while the response has not started: 413 for a body
over ``max_body_bytes``, 502 when the function cannot be reached, 504 when it does not
start answering in time, 408 when the client's body stalls. Once the response has
started, a stalled or broken stream is cut: the client sees an incomplete body, never a
fake end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from uuid import UUID

from aiohttp import web

from pyfaas_common.problems import Problem, not_found, unavailable

from .authorize import authorize
from .exchange import Account, UpstreamCall, relay, too_long
from .headers import response_headers, upstream_target
from .keys import GATEWAY, Gateway
from .routes import Route
from .websocket import is_websocket_upgrade, proxy_websocket

log = logging.getLogger(__name__)


def function_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise not_found(f"no function {raw!r} (function ids are UUIDs)") from None


COLD_START = web.RequestKey("cold_start_ms", int)
"""Set on a request that woke its function (or waited for the wake), for the
``X-Pyfaas-Cold-Start`` response header."""


async def ready_route(gateway: Gateway, fid: UUID, request: web.Request | None = None) -> Route:
    """The route of a function that can take a request now, or the problem that says why
    it cannot. A sleeping function is woken first (:mod:`wake`), and so is one whose wake
    is under way: the request waits for it rather than getting a 503."""
    route = await gateway.routes.lookup(fid)
    if route is None:
        raise not_found(f"no function with id {fid}")
    if request is not None:
        authorize(gateway.auth, route, request)  # before a wake: strangers wake nothing
    if route.state == "ready" and route.target is not None:
        return route
    if route.state == "sleeping" or (
        route.state in ("pending", "deploying") and gateway.waker.waking(fid)
    ):
        route, waited = await gateway.waker.wake(route)
        if request is not None:
            request[COLD_START] = round(waited * 1000)
        return route
    if route.state in ("pending", "deploying", "ready"):
        raise unavailable(f"the function is {route.state}; it is not ready yet", retry_after=1)
    if route.state == "failed":
        raise Problem(
            502, "Function failed", route.reason or "the function failed", "function-failed"
        )
    raise not_found(f"the function is {route.state}")


async def proxy(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    route = await ready_route(gateway, function_id(request.match_info["id"]), request)
    if is_websocket_upgrade(request):
        return await proxy_websocket(gateway, request, route)
    return await _exchange(gateway, request, route)


class _ClientBody:
    """The client's body as the function receives it: streamed, counted, limited."""

    __slots__ = ("count", "idle", "limit", "request")

    def __init__(self, request: web.Request, limit: int, idle: float) -> None:
        self.request = request
        self.limit = limit
        self.idle = idle or None
        self.count = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.idle):
                    chunk = await content.readany()
            except TimeoutError:
                raise Problem(
                    408, "Request body stalled",
                    f"the client sent no body bytes for {self.idle:g}s", "body-stalled",
                ) from None  # fmt: skip
            if not chunk:
                return
            self.count += len(chunk)
            if self.count > self.limit:
                raise _too_large(self.limit)
            yield chunk


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "Request body too large",
        f"the request body is over the gateway's limit of {limit} bytes", "body-too-large",
    )  # fmt: skip


async def _exchange(gateway: Gateway, request: web.Request, route: Route) -> web.StreamResponse:
    settings = gateway.settings
    fid = route.function_id
    assert route.target is not None
    loop = asyncio.get_running_loop()
    started = loop.time()

    body: _ClientBody | None = None
    if request.body_exists:
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise _too_large(settings.max_body_bytes)
        body = _ClientBody(request, settings.max_body_bytes, settings.stream_idle_timeout)
    head, chunked = gateway.headers.request_head(
        request, upstream_target(request.raw_path), route.target.host_header,
        f"/gateway/{fid}", send_body=body is not None,
    )  # fmt: skip

    response: web.StreamResponse | None = None
    with Account(gateway, route) as account:
        try:
            async with (
                asyncio.timeout(settings.max_duration or None),
                UpstreamCall(
                    gateway, route, head, method=request.method,
                    body=body.chunks if body is not None else None, chunked=chunked,
                ) as upstream,
            ):  # fmt: skip
                account.status = upstream.status
                gateway.metrics.latency.observe(loop.time() - started)
                headers = response_headers(upstream.headers)
                cold_start = request.get(COLD_START)
                if cold_start is not None:
                    headers["X-Pyfaas-Cold-Start"] = str(cold_start)
                reason = upstream.reason.decode("latin-1") or None
                whole = upstream.complete_body()
                if whole is not None and request.method != "HEAD":
                    # The common small answer, already here in full: one write, no chunking.
                    headers.popall("Content-Length", None)
                    account.bytes_out = len(whole)
                    return web.Response(
                        status=upstream.status, reason=reason, body=whole, headers=headers
                    )

                response = web.StreamResponse(
                    status=upstream.status, reason=reason, headers=headers
                )
                if "Content-Length" not in headers and upstream.status not in (204, 304):
                    account.stream_opened()
                await response.prepare(request)
                if not await relay(account, upstream, response.write):
                    _cut(request)
                    return response
                await response.write_eof()
                return response
        except Problem as problem:
            account.status = problem.status
            raise
        except TimeoutError:  # max_duration
            account.status = 504
            if response is not None and response.prepared:
                _cut(request)
                return response
            raise too_long(settings) from None
        finally:
            if body is not None:
                account.bytes_in = body.count


def _cut(request: web.Request) -> None:
    """End a started response so the client sees it is incomplete: close the connection
    without the final chunk (a clean end would pass a broken stream off as whole)."""
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
