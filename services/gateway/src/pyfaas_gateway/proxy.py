"""``ANY /gateway/{id}/{path}``: the reverse proxy to a function.

Bodies stream both ways without buffering; hop-by-hop headers (RFC 9110 §7.6.1) and those
named in ``Connection`` are dropped; ``X-Forwarded-*`` are set. A function that is not
ready answers 503 with ``Retry-After``, a failed one 502 with its reason, an unknown id 404.
"""

from __future__ import annotations

import logging
from uuid import UUID

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pyfaas_common.problems import Problem, not_found, unavailable

from .keys import ACCESS, ROUTES, SESSION, SETTINGS

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
    )
)  # fmt: skip


def _drop_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        lower = key.lower()
        if lower not in HOP_BY_HOP and lower not in named:
            out.add(key, value)
    return out


def upstream_request_headers(request: web.Request, prefix: str) -> CIMultiDict[str]:
    headers = _drop_hop_by_hop(request.headers)
    headers.popall("Host", None)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.headers.get("X-Forwarded-Proto", request.scheme)
    headers["X-Forwarded-Host"] = request.headers.get("X-Forwarded-Host", request.host)
    headers["X-Forwarded-Prefix"] = prefix
    return headers


def _function_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise not_found(f"no function {raw!r} (function ids are UUIDs)") from None


async def proxy(request: web.Request) -> web.StreamResponse:
    function_id = _function_id(request.match_info["id"])
    route = await request.app[ROUTES].lookup(function_id)
    if route is None:
        raise not_found(f"no function with id {function_id}")
    if route.state in ("pending", "deploying") or (route.state == "ready" and not route.endpoint):
        raise unavailable(f"the function is {route.state}; it is not ready yet", retry_after=1)
    if route.state == "failed":
        raise Problem(
            502, "Function failed", route.reason or "the function failed", "function-failed"
        )
    if route.state == "sleeping":
        raise unavailable("the function is asleep", retry_after=2)
    if route.state != "ready":
        raise not_found(f"the function is {route.state}")
    assert route.endpoint is not None

    prefix = f"/gateway/{function_id}"
    tail = request.match_info.get("path", "")
    url = f"{route.endpoint}/{tail}"
    if request.query_string:
        url += "?" + request.query_string

    settings = request.app[SETTINGS]
    access = request.app[ACCESS]
    access.begin(function_id)
    counted = _CountingBody(request) if request.body_exists else None
    bytes_out = 0
    error = True
    try:
        try:
            upstream = await request.app[SESSION].request(
                request.method,
                url,
                headers=upstream_request_headers(request, prefix),
                data=counted.chunks() if counted else None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=settings.upstream_connect_timeout,
                    sock_read=settings.upstream_first_byte_timeout,
                ),
            )
        except aiohttp.ClientConnectorError as exc:
            request.app[ROUTES].forget(function_id)
            raise Problem(502, "Function unreachable",
                          f"could not connect to the function: {exc.os_error or exc}",
                          "upstream-unreachable") from None  # fmt: skip
        except TimeoutError:
            raise Problem(504, "Function timed out", "the function did not answer in time",
                          "upstream-timeout") from None  # fmt: skip
        except aiohttp.ClientError as exc:
            raise Problem(502, "Bad gateway", f"the function's answer broke off: {exc}",
                          "upstream-error") from None  # fmt: skip
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(_drop_hop_by_hop(upstream.headers))
            if upstream.headers.get("Content-Length") is None:
                response.headers.popall("Content-Length", None)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    bytes_out += len(chunk)
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError):
                # Headers are sent: all we can do is end the stream.
                log.warning(
                    "upstream broke off mid-response", extra={"function_id": str(function_id)}
                )
                return response
            await response.write_eof()
            error = upstream.status >= 500
            return response
    finally:
        access.end(
            function_id,
            bytes_in=counted.count if counted else 0,
            bytes_out=bytes_out,
            error=error,
        )


class _CountingBody:
    """Streams the client's body to the function chunk by chunk, counting bytes."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.count = 0

    async def chunks(self):  # type: ignore[no-untyped-def]
        limit = self.request.app[SETTINGS].max_body_bytes
        async for chunk in self.request.content.iter_any():
            self.count += len(chunk)
            if self.count > limit:
                raise Problem(413, "Body too large", f"the request body is over {limit} bytes")
            yield chunk
