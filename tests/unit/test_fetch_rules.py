"""Which URLs and addresses the code fetcher refuses, and which rule says so (no I/O:
IP literals need no lookup)."""

from __future__ import annotations

import pytest

from pyfaas_common.fetch import FetchPolicy, FetchRefused, address_problem, check_url, raw_url


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("::ffff:127.0.0.1", "IPv4-mapped a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped the cloud metadata"),
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    found = address_problem(address)
    assert found is not None and problem in found


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://example.com/x.py", "https-only"),
        ("ftp://example.com/x.py", "https-only"),
        ("example.com/x.py", "https-only"),
        ("https://127.0.0.1/x.py", "public-addresses-only"),
        ("https://[::ffff:10.0.0.1]/x.py", "public-addresses-only"),
        ("https://169.254.169.254/latest/meta-data", "public-addresses-only"),
        ("https://user:pw@example.com/x.py", "valid-url"),
    ],
)
def test_urls_refused_before_any_connection(url: str, rule: str) -> None:
    with pytest.raises(FetchRefused) as caught:
        check_url(url, FetchPolicy())
    assert caught.value.rule == rule
    assert rule in str(caught.value)


def test_the_operator_can_allow_http_and_internal_hosts() -> None:
    policy = FetchPolicy(allow_http=True, allowed_hosts={"10.0.0.5"})
    check_url("http://10.0.0.5/main.py", policy)
    with pytest.raises(FetchRefused):
        check_url("http://10.0.0.6/main.py", policy)


def test_a_gist_page_becomes_its_raw_file() -> None:
    assert raw_url("https://gist.github.com/alice/0123abcd") == (
        "https://gist.githubusercontent.com/alice/0123abcd/raw"
    )
    assert raw_url("https://example.com/main.py") == "https://example.com/main.py"
