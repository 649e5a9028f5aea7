"""Fetching a script from a URL (``POST /faas/python`` with ``source: {url}``) without
letting a user aim pyfaas at its own network.

Called by the API before it accepts a create. The rules, each refusal naming the one that
refused: https only (unless the operator allows http); the host is resolved here and every
address checked — loopback, private, link-local (the cloud metadata address among them),
unique-local, multicast, reserved or otherwise not globally routable, and the IPv4-mapped
forms of those, are refused — and the connection goes to an address that was checked
(a resolver that returns only checked addresses, so a second lookup cannot rebind);
no proxy from the environment; at most a few redirects, each checked again; a size cap
and a timeout. A GitHub gist page becomes its raw file. An operator's allowlist of hosts
replaces the address checks for internal sources.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_REDIRECTS = 3


class FetchRefused(Exception):
    """The URL (or where it led) is not allowed; ``rule`` names the rule that refused."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.detail} (rule: {self.rule})"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    allow_http: bool = False
    allowed_hosts: Collection[str] = field(default_factory=frozenset)
    """Hosts trusted by the operator: their addresses are not checked."""
    max_bytes: int = 512 * 1024
    timeout: float = 10.0
    max_redirects: int = MAX_REDIRECTS


def address_problem(address: str) -> str | None:
    """Why an address may not be fetched from, or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        inner = address_problem(str(ip.ipv4_mapped))
        return f"an IPv4-mapped {inner}" if inner else None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        if str(ip) in ("169.254.169.254", "fd00:ec2::254"):
            return "the cloud metadata address"
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"):
        return "a unique-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved or non-public address"
    return None


class CheckedResolver(AbstractResolver):
    """Resolves with the system resolver and returns only addresses that pass the checks,
    so the connection is made to an address that was checked."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host in self.policy.allowed_hosts:
            return results
        for result in results:
            problem = address_problem(result["host"])
            if problem:
                raise FetchRefused(
                    "public-addresses-only",
                    f"{host} resolves to {result['host']}, {problem}; pyfaas fetches "
                    "code only from public addresses",
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


_GIST = re.compile(r"^https://gist\.github\.com/(?P<user>[^/]+)/(?P<id>[0-9a-f]+)/?$")


def raw_url(url: str) -> str:
    """A gist page URL becomes the URL of its (first) raw file."""
    match = _GIST.match(url)
    if match:
        return f"https://gist.githubusercontent.com/{match['user']}/{match['id']}/raw"
    return url


def check_url(url: str, policy: FetchPolicy) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise FetchRefused("https-only", f"{parts.scheme or 'a URL without a scheme'}: is not "
                           "supported; give an https:// URL")  # fmt: skip
    if parts.scheme == "http" and not policy.allow_http:
        raise FetchRefused("https-only", "plain http is not allowed here; give an https:// URL")
    if not parts.hostname:
        raise FetchRefused("valid-url", f"{url!r} has no host")
    if parts.username or parts.password:
        raise FetchRefused("valid-url", "credentials in the URL are not allowed")
    host = parts.hostname
    if host in policy.allowed_hosts:
        return
    try:
        problem = address_problem(host)
    except ValueError:
        return  # a name: checked when it is resolved
    if problem:
        raise FetchRefused("public-addresses-only", f"{host} is {problem}; pyfaas fetches code "
                           "only from public addresses")  # fmt: skip


async def fetch_script(url: str, policy: FetchPolicy) -> str:
    """The text at ``url``, or :class:`FetchRefused` saying which rule refused it."""
    url = raw_url(url)
    connector = aiohttp.TCPConnector(resolver=CheckedResolver(policy), force_close=True)
    timeout = aiohttp.ClientTimeout(total=policy.timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        for _ in range(policy.max_redirects + 1):
            check_url(url, policy)
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchRefused("valid-redirect", "a redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise FetchRefused("status-200", f"{url} answered HTTP {response.status}")
                    return await _read_capped(response, policy.max_bytes)
            except FetchRefused:
                raise
            except TimeoutError:
                raise FetchRefused(
                    "timeout", f"{url} did not answer within {policy.timeout:g}s"
                ) from None
            except aiohttp.ClientConnectorError as exc:
                cause: Any = exc.os_error
                if isinstance(cause, FetchRefused):
                    raise cause from None
                raise FetchRefused("reachable", f"could not connect to {url}: {exc}") from None
            except aiohttp.ClientError as exc:
                raise FetchRefused("reachable", f"fetching {url} failed: {exc}") from None
        raise FetchRefused("redirects", f"more than {policy.max_redirects} redirects")


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> str:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise FetchRefused("size-cap", f"the script is over {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchRefused("utf-8", f"the file is not UTF-8 text (byte {exc.start})") from None
