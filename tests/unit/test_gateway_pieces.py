"""The gateway's pure pieces: the path a function sees, header hygiene, where a route
points, settings as an operator writes them, and the access aggregation window."""

from __future__ import annotations

import uuid

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from pyfaas_common.subjects import Subjects
from pyfaas_gateway.access import AccessLog
from pyfaas_gateway.headers import HeaderPolicy, response_headers, upstream_target
from pyfaas_gateway.settings import GatewaySettings
from pyfaas_gateway.upstream import Endpoint


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("/gateway/abc", b"/"),
        ("/gateway/abc/", b"/"),
        ("/gateway/abc?x=1", b"/?x=1"),
        ("/gateway/abc/a%2Fb/c?y=%20", b"/a%2Fb/c?y=%20"),
        ("/gateway/abc/mcp", b"/mcp"),
    ],
)
def test_the_function_sees_the_path_after_its_prefix_as_written(raw: str, target: bytes) -> None:
    assert upstream_target(raw) == target


def test_the_request_head_is_clean_http() -> None:
    request = make_mocked_request(
        "POST",
        "/gateway/abc/x",
        headers=CIMultiDict(
            {
                "Host": "public.example",
                "Transfer-Encoding": "chunked",
                "Content-Length": "10",
                "Connection": "close, X-Gone",
                "X-Gone": "1",
                "X-Pyfaas-Route": "internal",
                "Expect": "100-continue",
                "Accept": "text/event-stream",
            }
        ),
    )
    policy = HeaderPolicy.build(["X-Pyfaas-*"], trust_forwarded=False)
    head, chunked = policy.request_head(
        request, b"/x", b"10.0.0.7:8000", "/gateway/abc", send_body=True
    )
    assert chunked
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /x HTTP/1.1"
    assert lines[1] == "Host: 10.0.0.7:8000"
    assert head.endswith(b"\r\n\r\n")
    names = [line.split(":", 1)[0].lower() for line in lines[1:] if line]
    assert names.count("host") == 1
    assert "content-length" not in names  # chunked wins (RFC 9112 §6.3)
    assert names.count("transfer-encoding") == 1
    for gone in ("connection", "x-gone", "x-pyfaas-route", "expect"):
        assert gone not in names
    assert "Accept: text/event-stream" in lines
    assert "X-Forwarded-Host: public.example" in lines
    assert "X-Forwarded-Prefix: /gateway/abc" in lines


def test_response_headers_lose_hop_by_hop_ones() -> None:
    kept = response_headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"X-Private"),
            (b"X-Private", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert list(kept.items()) == [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "host_header"),
    [
        ("http://127.0.0.1:8123", "127.0.0.1", 8123, False, b"127.0.0.1:8123"),
        ("http://fn-abc.pyfaas-functions.svc", "fn-abc.pyfaas-functions.svc", 80, False,
         b"fn-abc.pyfaas-functions.svc"),
        ("https://[::1]:9443/", "::1", 9443, True, b"[::1]:9443"),
    ],
)  # fmt: skip
def test_endpoints_parse(url: str, host: str, port: int, tls: bool, host_header: bytes) -> None:
    assert Endpoint.parse(url) == Endpoint(host, port, tls, host_header)


def test_blocked_headers_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYFAAS_GATEWAY_WORKERS", "4")
    monkeypatch.setenv("PYFAAS_BLOCKED_HEADERS", "X-Tenant-*, Cookie")
    settings = GatewaySettings()
    assert settings.gateway_workers == 4
    assert settings.blocked_headers == ["X-Tenant-*", "Cookie"]
    policy = HeaderPolicy.build(settings.blocked_headers, False)
    assert policy.blocks(b"x-tenant-id") and policy.blocks(b"cookie")
    assert not policy.blocks(b"x-tenant")  # the prefix is "x-tenant-"
    assert GatewaySettings().max_duration == 0  # no total cut unless asked


def test_a_window_reports_each_active_function_once() -> None:
    log = AccessLog(None, Subjects("t"), 2.0)  # type: ignore[arg-type]
    busy, streaming = uuid.uuid4(), uuid.uuid4()
    for _ in range(1000):
        log.begin(busy)
        log.end(busy, bytes_in=3, bytes_out=7, error=False)
    log.begin(busy)
    log.end(busy, bytes_in=0, bytes_out=0, error=True)
    log.begin(streaming)
    log.stream_opened(streaming)

    first = log.snapshot()
    assert set(first) == {busy, streaming}
    assert (first[busy].calls, first[busy].errors, first[busy].bytes_in) == (1001, 1, 3000)
    assert (first[streaming].open_streams, first[streaming].in_flight) == (1, 1)

    second = log.snapshot()  # nothing new: only the function with a stream open
    assert set(second) == {streaming}
    assert second[streaming].calls == 0
    assert second[streaming].last_access_at == second[streaming].window_end

    log.stream_closed(streaming)
    log.end(streaming, bytes_in=0, bytes_out=10, error=False)
    assert log.snapshot()[streaming].open_streams == 0
    assert log.snapshot() == {}  # quiet
