"""The HTTP API's handlers. They authenticate, validate, turn a request into a command or
a read, and leave every error to the problem middleware in ``app.py``.

Who may do what (``PYFAAS_AUTH=jwt``): the token's ``sub`` is the caller; a request's
``user`` must be the caller's (or left out, and taken from the token) unless the token is
an admin's; a function of another user answers 404 exactly as one that does not exist.
With ``PYFAAS_AUTH=none`` every request names its ``user`` and is believed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from uuid import UUID, uuid4

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pyfaas_common.auth import Identity
from pyfaas_common.fetch import FetchPolicy, FetchRefused, fetch_script
from pyfaas_common.invoke_keys import new_invoke_key
from pyfaas_common.messages import (
    REDACTED,
    CreateFunction,
    DeleteFunction,
    Desired,
    FunctionView,
    State,
    UpdateFunction,
)
from pyfaas_common.problems import FieldError, Problem, invalid, not_found
from pyfaas_common.schemas import (
    CreateRequest,
    FunctionResource,
    ListRequest,
    UpdateRequest,
    field_errors,
)
from pyfaas_common.validation import InvalidScript, env_size, parse_script

from . import idempotency
from .keys import AUTH, CREATE_RATE, DEPLOYER, SETTINGS
from .quotas import check_function_count

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def resource(view: FunctionView, invoke_key: str | None = None) -> dict[str, Any]:
    """The function as users see it: never its endpoint, its key hash or a secret value."""
    data = view.model_dump(
        mode="json", exclude={"v", "endpoint", "invoke_key_hash", "request_digest"}
    )
    data["secrets"] = dict.fromkeys(view.secrets, REDACTED)
    data["invoke_key"] = invoke_key
    out = FunctionResource.model_validate(data).model_dump(mode="json")
    if invoke_key is None:
        del out["invoke_key"]
    return out


def _caller(request: web.Request) -> Identity | None:
    """Who is asking (None with ``PYFAAS_AUTH=none``); a missing or bad token is 401."""
    return request.app[AUTH].identify(request.headers.get("Authorization"))


def _acting_for(identity: Identity | None, user: str | None, required: str) -> str:
    """The user a request acts for: the one it names, checked against the token, or the
    token's own."""
    if identity is None:
        if user is None:
            raise invalid([FieldError("user", f"is required: {required}")])
        return user
    if user is None:
        return identity.user
    if not identity.may_act_for(user):
        raise Problem(
            403,
            "Forbidden",
            f"your token is {identity.user!r}'s; it may not act for {user!r}. Leave user "
            "out (it defaults to the token's) or use a token of that user",
            "forbidden",
        )
    return user


async def _owned(
    request: web.Request, function_id: UUID, identity: Identity | None
) -> FunctionView:
    """The function, if the caller may see it; another user's answers as a missing one."""
    view = await request.app[DEPLOYER].get(function_id)
    if identity is not None and not identity.may_act_for(view.user):
        raise not_found(f"no function with id {function_id}")
    return view


async def _json_body(request: web.Request) -> Any:
    timeout = request.app[SETTINGS].body_timeout
    try:
        # A client that trickles its body is cut off, not waited for.
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise Problem(
            408, "Request body too slow",
            f"the request body did not arrive within {timeout:g}s; send it at once",
            "body-timeout", headers={"Connection": "close"},
        ) from None  # fmt: skip
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        raise Problem(
            400, "Body is too deeply nested",
            "the JSON body nests deeper than pyfaas reads; send a flat JSON object",
            "invalid-json",
        ) from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "Body is not JSON",
            f"the request body is not valid JSON ({exc}); send a JSON object with "
            "content-type: application/json",
            "invalid-json",
        ) from None


def _validate(model: type[BaseModel], data: Any, request: web.Request) -> Any:
    if not isinstance(data, dict):
        raise invalid([FieldError("body", "must be a JSON object")])
    context = {"python_versions": request.app[SETTINGS].python_versions}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise invalid([FieldError(f, m) for f, m in field_errors(exc)]) from None


def _function_id(request: web.Request) -> UUID:
    raw = request.match_info["id"]
    try:
        return UUID(raw)
    except ValueError:
        raise not_found(f"{raw!r} is not a function id (ids are UUIDs)") from None


def _accepted(view: FunctionView, invoke_key: str | None = None) -> web.Response:
    return web.json_response(
        resource(view, invoke_key), status=202, headers={"Location": f"/faas/python/{view.id}"}
    )


def _policy(body: BaseModel, key: str, default: int) -> int:
    """Left out: the installation's default; null or 0: never."""
    if key in body.model_fields_set:
        return int(getattr(body, key) or 0)
    return default


def _check_sizes(request: web.Request, code: str | None, field: str, *envs: dict[str, str]) -> None:
    """The operator's limits (``PYFAAS_MAX_SCRIPT_BYTES``, ``PYFAAS_MAX_ENV_BYTES``), which
    may be lower than the hard ones the request models check."""
    settings = request.app[SETTINGS]
    errors: list[FieldError] = []
    if code is not None and len(code.encode("utf-8", "surrogatepass")) > settings.max_script_bytes:
        size = len(code.encode("utf-8", "surrogatepass"))
        errors.append(FieldError(field, f"is {size} bytes; the limit here is "
                                 f"{settings.max_script_bytes} bytes (PYFAAS_MAX_SCRIPT_BYTES)"))  # fmt: skip
    size = env_size(*envs)
    if size > settings.max_env_bytes:
        errors.append(FieldError("env", f"env and secrets are {size} bytes together; the limit "
                                 f"here is {settings.max_env_bytes} (PYFAAS_MAX_ENV_BYTES)"))  # fmt: skip
    if errors:
        raise invalid(errors)


async def _fetch(request: web.Request, url: str) -> str:
    """The script at ``url``, fetched by the rules of :mod:`pyfaas_common.fetch` and
    validated like inline code; every refusal a 422 that names the rule."""
    settings = request.app[SETTINGS]
    policy = FetchPolicy(
        allow_http=settings.fetch_allow_http,
        allowed_hosts=frozenset(settings.fetch_allowed_hosts),
        max_bytes=settings.max_script_bytes,
        timeout=settings.fetch_timeout,
    )
    try:
        code = await fetch_script(url, policy)
    except FetchRefused as exc:
        raise Problem(
            422,
            "Source refused",
            f"source.url: {exc}",
            "fetch-refused",
            [FieldError("source.url", str(exc))],
            extra={"rule": exc.rule},
        ) from None
    try:
        parse_script(code, settings.python_versions)
    except InvalidScript as exc:
        raise invalid(
            [FieldError("source", f"the script at {url} {e.message}") for e in exc.errors]
        ) from None
    return code


async def _check_count(request: web.Request, owner: str) -> None:
    """The function quota. When no deployer answers, the create is stored anyway (the
    command waits in JetStream, as every create does): the quota is not worth making the
    API's writes depend on the deployer's reads, and the rate limit still bounds a user."""
    try:
        count = len(await request.app[DEPLOYER].list_for(owner))
    except Problem as problem:
        if problem.status != 503:
            raise
        log.warning("could not count the user's functions; create accepted uncounted",
                    extra={"user": owner, "error": problem.detail})  # fmt: skip
        return
    check_function_count(owner, count, request.app[SETTINGS].max_functions_per_user)


@routes.post("/faas/python")
async def create_function(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    identity = _caller(request)
    body: CreateRequest = _validate(CreateRequest, await _json_body(request), request)
    owner = _acting_for(identity, body.user, "say whose function this is (PYFAAS_AUTH=none)")
    _check_sizes(request, body.code, "code", body.env, body.secrets)
    function_id, command_id = uuid4(), uuid4()
    request_digest: str | None = None
    if (key := idempotency.key_of(request)) is not None:
        function_id, command_id = idempotency.ids_for(owner, key)
        request_digest = idempotency.digest(owner, body)
        private = body.visibility == "private"
        earlier = await idempotency.earlier_create(
            request, function_id, request_digest, must_know=private
        )
        if earlier is not None:  # a retry: the function the first one made, not counted
            response = _accepted(earlier)
            response.headers[idempotency.REPLAYED] = "true"
            return response
    rate = request.app[CREATE_RATE]
    deployer = request.app[DEPLOYER]
    # Counted before the fetch and the quota check: each of them costs the platform work.
    stamp = rate.take(owner)
    try:
        code = body.code if body.source is None else await _fetch(request, body.source.url)
        if settings.max_functions_per_user:
            await _check_count(request, owner)
        idle_timeout = _policy(body, "idle_timeout", settings.idle_timeout)
        delete_after = _policy(body, "delete_after", settings.delete_after)
        invoke_key, key_hash = new_invoke_key() if body.visibility == "private" else (None, None)
        assert code is not None
        command = CreateFunction(
            command_id=command_id,
            function_id=function_id,
            owner=owner,
            name=body.name,
            code=code,
            env=body.env,
            secrets=body.secrets,
            idle_timeout=idle_timeout,
            delete_after=delete_after,
            runtime=settings.runtime,
            visibility=body.visibility,
            invoke_key_hash=key_hash,
            request_digest=request_digest,
        )
        stored = await deployer.send(command)
    except Problem as problem:
        if problem.status >= 500:  # the platform failed, not the user: it does not count
            rate.give_back(owner, stamp)
        raise
    if not stored:
        # The same key's create got there first (a retry that overlapped it): that one
        # made the function, and its invoke key, not this one.
        rate.give_back(owner, stamp)
        earlier = await idempotency.earlier_create(
            request, function_id, request_digest, must_know=False
        )
        if earlier is not None:
            response = _accepted(earlier)
            response.headers[idempotency.REPLAYED] = "true"
            return response
        invoke_key = None
    view = FunctionView(
        id=command.function_id, user=command.owner, name=command.name, state="pending",
        desired="running", url=settings.function_url(command.function_id), generation=1,
        observed_generation=0, runtime=command.runtime, env=command.env,
        secrets=dict.fromkeys(command.secrets, REDACTED), visibility=command.visibility,
        idle_timeout=idle_timeout, delete_after=delete_after, created_at=command.issued_at,
        updated_at=command.issued_at,
    )  # fmt: skip
    response = _accepted(view, invoke_key)
    if not stored:
        response.headers[idempotency.REPLAYED] = "true"
    return response


@routes.get("/faas/python")
async def list_functions(request: web.Request) -> web.Response:
    identity = _caller(request)
    data: Any = await _json_body(request)  # a body that is there must be valid, ?user= or not
    body: ListRequest = _validate(ListRequest, {} if data is None else data, request)
    if "user" in request.query:  # the query wins over the body
        body = _validate(ListRequest, {"user": request.query["user"]}, request)
    user: str | None
    if identity is not None and identity.admin and body.user is None:
        user = None  # an admin's list without a user: everybody's
    else:
        user = _acting_for(identity, body.user, "pass ?user=NAME")
    views = await request.app[DEPLOYER].list_for(user)
    return web.json_response({"functions": [resource(v) for v in views]})


@routes.get("/faas/python/{id}")
async def get_function(request: web.Request) -> web.Response:
    identity = _caller(request)
    view = await _owned(request, _function_id(request), identity)
    return web.json_response(resource(view))


_NOTHING_TO_UPDATE = (
    "send at least one of code, env, idle_timeout, delete_after, secrets, visibility, "
    "rotate_invoke_key"
)


@routes.put("/faas/python/{id}")
async def update_function(request: web.Request) -> web.Response:
    identity = _caller(request)
    function_id = _function_id(request)
    body: UpdateRequest = _validate(UpdateRequest, await _json_body(request), request)
    if body.is_empty():
        raise invalid([FieldError("body", _NOTHING_TO_UPDATE)])
    deployer = request.app[DEPLOYER]
    view = await _owned(request, function_id, identity)
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    rotate = bool(fields.pop("rotate_invoke_key", False))
    if fields.get("visibility", "") is None:
        del fields["visibility"]
    env = view.env if fields.get("env") is None else fields["env"]
    new_secrets = fields.get("secrets")
    secret_names = set(view.secrets if new_secrets is None else new_secrets)
    both = sorted(set(env) & secret_names)
    if both:
        raise invalid([FieldError("env", f"{', '.join(map(repr, both))} is a secret of this "
                                  "function; keep each name in env or in secrets")])  # fmt: skip
    # Values of secrets kept as they are are not known here (only their names).
    _check_sizes(request, body.code, "code", env, new_secrets or {})
    for key in ("idle_timeout", "delete_after"):
        if key in fields:
            fields[key] = fields[key] or 0  # null means never, stored as 0
    invoke_key: str | None = None
    visibility = fields.get("visibility", view.visibility)
    if rotate or (visibility == "private" and view.invoke_key_hash is None):
        invoke_key, fields["invoke_key_hash"] = new_invoke_key()
    await deployer.send(UpdateFunction(function_id=function_id, **fields))
    # The function as this update makes it: a client waits for observed_generation to
    # reach this generation (a concurrent change may take it one further).
    changes = {k: v for k, v in fields.items() if k != "code"}
    if "secrets" in changes:
        changes["secrets"] = dict.fromkeys(changes["secrets"], REDACTED)
    updated = view.model_copy(update={**changes, "generation": view.generation + 1})
    return _accepted(updated, invoke_key)


@routes.delete("/faas/python/{id}")
async def delete_function(request: web.Request) -> web.Response:
    identity = _caller(request)
    function_id = _function_id(request)
    deployer = request.app[DEPLOYER]
    view = await _owned(request, function_id, identity)
    await deployer.send(DeleteFunction(function_id=function_id))
    return _accepted(view.model_copy(update={"desired": Desired.DELETED, "state": State.DELETING}))


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


@routes.get("/faas/python/{id}/logs")
async def function_logs(request: web.Request) -> web.StreamResponse:
    identity = _caller(request)
    function_id = _function_id(request)
    follow = request.query.get("follow", "false").lower()
    if follow not in _TRUE | _FALSE:
        raise invalid([FieldError("follow", "must be true or false")])
    lowest = 0 if follow in _TRUE else 1  # following only what comes next is useful
    try:
        tail = int(request.query.get("tail", "100"))
        if not lowest <= tail <= 10_000:
            raise ValueError
    except ValueError:
        raise invalid(
            [FieldError("tail", f"must be a whole number from {lowest} to 10000")]
        ) from None
    if identity is not None and not identity.admin:
        await _owned(request, function_id, identity)
    if follow in _TRUE:
        return await _follow_logs(request, function_id, tail)
    lines = await request.app[DEPLOYER].logs(function_id, tail)
    return web.json_response({"id": str(function_id), "lines": lines})


async def _follow_logs(request: web.Request, function_id: UUID, tail: int) -> web.StreamResponse:
    """Server-sent events: each log line is one ``data:`` event; a comment every
    heartbeat keeps proxies from closing the stream and tells us when the reader left;
    ``event: gap`` says lines were lost; ``event: end`` (data: why) is the last."""
    heartbeat = request.app[SETTINGS].logs_heartbeat
    async with request.app[DEPLOYER].follow_logs(function_id, tail, heartbeat) as chunks:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        await response.prepare(request)
        expected = 1
        try:
            await response.write(b": following\n\n")
            async for chunk in chunks:
                if chunk.seq > expected:
                    lost = chunk.seq - expected
                    await response.write(
                        f"event: gap\ndata: {lost} batch(es) of log lines were lost\n\n".encode()
                    )
                expected = max(expected, chunk.seq + 1)
                if chunk.lines:
                    await response.write(
                        "".join(f"data: {line}\n\n" for line in chunk.lines).encode()
                    )
                elif not chunk.end:
                    await response.write(b": heartbeat\n\n")
                if chunk.end:
                    await response.write(f"event: end\ndata: {chunk.reason}\n\n".encode())
                    break
        except ConnectionResetError:
            pass  # the reader went away; leaving the context stops the deployer's side
        return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    nc = request.app[DEPLOYER].nc
    if not nc.is_connected:
        raise Problem(503, "Not ready", "not connected to NATS", headers={"Retry-After": "1"})
    return web.json_response({"status": "ready"})
