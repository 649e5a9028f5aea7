"""The gateway's HTTP/1.1 client to functions: a keep-alive pool of asyncio protocols.

:mod:`proxy` sends every plain HTTP request through one :class:`UpstreamPool` per
process. Profiling showed the upstream hop is where a Python proxy spends its time:
``aiohttp.ClientSession`` costs about three times what this does, because it builds
request and response objects, a stream reader, timers and tasks per request. Here a
request is one ``transport.write`` of the head the proxy built, and the response is
parsed by ``httptools`` (llhttp, the parser aiohttp's own server uses) straight into a
small buffer the proxy drains. Bodies stream both ways with back-pressure; nothing is
buffered whole.

A connection goes back to the pool only when its response was read to the end, the
request body was sent in full and the function allowed keep-alive; anything else
(cancellation, a timeout, an error) closes it, so a client that goes away leaves no
connection, task or descriptor behind.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import httptools

# Pause reading from a function when this much of its body waits for a slow client.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18


class UpstreamError(Exception):
    """The exchange with a function failed; ``kind`` is the metrics label."""

    kind = "error"

    def __str__(self) -> str:
        return self.args[0] if self.args else self.kind


class ConnectFailed(UpstreamError):
    kind = "connect"


class FirstByteTimeout(UpstreamError):
    kind = "first_byte_timeout"


class IdleTimeout(UpstreamError):
    kind = "idle_timeout"


class UpstreamBroken(UpstreamError):
    """The connection closed or the function's answer did not parse."""

    kind = "broken"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a function listens, parsed once when its route is cached."""

    host: str
    port: int
    tls: bool
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        scheme, _, rest = url.partition("://")
        authority = rest.split("/", 1)[0]
        tls = scheme == "https"
        host, sep, port = authority.rpartition(":")
        if not sep or not port.isdigit() or host.endswith(":"):  # no port, or bare IPv6
            host, port = authority, "443" if tls else "80"
        return cls(host.strip("[]"), int(port), tls, authority.encode("latin-1"))


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.open_connections += 1

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes on an idle connection: it is not sound any more
            self.close()
            return
        self.response.feed(data)

    def eof_received(self) -> bool:
        if self.response is not None:
            self.response.eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
        self.pool.open_connections -= 1
        self.pool.forget(self)
        if self.response is not None:
            self.response.lost(exc)
        self._wake_writer(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer(None)

    # -- ours ---------------------------------------------------------------------
    def _wake_writer(self, exc: Exception | None) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if exc is None and not self.closed:
                waiter.set_result(None)
            else:
                waiter.set_exception(UpstreamBroken("the function closed the connection"))

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamBroken("the function closed the connection")
        self.transport.write(data)
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """One response from a function, fed by :class:`_Connection` and drained by the proxy.

    ``headers_received`` resolves with the status line and headers; :meth:`read` then
    returns body chunks as they arrive (``b""`` at the end).
    """

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop, head: bool) -> None:
        self.conn = conn
        self.loop = loop
        self.is_head = head
        self.parser = httptools.HttpResponseParser(self)
        self.headers_received: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.done = False
        self.received = 0
        self.body_sent = True
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self._read_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._delimited = True
        self._interim = False
        self._timer: asyncio.TimerHandle | None = None

    # -- httptools callbacks ------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100-continue and friends: the real answer follows
            self._interim = True
            self.headers, self.reason = [], b""
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._delimited = status in (204, 304) or any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers
        )
        if self.is_head:
            self.done = True  # a HEAD answer has no body, whatever its Content-Length
        self._cancel_timer()
        if not self.headers_received.done():
            self.headers_received.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.is_head:
            return
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._read_paused and self.conn.transport:
            self._read_paused = True
            self.conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.done = True
        self._wake()

    # -- fed by the connection ----------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamBroken(f"the function's answer is not valid HTTP: {exc}"))
            self.conn.close()

    def eof(self) -> None:
        if self.headers_received.done() and not self._delimited and not self.done:
            self.keep_alive = False  # the body ran until the function closed: complete
            self.done = True
            self._wake()
        elif not self.done:
            self.fail(UpstreamBroken("the function closed the connection mid-answer"))

    def lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.eof()

    def fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._cancel_timer()
        if not self.headers_received.done():
            self.headers_received.set_exception(exc)
            self.headers_received.exception()  # retrieved: the proxy may be gone already
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def start_first_byte_timer(self, seconds: float) -> None:
        self._cancel_timer()
        if not self.headers_received.done():
            self._timer = self.loop.call_later(
                seconds,
                self.fail,
                FirstByteTimeout(f"the function did not start its answer within {seconds:g}s"),
            )

    # -- read by the proxy --------------------------------------------------------
    def complete_body(self) -> bytes | None:
        """The whole body when it is already here (the common small answer), else None."""
        if not self.done or self._error is not None:
            return None
        body = b"".join(self.chunks)
        self.chunks.clear()
        self._buffered = 0
        return body

    async def read(self, idle_timeout: float) -> bytes:
        """The next body chunk, ``b""`` at the end; raises :class:`IdleTimeout` when the
        function sends nothing for ``idle_timeout`` seconds (0: wait for ever)."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self._buffered -= len(chunk)
                if self._read_paused and self._buffered < _LOW_WATER and self.conn.transport:
                    self._read_paused = False
                    self.conn.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            waiter = self._waiter = self.loop.create_future()
            timer = None
            if idle_timeout:
                timer = self.loop.call_later(idle_timeout, _expire, waiter, idle_timeout)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    @property
    def reusable(self) -> bool:
        return (
            self.done
            and self._error is None
            and self.keep_alive
            and self.body_sent
            and not self.conn.closed
        )


def _expire(waiter: asyncio.Future[None], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(IdleTimeout(f"the function sent nothing for {seconds:g}s"))


BodySource = Callable[[], AsyncIterator[bytes]]


class Exchange:
    """One request/response on a pooled connection. ``async with`` it: leaving the block
    returns the connection to the pool, or closes it when it cannot be reused."""

    def __init__(self, pool: UpstreamPool, response: UpstreamResponse) -> None:
        self.pool = pool
        self.response = response
        self.sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UpstreamResponse:
        return self.response

    async def __aexit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        response = self.response
        conn = response.conn
        if self.sender is not None and not self.sender.done():
            self.sender.cancel()
            response.body_sent = False
        response._cancel_timer()
        conn.response = None
        if response.reusable:
            self.pool.release(conn)
        else:
            conn.close()


class UpstreamPool:
    """Keep-alive connections to functions, shared by every request of a process."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        keepalive_seconds: float = 30.0,
        max_idle_per_endpoint: int = 64,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive_seconds = keepalive_seconds
        self.max_idle = max_idle_per_endpoint
        self._idle: dict[Endpoint, list[_Connection]] = {}
        self._closing = False
        self.open_connections = 0
        """Live connections, idle or busy: what the leak tests watch."""
        self._ssl: ssl.SSLContext | None = None

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        if endpoint.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, endpoint),
                    endpoint.host,
                    endpoint.port,
                    ssl=self._ssl if endpoint.tls else None,
                )
        except TimeoutError:
            raise ConnectFailed(
                f"could not connect to the function within {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                f"could not connect to the function: {exc.strerror or exc}"
            ) from None
        return conn

    def _take_idle(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint)
        if not idle:
            return None
        deadline = time.monotonic() - self.keepalive_seconds
        while idle:
            conn = idle.pop()  # most recently used first: it is the likeliest alive
            if not conn.closed and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.endpoint, [])
        if self._closing or len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    async def exchange(
        self,
        endpoint: Endpoint,
        head: bytes,
        *,
        method: str,
        body: BodySource | None,
        chunked: bool,
        first_byte_timeout: float,
        resend: bool = True,
    ) -> Exchange:
        """Send ``head`` (and the body, from a task) and return once the connection is
        set; await ``response.headers_received`` for the answer. A ``head`` that carries
        its small body whole says ``resend=False``: it is not sent again on a fresh
        connection when a kept-alive one turns out closed (the function may have acted on
        it)."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn = self._take_idle(endpoint)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(endpoint)
            response = UpstreamResponse(conn, loop, head=method == "HEAD")
            conn.response = response
            exchange = Exchange(self, response)
            assert conn.transport is not None
            conn.transport.write(head)
            if body is None:
                response.start_first_byte_timer(first_byte_timeout)
                if reused and attempt == 0 and resend:
                    # A kept-alive connection the function closed just now fails before a
                    # single byte comes back; a request without a body is safe to resend.
                    try:
                        await response.headers_received
                    except UpstreamBroken:
                        if response.received == 0:
                            exchange.finish()
                            continue
                    except BaseException:
                        exchange.finish()
                        raise
                return exchange
            response.body_sent = False
            exchange.sender = loop.create_task(
                _send_body(conn, response, body, chunked, first_byte_timeout)
            )
            return exchange
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closing = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        # Let the transports run connection_lost so the counts settle before shutdown.
        await asyncio.sleep(0)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())


async def _send_body(
    conn: _Connection,
    response: UpstreamResponse,
    body: BodySource,
    chunked: bool,
    first_byte_timeout: float,
) -> None:
    """Stream the client's body to the function; the first-byte clock starts when the
    body is sent, so a long upload is not mistaken for a slow function."""
    try:
        async for chunk in body():
            if not chunk:
                continue
            if chunked:
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                await conn.write(chunk)
        if chunked:
            await conn.write(b"0\r\n\r\n")
    except UpstreamBroken:
        return  # the function hung up; what it answered (if anything) is still read
    except Exception as exc:
        # The client's side failed (too large, went quiet, went away): so does the exchange.
        response.fail(exc)
        conn.close()
        return
    response.body_sent = True
    response.start_first_byte_timer(first_byte_timeout)
