"""Who may call a function: checked by :func:`proxy.ready_route` after the route lookup and
before anything else happens (a sleeping private function is not woken for a stranger).

A public function takes every request. A private one takes a request that carries its
invoke key (``X-Pyfaas-Invoke-Key``), or a platform token (``Authorization: Bearer``) of
its owner or of an admin. Otherwise: 401 with ``WWW-Authenticate`` when the request has no
usable credential (none, a wrong key, a bad or expired token), 403 when a valid token is
another user's. The function ids are random UUIDs, so the 401 tells a caller nothing it
did not know; it tells an HTTP or MCP client to authenticate, which a 404 would not.

Either way the platform's credentials stop here: the invoke-key header is never forwarded
and an ``Authorization`` header that carries a token this platform signed is removed
(:data:`headers.STRIP_AUTHORIZATION`), so a function cannot replay its caller's token
against the API. Any other ``Authorization`` (the function's own scheme) passes.
"""

from __future__ import annotations

from aiohttp import web

from pyfaas_common.auth import Authenticator
from pyfaas_common.invoke_keys import INVOKE_KEY_HEADER, key_matches
from pyfaas_common.problems import Problem

from .headers import STRIP_AUTHORIZATION
from .routes import Route

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pyfaas"'}


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, "unauthorized", headers=dict(_CHALLENGE))


def authorize(auth: Authenticator, route: Route, request: web.Request) -> None:
    if len(request.headers.getall("Authorization", ())) > 1:
        # Not a list-valued field (RFC 9110 §11.6.2): which one would count is anybody's
        # guess, and the one not judged could carry a platform token past the strip.
        raise Problem(
            400, "Bad request", "send one Authorization header, not several", "invalid-request"
        )
    authorization = request.headers.get("Authorization")
    platform_token = authorization is not None and auth.is_platform_token(authorization)
    if platform_token:
        request[STRIP_AUTHORIZATION] = True
    if not route.private:
        return
    key = request.headers.get(INVOKE_KEY_HEADER)
    if key is not None:
        if key_matches(key.strip(), route.key_hash):
            return
        raise _unauthorized(f"the {INVOKE_KEY_HEADER} is not this function's invoke key")
    if platform_token:
        assert authorization is not None
        identity = auth.identify(authorization)  # 401 when expired, say
        assert identity is not None
        if identity.may_act_for(route.owner):
            return
        raise Problem(
            403,
            "Forbidden",
            "this function is private to its owner; your token is another user's",
            "forbidden",
        )
    raise _unauthorized(
        "this function is private: send its owner's token (Authorization: Bearer <token>) "
        f"or its invoke key ({INVOKE_KEY_HEADER}: <key>)"
    )
