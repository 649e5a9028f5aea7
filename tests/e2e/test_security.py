"""Tenancy and security end to end: ``faas dev`` with ``PYFAAS_AUTH=jwt``, driven through
HTTP as users do. Tokens and cross-user 404s at the API, a private function called with
its owner's token, its invoke key and nothing, credentials stripped before the function
sees the request, a secret that is never shown and never logged, code fetched from an
allowed loopback host (and refused from another), and the per-user quotas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pyfaas_common.auth import Authenticator, AuthSettings
from tests.e2e.conftest import running_platform
from tests.platform import Platform, example, local_only
from tests.services import free_port

pytestmark = pytest.mark.e2e

SECRET = "e" * 48
TOKENS = Authenticator(AuthSettings(auth="jwt", jwt_secret=SECRET))
ECHO = example("echo_headers.py")


def bearer(user: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS.mint(user, admin=admin)}"}


@pytest.fixture(scope="module")
async def secured(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    async for p in running_platform(
        tmp_path_factory.mktemp("secured"), nats_url, postgres_url,
        PYFAAS_AUTH="jwt", PYFAAS_JWT_SECRET=SECRET, PYFAAS_FETCH_ALLOW_HTTP="true",
        PYFAAS_FETCH_ALLOWED_HOSTS="127.0.0.1", PYFAAS_MAX_FUNCTIONS_PER_USER="2",
        PYFAAS_MAX_CREATES_PER_MINUTE="3",
    ):  # fmt: skip
        local_only(p)  # the platform's settings are this test's
        yield p


class User:
    def __init__(self, session: aiohttp.ClientSession, platform: Platform, name: str) -> None:
        self.session, self.platform, self.headers = session, platform, bearer(name)

    async def api(
        self, method: str, path: str, status: int, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
        url = f"{self.platform.api}{path}"
        hdrs = self.headers if headers is None else headers
        async with self.session.request(method, url, headers=hdrs, **kw) as r:
            body = await r.json(content_type=None)
            assert r.status == status, (method, path, body)
            return body, r

    async def ready(self, fid: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            fn, _ = await self.api("GET", f"/faas/python/{fid}", 200)
            if fn["state"] == "ready":
                return fn
            assert fn["state"] in ("pending", "deploying"), fn
            assert time.monotonic() < deadline, fn
            await asyncio.sleep(0.1)

    async def call(self, fid: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        url = f"{self.platform.gateway}/gateway/{fid}/hello"
        async with self.session.get(url, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def test_private_function_secrets_and_who_sees_what(secured: Platform) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    code = ECHO.replace(
        'if __name__ == "__main__":\n',
        'if __name__ == "__main__":\n    print("token is", os.environ["API_TOKEN"], flush=True)\n',
    )
    async with aiohttp.ClientSession() as session:
        alice, bob = User(session, secured, "alice"), User(session, secured, "bob")
        admin = User(session, secured, "root")
        admin.headers = bearer("root", admin=True)

        _, r = await alice.api("POST", "/faas/python", 401, headers={}, json={"code": code})
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        created, _ = await alice.api("POST", "/faas/python", 202, json={
            "code": code, "name": "private", "visibility": "private",
            "secrets": {"API_TOKEN": value}, "env": {"GREETING": "hi"},
        })  # fmt: skip
        fid, key = created["id"], created["invoke_key"]
        assert created["user"] == "alice" and created["secrets"] == {"API_TOKEN": "********"}
        fn = await alice.ready(fid)
        assert "invoke_key" not in fn and value not in str(fn)

        # Another user's function does not exist for bob; an admin sees it.
        await bob.api("GET", f"/faas/python/{fid}", 404)
        await bob.api("DELETE", f"/faas/python/{fid}", 404)
        await bob.api("GET", f"/faas/python/{fid}/logs", 404)
        listed, _ = await admin.api("GET", "/faas/python", 200)
        assert fid in {f["id"] for f in listed["functions"]}

        # At the gateway: nothing is 401, another's token 403, the owner or the key 200.
        status, problem = await alice.call(fid, {})
        assert status == 401 and "invoke key" in problem["detail"]
        assert (await alice.call(fid, bob.headers))[0] == 403
        for headers in (alice.headers, {"X-Pyfaas-Invoke-Key": key}):
            status, seen = await alice.call(fid, {**headers, "X-Custom": "kept"})
            assert status == 200, seen
            assert "authorization" not in seen["headers"]
            assert "x-pyfaas-invoke-key" not in seen["headers"]
            assert seen["headers"]["x-custom"] == "kept"
            assert {"API_TOKEN", "GREETING"} <= set(seen["env_names"])

        # The function printed its secret: the API shows it redacted; no pyfaas log has it.
        deadline = time.monotonic() + 10
        while True:
            logs, _ = await alice.api("GET", f"/faas/python/{fid}/logs", 200)
            if any(line.startswith("token is") for line in logs["lines"]):
                break
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.1)
        assert "token is ********" in logs["lines"] and value not in str(logs)
        assert value not in secured.log_path.read_text(errors="replace")
        await alice.api("DELETE", f"/faas/python/{fid}", 202)


@pytest.fixture
async def script_host() -> AsyncIterator[int]:
    """A web server on loopback serving the echo example at /main.py."""

    async def main(request: web.Request) -> web.Response:
        return web.Response(text=ECHO)

    app = web.Application()
    app.router.add_get("/main.py", main)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_code_from_a_url_and_the_quotas(secured: Platform, script_host: int) -> None:
    async with aiohttp.ClientSession() as session:
        erin = User(session, secured, "erin")
        refused, _ = await erin.api("POST", "/faas/python", 422, json={
            "source": {"url": f"http://localhost:{script_host}/main.py"}})  # fmt: skip
        assert refused["rule"] == "public-addresses-only"
        assert "rule: public-addresses-only" in refused["detail"]

        carol = User(session, secured, "carol")
        fetched, _ = await carol.api("POST", "/faas/python", 202, json={
            "source": {"url": f"http://127.0.0.1:{script_host}/main.py"}, "name": "fetched"})  # fmt: skip
        await carol.ready(fetched["id"])
        status, seen = await carol.call(fetched["id"], {})
        assert status == 200 and seen["path"] == "/hello"  # the fetched script serves

        second, _ = await carol.api("POST", "/faas/python", 202, json={"code": ECHO})
        await carol.ready(second["id"])
        over, _ = await carol.api("POST", "/faas/python", 403, json={"code": ECHO})
        assert over["type"].endswith("/quota-functions")
        rate, r = await carol.api("POST", "/faas/python", 429, json={"code": ECHO})
        assert rate["type"].endswith("/quota-create-rate")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        for fn in (fetched, second):
            await carol.api("DELETE", f"/faas/python/{fn['id']}", 202)
