"""The HTTP API's handlers. They validate, turn a request into a command or a read, and
leave every error to the problem middleware in ``app.py``."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pyfaas_common.messages import (
    CreateFunction,
    DeleteFunction,
    FunctionView,
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

from .keys import DEPLOYER, SETTINGS

routes = web.RouteTableDef()


def resource(view: FunctionView) -> dict[str, Any]:
    data = view.model_dump(mode="json", exclude={"v", "endpoint"})
    return FunctionResource.model_validate(data).model_dump(mode="json")


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
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


def _accepted(view: FunctionView) -> web.Response:
    return web.json_response(
        resource(view), status=202, headers={"Location": f"/faas/python/{view.id}"}
    )


def _policy(body: BaseModel, key: str, default: int) -> int:
    """Left out: the installation's default; null or 0: never."""
    if key in body.model_fields_set:
        return int(getattr(body, key) or 0)
    return default


@routes.post("/faas/python")
async def create_function(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body: CreateRequest = _validate(CreateRequest, await _json_body(request), request)
    idle_timeout = _policy(body, "idle_timeout", settings.idle_timeout)
    delete_after = _policy(body, "delete_after", settings.delete_after)
    command = CreateFunction(
        function_id=uuid4(),
        owner=body.user,
        name=body.name,
        code=body.code,
        env=body.env,
        idle_timeout=idle_timeout,
        delete_after=delete_after,
        runtime=settings.runtime,
    )
    await request.app[DEPLOYER].send(command)
    view = FunctionView(
        id=command.function_id, user=command.owner, name=command.name, state="pending",
        desired="running", url=settings.function_url(command.function_id), generation=1,
        observed_generation=0, runtime=command.runtime, env=command.env,
        idle_timeout=idle_timeout, delete_after=delete_after, created_at=command.issued_at,
        updated_at=command.issued_at,
    )  # fmt: skip
    return _accepted(view)


@routes.get("/faas/python")
async def list_functions(request: web.Request) -> web.Response:
    if "user" in request.query:
        data: Any = {"user": request.query["user"]}
    else:
        data = await _json_body(request)
        if data is None:
            raise invalid([FieldError("user", "is required: pass ?user=NAME")])
    body: ListRequest = _validate(ListRequest, data, request)
    views = await request.app[DEPLOYER].list_for(body.user)
    return web.json_response({"functions": [resource(v) for v in views]})


@routes.get("/faas/python/{id}")
async def get_function(request: web.Request) -> web.Response:
    view = await request.app[DEPLOYER].get(_function_id(request))
    return web.json_response(resource(view))


@routes.put("/faas/python/{id}")
async def update_function(request: web.Request) -> web.Response:
    function_id = _function_id(request)
    body: UpdateRequest = _validate(UpdateRequest, await _json_body(request), request)
    if body.is_empty():
        raise invalid(
            [FieldError("body", "send at least one of code, env, idle_timeout, delete_after")]
        )
    deployer = request.app[DEPLOYER]
    view = await deployer.get(function_id)
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    for key in ("idle_timeout", "delete_after"):
        if key in fields:
            fields[key] = fields[key] or 0  # null means never, stored as 0
    await deployer.send(UpdateFunction(function_id=function_id, **fields))
    # The function as this update makes it: a client waits for observed_generation to
    # reach this generation (a concurrent change may take it one further).
    changes = {k: v for k, v in fields.items() if k != "code"}
    return _accepted(view.model_copy(update={**changes, "generation": view.generation + 1}))


@routes.delete("/faas/python/{id}")
async def delete_function(request: web.Request) -> web.Response:
    function_id = _function_id(request)
    deployer = request.app[DEPLOYER]
    view = await deployer.get(function_id)
    await deployer.send(DeleteFunction(function_id=function_id))
    return _accepted(view.model_copy(update={"desired": "deleted", "state": "deleting"}))


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


@routes.get("/faas/python/{id}/logs")
async def function_logs(request: web.Request) -> web.StreamResponse:
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
