"""The API with ``PYFAAS_AUTH=jwt``, in-process, against a real NATS, a real Postgres and a
real deployer process: tokens, who sees which function, admins, private functions and
their invoke keys, secrets, code from a URL, and the per-user quotas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js.errors import NotFoundError

from pyfaas_api.app import init_app
from pyfaas_api.settings import ApiSettings
from pyfaas_common import bus
from pyfaas_common.auth import Authenticator, AuthSettings
from pyfaas_common.messages import ListQuery
from pyfaas_common.subjects import Subjects
from tests.platform import example, script
from tests.services import free_port

pytestmark = pytest.mark.timeout(90)

SECRET = "a" * 48
TOKENS = Authenticator(AuthSettings(auth="jwt", jwt_secret=SECRET))
CODE = example("hello_stdlib.py")


def bearer(user: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS.mint(user, admin=admin)}"}


ALICE, BOB, ADMIN = bearer("alice"), bearer("bob"), bearer("root", admin=True)


@pytest.fixture(scope="module")
async def platform(
    nats_url: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    """A deployer process of this module's own (NATS prefix, database, data directory)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    data_dir = tmp_path_factory.mktemp("auth")
    env = {
        **os.environ, "PYFAAS_NATS_URL": nats_url, "PYFAAS_NATS_PREFIX": prefix,
        "PYFAAS_DATABASE_URL": postgres_url, "PYFAAS_DATA_DIR": str(data_dir),
    }  # fmt: skip
    log_path = data_dir / "deployer.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyfaas_deployer", env=env, stdout=log, stderr=log
        )
    nc = await nats.connect(nats_url)
    subjects = Subjects(prefix)
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it answers reads
            try:
                await nc.request(subjects.query("list"), bus.encode(ListQuery(user="x")), 0.5)
                break
            except Exception:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                await asyncio.sleep(0.1)
        yield prefix, log_path
    finally:
        proc.terminate()
        await proc.wait()
        for stream in (subjects.command_stream, subjects.event_stream, subjects.access_stream):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
        await nc.close()


Api = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start_api(nats_url: str, platform: tuple[str, Path]) -> AsyncIterator[Api]:
    """An API with auth on and the given settings (``max_creates_per_minute=3``)."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> TestClient[Any, Any]:
            settings = ApiSettings(
                nats_url=nats_url, nats_prefix=platform[0], auth="jwt", jwt_secret=SECRET,
                query_timeout=5.0, **overrides,
            )  # fmt: skip
            return await stack.enter_async_context(TestClient(TestServer(init_app(settings))))

        yield start


@pytest.fixture
async def api(start_api: Api) -> TestClient[Any, Any]:
    return await start_api()


async def _json(response: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = await response.json(content_type=None)
    assert response.status == status, body
    return body


async def _create(
    api: TestClient[Any, Any], headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    body.setdefault("code", CODE)
    return await _json(await api.post("/faas/python", json=body, headers=headers), 202)


async def _listed(
    api: TestClient[Any, Any], headers: dict[str, str], expect: set[str], **params: str
) -> list[dict[str, Any]]:
    """The list, once the deployer has applied the creates of ``expect`` (a list reads
    the database; a create is applied a moment after its 202)."""
    deadline = time.monotonic() + 10
    while True:
        listed = await _json(await api.get("/faas/python", params=params, headers=headers), 200)
        functions: list[dict[str, Any]] = listed["functions"]
        if expect <= {f["id"] for f in functions} or time.monotonic() > deadline:
            return functions
        await asyncio.sleep(0.05)


async def _wait_ready(api: TestClient[Any, Any], fid: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        fn = await _json(await api.get(f"/faas/python/{fid}", headers=headers), 200)
        if fn["state"] == "ready":
            return
        assert fn["state"] in ("pending", "deploying"), fn
        assert time.monotonic() < deadline, fn
        await asyncio.sleep(0.1)


async def test_without_a_valid_token_everything_is_401(api: TestClient[Any, Any]) -> None:
    fid = uuid.uuid4()
    expired = {"Authorization": f"Bearer {TOKENS.mint('alice', ttl=-120)}"}
    for headers, says in (({}, "send Authorization"), (expired, "expired"),
                          ({"Authorization": "Bearer nonsense"}, "not valid")):  # fmt: skip
        for method, path in (
            ("POST", "/faas/python"), ("GET", "/faas/python"), ("GET", f"/faas/python/{fid}"),
            ("PUT", f"/faas/python/{fid}"), ("DELETE", f"/faas/python/{fid}"),
            ("GET", f"/faas/python/{fid}/logs"), ("GET", f"/faas/python/{fid}/logs?follow=true"),
        ):  # fmt: skip
            response = await api.request(method, path, json={"code": CODE}, headers=headers)
            problem = await _json(response, 401)
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert says in problem["detail"], (method, path, problem)
    for open_path in ("/healthz", "/openapi.json"):
        assert (await api.get(open_path)).status == 200


async def test_users_see_their_own_functions_and_admins_see_all(
    api: TestClient[Any, Any],
) -> None:
    mine = await _create(api, ALICE)  # no user: the token's
    assert mine["user"] == "alice"
    theirs = await _create(api, BOB, user="bob")
    for_bob = await _create(api, ADMIN, user="bob", name="by-admin")
    assert for_bob["user"] == "bob"

    refused = await _json(await api.post("/faas/python", json={"user": "bob", "code": CODE},
                                         headers=ALICE), 403)  # fmt: skip
    assert "may not act for 'bob'" in refused["detail"]
    assert (await api.get("/faas/python", params={"user": "bob"}, headers=ALICE)).status == 403

    everyone = await _listed(api, ADMIN, {mine["id"], theirs["id"], for_bob["id"]})
    assert {mine["id"], theirs["id"], for_bob["id"]} <= {f["id"] for f in everyone}
    assert [f["id"] for f in await _listed(api, ALICE, {mine["id"]})] == [mine["id"]]
    bobs = await _listed(api, ADMIN, {theirs["id"]}, user="bob")
    assert {f["user"] for f in bobs} == {"bob"} and len(bobs) == 2

    # Another user's function answers exactly as one that does not exist.
    unknown = await _json(await api.get(f"/faas/python/{uuid.uuid4()}", headers=ALICE), 404)
    for method, path, body in (
        ("GET", "", None), ("PUT", "", {"env": {"X": "1"}}), ("DELETE", "", None),
        ("GET", "/logs", None), ("GET", "/logs?follow=true", None),
    ):  # fmt: skip
        url = f"/faas/python/{theirs['id']}{path}"
        problem = await _json(await api.request(method, url, json=body, headers=ALICE), 404)
        assert problem["title"] == unknown["title"]
        assert problem["detail"] == unknown["detail"].replace(
            unknown["detail"].rsplit(" ", 1)[1], theirs["id"]
        )
    assert (await api.get(f"/faas/python/{theirs['id']}", headers=ADMIN)).status == 200
    assert (await api.get(f"/faas/python/{theirs['id']}/logs", headers=ADMIN)).status == 200
    await _json(await api.delete(f"/faas/python/{for_bob['id']}", headers=BOB), 202)
    await _json(await api.delete(f"/faas/python/{theirs['id']}", headers=ADMIN), 202)
    await _json(await api.delete(f"/faas/python/{mine['id']}", headers=ALICE), 202)


async def test_private_functions_and_secrets(
    api: TestClient[Any, Any], platform: tuple[str, Path]
) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    code = CODE.replace(
        'if __name__ == "__main__":\n',
        "if __name__ == \"__main__\":\n    print('token is', os.environ['API_TOKEN'], flush=True)\n",
    )
    created = await _create(api, ALICE, code=code, visibility="private", env={"GREETING": "hi"},
                            secrets={"API_TOKEN": value})  # fmt: skip
    fid = created["id"]
    key = created["invoke_key"]
    assert key.startswith("pfk_") and created["visibility"] == "private"
    assert created["secrets"] == {"API_TOKEN": "********"} and created["env"] == {"GREETING": "hi"}
    await _wait_ready(api, fid, ALICE)

    fn = await _json(await api.get(f"/faas/python/{fid}", headers=ALICE), 200)
    listed = await _listed(api, ALICE, {fid})
    for shown in (fn, *[f for f in listed if f["id"] == fid]):
        assert shown["secrets"] == {"API_TOKEN": "********"}
        assert "invoke_key" not in shown and "invoke_key_hash" not in shown
        assert value not in str(shown) and key not in str(shown)

    # The function printed its secret; pyfaas shows its log redacted.
    deadline = time.monotonic() + 10
    while True:
        logs = await _json(await api.get(f"/faas/python/{fid}/logs", headers=ALICE), 200)
        if any("token is" in line for line in logs["lines"]):
            break
        assert time.monotonic() < deadline, logs
        await asyncio.sleep(0.1)
    assert "token is ********" in logs["lines"]
    assert value not in str(logs)

    # One name is in env or in secrets, never both; a new key is made on request.
    clash = await _json(await api.put(f"/faas/python/{fid}", json={"env": {"API_TOKEN": "x"}},
                                      headers=ALICE), 422)  # fmt: skip
    assert "is a secret of this function" in clash["detail"]
    rotated = await _json(await api.put(f"/faas/python/{fid}", json={"rotate_invoke_key": True},
                                        headers=ALICE), 202)  # fmt: skip
    assert rotated["invoke_key"].startswith("pfk_") and rotated["invoke_key"] != key
    public = await _create(api, ALICE, name="open")
    assert "invoke_key" not in public and public["visibility"] == "public"
    made_private = await _json(await api.put(f"/faas/python/{public['id']}",
                               json={"visibility": "private"}, headers=ALICE), 202)  # fmt: skip
    assert made_private["invoke_key"].startswith("pfk_")

    for gone in (fid, public["id"]):
        await _json(await api.delete(f"/faas/python/{gone}", headers=ALICE), 202)
    # Neither the deployer's log nor its function-runtime lines ever printed the value.
    assert value not in platform[1].read_text(errors="replace")


@pytest.fixture
async def script_server() -> AsyncIterator[str]:
    async def good(request: web.Request) -> web.Response:
        return web.Response(text=CODE)

    async def bad(request: web.Request) -> web.Response:
        return web.Response(text="print('no metadata block')\n")

    app = web.Application()
    app.router.add_get("/main.py", good)
    app.router.add_get("/bad.py", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_code_from_a_url(start_api: Api, script_server: str) -> None:
    internal = await start_api(fetch_allow_http=True, fetch_allowed_hosts="127.0.0.1")
    fetched = await _create(internal, ALICE, code=None, source={"url": f"{script_server}/main.py"})
    assert fetched["state"] == "pending"
    invalid = await _json(await internal.post("/faas/python", headers=ALICE,
                          json={"source": {"url": f"{script_server}/bad.py"}}), 422)  # fmt: skip
    assert invalid["errors"][0]["field"] == "source"
    assert "no PEP 723 metadata block" in invalid["detail"]

    strict = await start_api(fetch_allow_http=True)
    for url, rule in (
        (f"{script_server}/main.py", "public-addresses-only"),
        (f"http://localhost:{script_server.rsplit(':', 1)[1]}/main.py", "public-addresses-only"),
        ("http://169.254.169.254/latest/meta-data", "public-addresses-only"),
        ("file:///etc/passwd", "https-only"),
    ):
        refused = await _json(await strict.post("/faas/python", headers=ALICE,
                              json={"source": {"url": url}}), 422)  # fmt: skip
        assert refused["rule"] == rule, refused
        assert f"rule: {rule}" in refused["detail"]
        assert refused["errors"][0]["field"] == "source.url"
    https_only = await start_api()
    refused = await _json(await https_only.post("/faas/python", headers=ALICE,
                          json={"source": {"url": f"{script_server}/main.py"}}), 422)  # fmt: skip
    assert refused["rule"] == "https-only"
    await _json(await internal.delete(f"/faas/python/{fetched['id']}", headers=ALICE), 202)


async def test_quotas(start_api: Api) -> None:
    api = await start_api(
        max_functions_per_user=2, max_creates_per_minute=3, max_script_bytes=4096,
        max_env_bytes=64,
    )  # fmt: skip
    carol = bearer("carol")
    too_big = await _json(await api.post("/faas/python", headers=carol,
                          json={"code": script("x = 1\n" * 1000)}), 422)  # fmt: skip
    assert "PYFAAS_MAX_SCRIPT_BYTES" in too_big["detail"]
    env_big = await _json(await api.post("/faas/python", headers=carol,
                          json={"code": CODE, "secrets": {"K": "v" * 100}}), 422)  # fmt: skip
    assert "PYFAAS_MAX_ENV_BYTES" in env_big["detail"]

    made = [await _create(api, carol, name=f"f{i}") for i in range(2)]
    # The count is the deployer's: creates still on their way are not in it (documented).
    await _listed(api, carol, {fn["id"] for fn in made})
    over = await _json(await api.post("/faas/python", json={"code": CODE}, headers=carol), 403)
    assert over["type"].endswith("/quota-functions") and over["limit"] == 2
    response = await api.post("/faas/python", json={"code": CODE}, headers=carol)
    rate = await _json(response, 429)
    assert rate["type"].endswith("/quota-create-rate")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Another user is not affected.
    dave = await _create(api, bearer("dave"))
    for fn in (*made, dave):
        await _json(await api.delete(f"/faas/python/{fn['id']}", headers=ADMIN), 202)
