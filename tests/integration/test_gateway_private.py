"""Private functions at the gateway, in-process against a real NATS and Postgres: who may
call one (its owner's token, an admin's, its invoke key; nobody else), that a stranger
cannot wake a sleeping one, that a change of visibility arrives by state event, and that
the platform's credentials never reach the function while its own ones do."""

from __future__ import annotations

from typing import Any

import aiohttp

from pyfaas_common.auth import Authenticator, AuthSettings
from pyfaas_common.invoke_keys import INVOKE_KEY_HEADER, new_invoke_key
from pyfaas_common.messages import State
from tests.integration.gateway_harness import GatewayUnderTest, StartGateway, Upstream

SECRET = "g" * 48
TOKENS = Authenticator(AuthSettings(auth="jwt", jwt_secret=SECRET))
ALICE = {"Authorization": f"Bearer {TOKENS.mint('alice')}"}
BOB = {"Authorization": f"Bearer {TOKENS.mint('bob')}"}
ADMIN = {"Authorization": f"Bearer {TOKENS.mint('root', admin=True)}"}


async def _start(start_gateway: StartGateway) -> GatewayUnderTest:
    return await start_gateway(auth="jwt", jwt_secret=SECRET)


async def _call(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with session.get(url, headers=headers or {}) as r:
        body = await r.json(content_type=None)
        return r.status, body, r


def _seen_headers(body: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in body["headers"]}


async def test_a_private_function_takes_its_owner_an_admin_and_its_key_only(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await _start(start_gateway)
    key, key_hash = new_invoke_key()
    fid = await gw.add_function(upstream.url, visibility="private", invoke_key_hash=key_hash)
    url = gw.function_url(fid, "who")

    status, body, response = await _call(session, url)
    assert status == 401, body
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-Pyfaas-Invoke-Key" in body["detail"]
    assert (await _call(session, url, {INVOKE_KEY_HEADER: "pfk_guess"}))[0] == 401
    status, body, _ = await _call(session, url, BOB)
    assert status == 403 and "private to its owner" in body["detail"]
    assert upstream.seen == []  # none of those reached the function

    for headers in (ALICE, ADMIN, {INVOKE_KEY_HEADER: key}):
        status, body, _ = await _call(session, url, {**headers, "X-Trace": "t1"})
        assert status == 200, body
        seen = _seen_headers(body)
        assert "authorization" not in seen and INVOKE_KEY_HEADER.lower() not in seen
        assert seen["x-trace"] == "t1"
    assert len(upstream.seen) == 3


async def test_a_stranger_does_not_wake_a_sleeping_private_function(
    start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gw = await _start(start_gateway)
    fid = await gw.add_function(None, State.SLEEPING, visibility="private")
    status, _, _ = await _call(session, gw.function_url(fid))
    assert status == 401
    assert gw.gateway.waker.commands_published == 0


async def test_visibility_follows_the_state_events(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await _start(start_gateway)
    fid = await gw.add_function(upstream.url)
    assert (await _call(session, gw.function_url(fid)))[0] == 200
    key, key_hash = new_invoke_key()
    await gw.change_state(
        fid, State.READY, upstream.url, visibility="private", invoke_key_hash=key_hash
    )
    assert (await _call(session, gw.function_url(fid)))[0] == 401
    assert (await _call(session, gw.function_url(fid), {INVOKE_KEY_HEADER: key}))[0] == 200
    await gw.change_state(fid, State.READY, upstream.url, visibility="public")
    assert (await _call(session, gw.function_url(fid)))[0] == 200


async def test_a_public_function_never_sees_platform_credentials(
    start_gateway: StartGateway, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    gw = await _start(start_gateway)
    fid = await gw.add_function(upstream.url)
    url = gw.function_url(fid)
    status, body, _ = await _call(session, url, {**ALICE, INVOKE_KEY_HEADER: "pfk_x"})
    assert status == 200
    seen = _seen_headers(body)
    assert "authorization" not in seen and INVOKE_KEY_HEADER.lower() not in seen
    # The function's own scheme passes untouched.
    status, body, _ = await _call(session, url, {"Authorization": "Bearer its-own-token"})
    assert _seen_headers(body)["authorization"] == "Bearer its-own-token"
    # A WebSocket upgrade is forwarded by the same rules.
    async with session.ws_connect(gw.function_url(fid, "ws"), headers=ALICE) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
    ws_seen = {k.lower() for k in upstream.seen[-1]["headers"]}
    assert "authorization" not in ws_seen
