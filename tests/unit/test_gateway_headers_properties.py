"""Properties of the gateway's header and path handling (``pyfaas_gateway.headers``),
checked by hypothesis on generated header lists and paths: whatever a client or a function
sends, hop-by-hop and blocked headers never pass, the head stays well-formed HTTP, and
the function sees exactly the path after its prefix."""

from __future__ import annotations

import re

from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from pyfaas_gateway.headers import (
    HOP_BY_HOP,
    HeaderPolicy,
    connection_tokens,
    response_headers,
    upstream_target,
)

FAST = settings(max_examples=300, deadline=None, database=None)

_TOKEN = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"),
    min_size=1,
    max_size=20,
)
_NAMES = st.one_of(
    _TOKEN,
    st.sampled_from(
        [
            "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
            "Proxy-Authorization", "Proxy-Connection", "Host", "Expect", "X-Forwarded-For",
            "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix", "X-Pyfaas-Route",
            "X-Pyfaas-Invoke-Key", "Forwarded", "X-Real-IP", "Content-Length", "Accept",
        ]
    ),
)  # fmt: skip
# Field values as HTTP allows them: visible ASCII, spaces and tabs inside, no CR or LF.
_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)
_BLOCKED = ["X-Pyfaas-*", "Forwarded", "X-Real-IP"]


def _names_in(head: bytes) -> list[str]:
    lines = head.decode("latin-1").split("\r\n")
    return [line.split(":", 1)[0].lower() for line in lines[1:] if line]


@FAST
@given(headers=_HEADERS, with_body=st.booleans())
def test_the_request_head_never_carries_what_it_must_not(
    headers: list[tuple[str, str]], with_body: bool
) -> None:
    raw = CIMultiDict[str]()
    for name, value in headers:
        raw.add(name, value)
    request = make_mocked_request("POST" if with_body else "GET", "/gateway/abc/x", headers=raw)
    policy = HeaderPolicy.build(_BLOCKED, trust_forwarded=False)
    head, chunked = policy.request_head(
        request, b"/x", b"127.0.0.1:9000", "/gateway/abc", send_body=with_body
    )
    assert head.endswith(b"\r\n\r\n") and head.count(b"\r\n\r\n") == 1
    assert head.startswith(b"POST /x HTTP/1.1\r\n" if with_body else b"GET /x HTTP/1.1\r\n")
    names = _names_in(head)
    named = connection_tokens(v.encode() for n, v in headers if n.lower() == "connection")
    for name in names:
        lname = name.encode()
        if lname == b"transfer-encoding":
            assert chunked and with_body  # only the gateway's own
            continue
        assert lname not in HOP_BY_HOP
        assert lname not in named
        assert not policy.blocks(lname) and lname != b"x-pyfaas-invoke-key"
    for once in ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                 "x-forwarded-prefix"):  # fmt: skip
        assert names.count(once) == 1
    if chunked:
        assert "content-length" not in names
    assert b"X-Forwarded-Prefix: /gateway/abc\r\n" in head


@FAST
@given(headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_response_headers_keep_end_to_end_ones_in_order(headers: list[tuple[str, str]]) -> None:
    raw = [(n.encode(), v.encode()) for n, v in headers]
    named = connection_tokens(v for n, v in raw if n.lower() == b"connection")
    kept = response_headers(raw)
    expected = [
        (n.decode(), v.decode())
        for n, v in raw
        if n.lower() not in HOP_BY_HOP and n.lower() not in named
    ]
    assert list(kept.items()) == expected


@FAST
@given(values=st.lists(st.binary(max_size=30), max_size=5))
def test_connection_tokens_are_lowercase_and_never_empty(values: list[bytes]) -> None:
    for token in connection_tokens(values):
        assert token and token == token.strip().lower() and b"," not in token


_PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#")


@FAST
@given(
    fid=st.text(alphabet=_PATH_CHARS.filter(lambda c: c not in "/?"), max_size=36),
    tail=st.one_of(
        st.just(""),
        st.tuples(st.sampled_from("/?"), st.text(alphabet=_PATH_CHARS, max_size=60)).map("".join),
    ),
)
def test_the_function_sees_exactly_the_path_after_its_prefix(fid: str, tail: str) -> None:
    """``/gateway/{id}``, then nothing, ``/…`` or ``?…``: the id is one path segment."""
    target = upstream_target(f"/gateway/{fid}{tail}")
    assert target.startswith(b"/")
    expected = tail if tail.startswith("/") else "/" + tail
    assert target == expected.encode("latin-1")


@FAST
@given(raw=st.text(max_size=80))
def test_any_path_gives_a_target_that_starts_with_a_slash(raw: str) -> None:
    target = upstream_target(raw)
    assert target.startswith(b"/")
    assert not re.search(rb"[\r\n]", target) or "\r" in raw or "\n" in raw
