"""The gateway's front door: a fast path for the common proxied request, aiohttp for the rest.

:func:`app.serve` (and the test harness) listen with :class:`GatewaySite`. Profiling
showed that, once the upstream hop was cheap (:mod:`upstream`), aiohttp's server side —
request and response objects, the router, the middleware chain, the writer — was the
larger part of what a proxied request cost. So each connection starts here, on a small
asyncio protocol, and a request is served here only when it is the plain case:

- ``HTTP/1.1``, a target under ``/gateway/{id}`` with nothing a router would normalise
  (no ``%``, ``//``, ``/.`` in the path), a ``Host`` header, headers that are plain
  tokens and visible characters;
- no body, or a small one (a ``Content-Length`` of at most 64 KiB, within
  ``PYFAAS_MAX_BODY_BYTES``) that arrives promptly (a JSON-RPC call of an MCP client, a
  form); no ``Transfer-Encoding``, no ``Expect``, no ``Upgrade``;
- the route is in memory, ready and public.

Anything else — a WebSocket, an upload, ``/metrics``, an unknown or sleeping or private
function, a malformed head — hands the connection, with every byte not yet served, to
aiohttp's own protocol, which serves it (and all later requests on it) through
:mod:`proxy` as before. So every behaviour has one implementation except the plain
exchange, whose reading and writing are written twice: here in bytes, in
:func:`proxy._exchange` on aiohttp objects; what they share — problems, bookkeeping, the
relay of a streamed body and its cut — is :mod:`exchange`. Both answer the same way: same
headers (``Date``, ``Server``, the default ``Content-Type``), the same problem documents,
the same metrics and access records, the same streaming (each chunk written when it
arrives, with back-pressure), the same cut of a broken stream, and a client that goes
away cancels the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from uuid import UUID

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

from pyfaas_common.problems import PROBLEM_CONTENT_TYPE, Problem

from .exchange import Account, UpstreamCall, relay, too_long
from .headers import build_head, response_headers_raw
from .keys import GATEWAY, Gateway
from .routes import Route

log = logging.getLogger(__name__)

_PREFIX = b"/gateway/"
_MAX_HEAD = 8190
"""A longer head (or one not complete yet at this size) goes to aiohttp, which knows the
limits and the answers."""
_MAX_PIPELINED = 1 << 16
"""Bytes a client may send ahead while its request is served before reading pauses."""
_MAX_BODY = 1 << 16
"""A larger request body streams through aiohttp's path."""
_BODY_WAIT = 1.0
"""Seconds the fast path waits for the rest of a small body before handing the request
to aiohttp (whose ``PYFAAS_STREAM_IDLE_TIMEOUT`` then answers a stalled one with 408)."""
_HEAD_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x20-\x7e\t]*\r\n)*")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/gateway/[\x21-\x7e]*) HTTP/1\.1")
# Headers that take a request off the fast path (bodies, upgrades, credentials for
# :mod:`authorize` to judge are checked separately).
_BODY_OR_UPGRADE = frozenset({b"transfer-encoding", b"upgrade", b"expect"})
_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}
_SERVER = SERVER_SOFTWARE.encode("latin-1")
_MAX_IDS = 10_000
_EMPTY_STATUS = frozenset((204, 304, *range(100, 200)))
"""Answers that never have a body, nor a ``Content-Length`` (as aiohttp)."""


class _Request:
    """What the fast path keeps of a request head."""

    __slots__ = (
        "body", "body_length", "close", "headers", "host", "method", "raw_target",
        "strip_authorization", "tail",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        raw_target: bytes,
        headers: list[tuple[bytes, bytes]],
        host: bytes,
        close: bool,
        strip_authorization: bool,
        body_length: int,
    ) -> None:
        self.method = method
        self.raw_target = raw_target
        self.headers = headers
        self.host = host
        self.close = close
        self.strip_authorization = strip_authorization
        self.tail = b"/"
        """What the function sees as its path: everything after ``/gateway/{id}``."""
        self.body_length = body_length
        """The request's ``Content-Length``; -1 when it had none."""
        self.body = b""


class Front:
    """What every connection of one site shares: aiohttp's server to hand off to, the
    open fast connections (for shutdown), and small caches."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner
        self.app = runner.app
        self.connections: set[_FrontConnection] = set()
        self._gateway: Gateway | None = None
        self._ids: dict[bytes, UUID | None] = {}
        self._date = b""
        self._date_at = 0

    @property
    def gateway(self) -> Gateway | None:
        if self._gateway is None:
            self._gateway = self.app.get(GATEWAY)
        return self._gateway

    def function_id(self, raw: bytes) -> UUID | None:
        try:
            return self._ids[raw]
        except KeyError:
            pass
        try:
            fid: UUID | None = UUID(raw.decode("ascii"))
        except ValueError:
            fid = None
        if len(self._ids) >= _MAX_IDS:  # bounded under a flood of random ids
            self._ids.clear()
        self._ids[raw] = fid
        return fid

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode("latin-1")
        return self._date

    def protocol(self) -> asyncio.Protocol:
        return _FrontConnection(self)


class _FrontConnection(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        """Kept: ``get_running_loop()`` costs a ``getpid()`` each time, on every request."""
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None
        self.peer = b""
        self.read_paused = False
        self.write_paused = False
        self.drain: asyncio.Future[None] | None = None
        self.eof = False
        self.closing = False
        self.idle_since = 0.0
        self.body_wait: asyncio.TimerHandle | None = None
        """Set while a small body is on its way (see ``_BODY_WAIT``)."""

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode("latin-1") if isinstance(peer, tuple) else b""
        self.front.connections.add(self)
        self.idle_since = self.loop.time()

    def data_received(self, data: bytes) -> None:
        if not self.buffer:
            # A request begins: it has the keep-alive timeout to arrive whole (a head sent
            # a byte at a time is still cut), counted from now, not from the last answer.
            self.idle_since = self.loop.time()
        self.buffer = self.buffer + data if self.buffer else data
        if self.task is None:
            self._next()
        elif len(self.buffer) > _MAX_PIPELINED and not self.read_paused:
            self.read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        # As aiohttp: a client that closes its side has gone away; the transport closes
        # and connection_lost cancels what it asked for.
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.closing = True
        if self.body_wait is not None:
            self.body_wait.cancel()
        if self.task is not None:
            self.task.cancel()  # the client went away: so does its exchange
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # -- ours ---------------------------------------------------------------------
    def _wake_writer(self) -> None:
        waiter, self.drain = self.drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self.write_paused and not self.closing:
            self.drain = self.loop.create_future()
            await self.drain

    def _next(self) -> None:
        """Serve the next request in the buffer, or hand the connection to aiohttp."""
        buffer = self.buffer
        if not buffer:
            if self.eof and self.transport is not None:
                self.transport.close()
            return
        end = buffer.find(b"\r\n\r\n", 0, _MAX_HEAD + 4)
        if end < 0:
            if len(buffer) > _MAX_HEAD or self.eof:
                self._hand_off()
            return
        gateway = self.front.gateway
        request = self._parse(buffer, end, gateway)
        if request is None or gateway is None:
            self._hand_off()
            return
        route = self._route(request, gateway)
        if route is None:
            self._hand_off()
            return
        start = end + 4
        if request.body_length > 0:
            stop = start + request.body_length
            if len(buffer) < stop:  # the rest of the body is on its way: wait for it, briefly
                if self.body_wait is None:
                    self.body_wait = self.loop.call_later(_BODY_WAIT, self._hand_off)
                return
            request.body = buffer[start:stop]
            start = stop
        if self.body_wait is not None:
            self.body_wait.cancel()
            self.body_wait = None
        self.buffer = buffer[start:]
        gateway.routes.hits += 1
        self.task = self.loop.create_task(self._serve(gateway, request, route))

    def _parse(self, buffer: bytes, end: int, gateway: Gateway | None) -> _Request | None:
        line_end = buffer.find(b"\r\n", 0, end + 2)
        first = _REQUEST_LINE.fullmatch(buffer, 0, line_end)
        if first is None or not _HEAD_LINES.fullmatch(buffer, line_end + 2, end + 2):
            return None
        method, target = first.group(1), first.group(2)
        path = target.split(b"?", 1)[0]
        if b"%" in path or b"//" in path or b"/." in path or method == b"CONNECT":
            return None
        headers: list[tuple[bytes, bytes]] = []
        host = b""
        close = False
        strip_authorization: bool | None = None
        length = -1
        for line in buffer[line_end + 2 : end].split(b"\r\n") if end > line_end else ():
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
            lname = name.lower()
            if lname == b"host":
                if host:
                    return None
                host = value
            elif lname == b"content-length":
                if length >= 0 or not value.isdigit() or len(value) > 6:
                    return None  # twice, or not a plain number: aiohttp's parser judges
                length = int(value)
                if length > _MAX_BODY or (
                    gateway is not None and length > gateway.settings.max_body_bytes
                ):
                    return None  # streamed, or refused with 413, by aiohttp's path
            elif lname in _BODY_OR_UPGRADE:
                return None
            elif lname == b"connection":
                tokens = value.lower()
                if b"upgrade" in tokens:
                    return None
                close = close or b"close" in tokens
            elif lname == b"authorization":
                if gateway is None or strip_authorization is not None:
                    return None  # several: aiohttp's path refuses them
                # authorize() strips a platform token before the function sees it.
                strip_authorization = gateway.auth.is_platform_token(value.decode("latin-1"))
            headers.append((name, value))
        if not host:
            return None
        return _Request(method, target, headers, host, close, bool(strip_authorization), length)

    def _route(self, request: _Request, gateway: Gateway) -> Route | None:
        target = request.raw_target
        slash = target.find(b"/", len(_PREFIX))
        query = target.find(b"?", len(_PREFIX))
        cut = min(i for i in (slash, query, len(target)) if i >= 0)
        fid = self.front.function_id(target[len(_PREFIX) : cut])
        if fid is None:
            return None
        tail = target[cut:]
        request.tail = tail if tail.startswith(b"/") else b"/" + tail
        route = gateway.routes.cached(fid)
        if route is None or route.state != "ready" or route.target is None or route.private:
            return None  # aiohttp's path answers it: 404, wake, 503, authorize...
        return route

    def _hand_off(self) -> None:
        """From here on aiohttp serves this connection, starting with the bytes not yet
        served (the current request's head included)."""
        if self.body_wait is not None:
            self.body_wait.cancel()
            self.body_wait = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.front.connections.discard(self)
        server = self.front.runner.server
        assert server is not None
        handler = server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        data, self.buffer = self.buffer, b""
        if data:
            handler.data_received(data)
        if self.eof:
            handler.eof_received()

    async def _serve(self, gateway: Gateway, request: _Request, route: Route) -> None:
        keep = False
        try:
            keep = await _exchange(self, gateway, request, route)
        except asyncio.CancelledError:
            keep = False
            raise
        finally:
            self.task = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                if not keep or request.close or self.closing:
                    transport.close()
                else:
                    self.idle_since = self.loop.time()
                    if self.read_paused:
                        self.read_paused = False
                        transport.resume_reading()
                    if self.buffer or self.eof:
                        self._next()

    def response_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        close: bool,
        content_type: bool,
    ) -> list[bytes]:
        """The status line and headers, with what aiohttp would add: ``Date``,
        ``Server``, ``Content-Type`` for a body without one, ``Connection: close``."""
        parts = [b"HTTP/1.1 %d %b" % (status, reason or _REASONS.get(status, b""))]
        have_date = have_server = have_type = False
        for name, value in headers:
            parts += (b"\r\n", name, b": ", value)
            lname = name.lower()
            if lname == b"date":
                have_date = True
            elif lname == b"server":
                have_server = True
            elif lname == b"content-type":
                have_type = True
        if content_type and not have_type:
            parts.append(b"\r\nContent-Type: application/octet-stream")
        if not have_date:
            parts += (b"\r\nDate: ", self.front.date())
        if not have_server:
            parts += (b"\r\nServer: ", _SERVER)
        if close:
            parts.append(b"\r\nConnection: close")
        parts.append(b"\r\n\r\n")
        return parts


async def _exchange(
    conn: _FrontConnection, gateway: Gateway, request: _Request, route: Route
) -> bool:
    """:func:`proxy._exchange` for a fast-path request. Returns whether the connection
    may serve another request."""
    settings = gateway.settings
    metrics = gateway.metrics
    target = route.target
    assert target is not None
    loop = conn.loop
    started = loop.time()
    prefix = route.label.encode("ascii")
    headers, _ = gateway.headers.forwarded_raw(
        request.headers, strip_authorization=request.strip_authorization, peer=conn.peer,
        scheme=b"http", host=request.host, prefix=b"/gateway/" + prefix,
    )  # fmt: skip
    head = build_head(request.method, request.tail, target.host_header, headers, chunked=False)
    is_head = request.method == b"HEAD"

    started_response = False
    with Account(gateway, route) as account:
        account.bytes_in = len(request.body)
        try:
            async with (
                asyncio.timeout(settings.max_duration or None),
                UpstreamCall(
                    gateway, route, head + request.body,
                    method=request.method.decode("latin-1"), body=None, chunked=False,
                    resend=not request.body,
                ) as upstream,
            ):  # fmt: skip
                status = account.status = upstream.status
                metrics.latency.observe(loop.time() - started)
                answer = response_headers_raw(upstream.headers)
                whole = upstream.complete_body()
                if whole is not None and not is_head:
                    # The common small answer, already here in full: one write.
                    answer = [(n, v) for n, v in answer if n.lower() != b"content-length"]
                    if status not in _EMPTY_STATUS:
                        answer.append((b"Content-Length", b"%d" % len(whole)))
                    parts = conn.response_head(
                        status, upstream.reason, answer, close=request.close, content_type=True
                    )
                    parts.append(whole)
                    account.bytes_out = len(whole)
                    await conn.write(b"".join(parts))
                    return True

                empty = is_head or status in _EMPTY_STATUS
                length: bytes | None = None
                for name, value in answer:
                    if name.lower() == b"content-length":
                        length = value
                if status in _EMPTY_STATUS:
                    answer = [(n, v) for n, v in answer if n.lower() != b"content-length"]
                chunked = not empty and length is None
                if chunked:
                    answer.append((b"Transfer-Encoding", b"chunked"))
                if length is None and status not in (204, 304):
                    account.stream_opened()
                parts = conn.response_head(
                    status, upstream.reason, answer, close=request.close,
                    content_type=not empty and length != b"0",
                )  # fmt: skip
                started_response = True
                await conn.write(b"".join(parts))

                async def write(chunk: bytes) -> None:
                    if empty:
                        return
                    if chunked:
                        await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    else:
                        await conn.write(chunk)

                if not await relay(account, upstream, write):
                    _cut(conn)
                    return False
                if chunked:
                    await conn.write(b"0\r\n\r\n")
                return True
        except Problem as problem:
            account.status = problem.status
            await conn.write(_problem_bytes(conn, problem, request))
            return True
        except TimeoutError:  # max_duration
            account.status = 504
            if started_response:
                _cut(conn)
                return False
            await conn.write(_problem_bytes(conn, too_long(settings), request))
            return True
        except Exception:
            if started_response:
                _cut(conn)
                return False
            log.exception("unhandled error", extra={"path": _path(request)})
            account.status = 500
            internal = Problem(
                500, "Internal error", "pyfaas failed to handle this request; it is logged"
            )
            await conn.write(_problem_bytes(conn, internal, request))
            return True


def _path(request: _Request) -> str:
    """The path as aiohttp's ``request.path`` gives it (decoded), for problem documents."""
    return URL(request.raw_target.decode("latin-1"), encoded=True).path


def _problem_bytes(conn: _FrontConnection, problem: Problem, request: _Request) -> bytes:
    body = json.dumps(problem.body(_path(request))).encode()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()]
    headers += (
        (b"Content-Type", PROBLEM_CONTENT_TYPE.encode("latin-1")),
        (b"Content-Length", b"%d" % len(body)),
    )
    parts = conn.response_head(
        problem.status, b"", headers, close=request.close, content_type=False
    )
    parts.append(body)
    return b"".join(parts)


def _cut(conn: _FrontConnection) -> None:
    """End a started response so the client sees it is incomplete (as proxy._cut)."""
    if conn.transport is not None:
        with contextlib.suppress(Exception):
            conn.transport.abort()


class GatewaySite(web.TCPSite):
    """A :class:`web.TCPSite` whose connections start on the fast path (:class:`Front`)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        reuse_port: bool | None = None,
        keepalive_timeout: float = 75.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port)
        self.front = Front(runner)
        self.keepalive_timeout = keepalive_timeout
        """Seconds an idle fast-path connection is kept (aiohttp's own default in
        ``run_app``); handed-off connections follow aiohttp's setting."""
        self.shutdown_timeout = shutdown_timeout
        self._sweeper: asyncio.Task[None] | None = None

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.keepalive_timeout, 10.0))
            expired = loop.time() - self.keepalive_timeout
            for conn in list(self.front.connections):
                if conn.task is None and conn.idle_since < expired and conn.transport:
                    conn.transport.close()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.front.protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self) -> None:
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        # As aiohttp's shutdown: idle connections close now, busy ones finish their
        # answer (within the shutdown timeout), then close.
        busy = []
        for conn in list(self.front.connections):
            conn.closing = True
            if conn.task is None:
                if conn.transport is not None:
                    conn.transport.close()
            else:
                busy.append(conn.task)
        if busy:
            _, pending = await asyncio.wait(busy, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
