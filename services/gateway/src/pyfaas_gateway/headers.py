"""Header hygiene (RFC 9110 §7.6.1) for both directions of the proxy.

:mod:`proxy` calls :meth:`HeaderPolicy.request_head` to write the request line and headers
the function receives as raw bytes (the upstream client sends them as they are), and
:func:`response_headers` to filter what goes back. :mod:`websocket` uses
:meth:`HeaderPolicy.forwarded` for the upgrade request; :mod:`front` (the fast path) uses
the raw variants, :meth:`HeaderPolicy.forwarded_raw` and :func:`response_headers_raw`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from pyfaas_common.invoke_keys import INVOKE_KEY_HEADER

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
    }
)  # fmt: skip

# Set by the gateway itself, so the client's copies are dropped; `expect` because the
# gateway already answered 100-continue to the client and streams the body.
_REPLACED = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-prefix", b"expect"})
_FORWARDED_VIEW = frozenset({b"x-forwarded-proto", b"x-forwarded-host"})
_INVOKE_KEY = INVOKE_KEY_HEADER.lower().encode("latin-1")

STRIP_AUTHORIZATION = web.RequestKey("strip_authorization", bool)
"""Set by :mod:`authorize` when ``Authorization`` carries a platform token: not forwarded."""
_TAIL = re.compile(r"/gateway/[^/?]*(.*)", re.DOTALL)


_FRAMING = frozenset({b"content-length", b"host"})
"""Never hop-by-hop, whatever ``Connection`` says (RFC 9110 §7.6.1): were a request's
``Content-Length`` dropped on the way, its body would reach the function as the start of
another request — one smuggled past the gateway."""


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """Header names listed in ``Connection``: hop-by-hop for this one message."""
    return (
        frozenset(
            token.strip().lower()
            for value in values
            for token in value.split(b",")
            if token.strip()
        )
        - _FRAMING
    )


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    blocked_exact: frozenset[bytes]
    blocked_prefixes: tuple[bytes, ...]
    trust_forwarded: bool

    @classmethod
    def build(cls, blocked: Iterable[str], trust_forwarded: bool) -> HeaderPolicy:
        names = [b.strip().lower().encode("latin-1") for b in blocked if b.strip()]
        return cls(
            blocked_exact=frozenset(n for n in names if not n.endswith(b"*")),
            blocked_prefixes=tuple(n[:-1] for n in names if n.endswith(b"*")),
            trust_forwarded=trust_forwarded,
        )

    def blocks(self, lname: bytes) -> bool:
        return lname in self.blocked_exact or (
            bool(self.blocked_prefixes) and lname.startswith(self.blocked_prefixes)
        )

    def forwarded(
        self, request: web.Request, prefix: str
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The client's end-to-end headers plus ``X-Forwarded-*``, and whether the body
        is chunked. ``Host`` is left for the caller (it names the function)."""
        return self.forwarded_raw(
            request.raw_headers,
            strip_authorization=request.get(STRIP_AUTHORIZATION, False),
            peer=(request.remote or "").encode("latin-1"),
            scheme=request.scheme.encode("latin-1"),
            host=request.host.encode("latin-1"),
            prefix=prefix.encode("latin-1"),
        )

    def forwarded_raw(
        self,
        raw: Iterable[tuple[bytes, bytes]],
        *,
        strip_authorization: bool,
        peer: bytes,
        scheme: bytes,
        host: bytes,
        prefix: bytes,
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """:meth:`forwarded` on raw header pairs and what the gateway saw of the client
        (the fast path in :mod:`front` has no :class:`web.Request`)."""
        named: frozenset[bytes] = frozenset()
        chunked = False
        prior_for = b""
        client_proto = client_host = b""
        out: list[tuple[bytes, bytes]] = []
        for name, value in raw:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"connection":
                    named = named | connection_tokens((value,))
                elif lname == b"transfer-encoding":
                    chunked = chunked or b"chunked" in value.lower()
                continue
            if lname in _REPLACED:
                if lname == b"x-forwarded-for":
                    prior_for = value if not prior_for else prior_for + b", " + value
                continue
            if lname in _FORWARDED_VIEW:
                if self.trust_forwarded:
                    if lname == b"x-forwarded-proto":
                        client_proto = value
                    else:
                        client_host = value
                continue
            if self.blocks(lname) or lname == _INVOKE_KEY:
                continue
            if strip_authorization and lname == b"authorization":
                continue
            out.append((name, value))
        if named:
            out = [(n, v) for n, v in out if n.lower() not in named]
        if chunked:  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
            out = [(n, v) for n, v in out if n.lower() != b"content-length"]
        out.append((b"X-Forwarded-For", prior_for + b", " + peer if prior_for else peer))
        out.append((b"X-Forwarded-Proto", client_proto or scheme))
        out.append((b"X-Forwarded-Host", client_host or host))
        out.append((b"X-Forwarded-Prefix", prefix))
        return out, chunked

    def request_head(
        self,
        request: web.Request,
        target: bytes,
        host_header: bytes,
        prefix: str,
        *,
        send_body: bool,
    ) -> tuple[bytes, bool]:
        """The request line and headers for the function, and whether the body goes
        chunked (a body of unknown length: the client sent it chunked)."""
        headers, chunked = self.forwarded(request, prefix)
        head = build_head(
            request.method.encode("latin-1"), target, host_header, headers,
            chunked=send_body and chunked,
        )  # fmt: skip
        return head, chunked


def build_head(
    method: bytes,
    target: bytes,
    host_header: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    chunked: bool,
) -> bytes:
    """The request line and headers as the function receives them, in one buffer."""
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host_header]
    for name, value in headers:
        parts += (b"\r\n", name, b": ", value)
    if chunked:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    parts.append(b"\r\n\r\n")
    return b"".join(parts)


def response_headers(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The function's response headers minus hop-by-hop ones, for the client."""
    named = connection_tokens(v for n, v in raw if n.lower() == b"connection")
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in raw:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named:
            continue
        out.add(name.decode("latin-1"), value.decode("latin-1"))
    return out


def response_headers_raw(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`response_headers` as raw pairs, for the fast path (:mod:`front`)."""
    named = connection_tokens(v for n, v in raw if n.lower() == b"connection")
    return [(n, v) for n, v in raw if (ln := n.lower()) not in HOP_BY_HOP and ln not in named]


def upstream_target(raw_path: str) -> bytes:
    """What the function sees as its path: everything after ``/gateway/{id}``, as the
    client wrote it (no decoding and re-encoding on the way)."""
    match = _TAIL.match(raw_path)
    tail = match.group(1) if match else ""
    if not tail.startswith("/"):
        tail = "/" + tail
    return tail.encode("latin-1", "replace")
