"""One proxied exchange with a function, the parts both front ends share.

:func:`proxy._exchange` (aiohttp's request and response objects) and
:func:`front._exchange` (the fast path, in bytes) differ only in how they read the client
and write to it. What an exchange means — its problems, its bookkeeping, how a streamed
body is relayed and when it is cut — is here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from pyfaas_common.problems import Problem

from .keys import Gateway
from .routes import Route
from .settings import GatewaySettings
from .upstream import (
    BodySource,
    ConnectFailed,
    Exchange,
    FirstByteTimeout,
    UpstreamError,
    UpstreamResponse,
)

log = logging.getLogger(__name__)


def upstream_problem(gateway: Gateway, route: Route, exc: UpstreamError) -> Problem:
    """What the client is told when the function fails before its answer has started."""
    gateway.metrics.upstream_errors.labels(route.label, exc.kind).inc()
    if isinstance(exc, ConnectFailed):
        gateway.routes.forget(route.function_id)  # it may have moved: read it afresh
        return Problem(502, "Function unreachable", str(exc), "upstream-unreachable")
    if isinstance(exc, FirstByteTimeout):
        return Problem(504, "Function timed out", str(exc), "upstream-timeout")
    return Problem(502, "Bad gateway", f"the function's answer broke off: {exc}", "upstream-error")


def too_long(settings: GatewaySettings) -> Problem:
    """``PYFAAS_MAX_DURATION`` passed before the answer started."""
    return Problem(
        504, "Exchange too long",
        f"the exchange lasted over the gateway's limit of {settings.max_duration:g}s",
        "max-duration",
    )  # fmt: skip


class UpstreamCall:
    """``async with UpstreamCall(...) as upstream``: the function's answer once its status
    and headers are in; leaving the block gives the connection back to the pool (or closes
    it). A failure before the headers is raised as the :class:`Problem` the client gets
    (502, 504). ``resend``: see :meth:`UpstreamPool.exchange`.

    A plain class, not a generator context manager: it is on every request's path, and
    each layer of coroutine frames costs there (docs/gateway.md)."""

    __slots__ = ("body", "chunked", "exchange", "gateway", "head", "method", "resend", "route")

    def __init__(
        self,
        gateway: Gateway,
        route: Route,
        head: bytes,
        *,
        method: str,
        body: BodySource | None,
        chunked: bool,
        resend: bool = True,
    ) -> None:
        self.gateway = gateway
        self.route = route
        self.head = head
        self.method = method
        self.body = body
        self.chunked = chunked
        self.resend = resend
        self.exchange: Exchange | None = None

    async def __aenter__(self) -> UpstreamResponse:
        gateway, route = self.gateway, self.route
        assert route.target is not None
        try:
            exchange = await gateway.pool.exchange(
                route.target, self.head, method=self.method, body=self.body,
                chunked=self.chunked, resend=self.resend,
                first_byte_timeout=gateway.settings.upstream_first_byte_timeout,
            )  # fmt: skip
        except UpstreamError as exc:
            raise upstream_problem(gateway, route, exc) from None
        try:
            await exchange.response.headers_received
        except UpstreamError as exc:
            exchange.finish()
            raise upstream_problem(gateway, route, exc) from None
        except BaseException:
            exchange.finish()
            raise
        self.exchange = exchange
        return exchange.response

    async def __aexit__(self, *exc: object) -> None:
        if self.exchange is not None:
            self.exchange.finish()


class Account:
    """An exchange's bookkeeping: in flight while it runs (metrics, access records), an
    open stream while it streams, and its status and bytes counted when it ends."""

    __slots__ = ("bytes_in", "bytes_out", "gateway", "route", "status", "streaming")

    def __init__(self, gateway: Gateway, route: Route) -> None:
        self.gateway = gateway
        self.route = route
        self.status = 502
        self.bytes_in = 0
        self.bytes_out = 0
        self.streaming = False

    def __enter__(self) -> Account:
        self.gateway.access.begin(self.route.function_id)
        self.gateway.metrics.in_flight.inc()
        return self

    def stream_opened(self) -> None:
        self.streaming = True
        self.gateway.access.stream_opened(self.route.function_id)
        self.gateway.metrics.open_streams.inc()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gateway, fid = self.gateway, self.route.function_id
        if self.streaming:
            gateway.access.stream_closed(fid)
            gateway.metrics.open_streams.dec()
        gateway.metrics.in_flight.dec()
        gateway.metrics.count_request(self.route.label, self.status)
        gateway.access.end(
            fid, bytes_in=self.bytes_in, bytes_out=self.bytes_out, error=self.status >= 500
        )


async def relay(
    account: Account,
    upstream: UpstreamResponse,
    write: Callable[[bytes], Awaitable[object]],
) -> bool:
    """Write each chunk of the function's body as it arrives (back-pressure through
    ``write``). False when the function broke off or went silent for
    ``PYFAAS_STREAM_IDLE_TIMEOUT``: the caller then cuts the response, so the client sees
    it incomplete rather than a fake end."""
    idle = account.gateway.settings.stream_idle_timeout
    try:
        while chunk := await upstream.read(idle):
            account.bytes_out += len(chunk)
            await write(chunk)
    except UpstreamError as exc:
        account.gateway.metrics.upstream_errors.labels(account.route.label, exc.kind).inc()
        log.warning(
            "cutting a response the function did not finish",
            extra={"function_id": str(account.route.function_id), "error": str(exc)},
        )
        account.status = 502
        return False
    return True
