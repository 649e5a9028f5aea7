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


@routes.post("/faas/python")
async def create_function(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body: CreateRequest = _validate(CreateRequest, await _json_body(request), request)
    idle_timeout = (
        (body.idle_timeout or 0) if "idle_timeout" in body.model_fields_set
        else settings.idle_timeout
    )  # fmt: skip
    command = CreateFunction(
        function_id=uuid4(),
        owner=body.user,
        name=body.name,
        code=body.code,
        env=body.env,
        idle_timeout=idle_timeout,
        runtime=settings.runtime,
    )
    await request.app[DEPLOYER].send(command)
    view = FunctionView(
        id=command.function_id, user=command.owner, name=command.name, state="pending",
        desired="running", url=settings.function_url(command.function_id), generation=1,
        observed_generation=0, runtime=command.runtime, env=command.env,
        idle_timeout=idle_timeout, created_at=command.issued_at, updated_at=command.issued_at,
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
        raise invalid([FieldError("body", "send at least one of code, env, idle_timeout")])
    deployer = request.app[DEPLOYER]
    view = await deployer.get(function_id)
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "idle_timeout" in fields:
        fields["idle_timeout"] = fields["idle_timeout"] or 0
    await deployer.send(UpdateFunction(function_id=function_id, **fields))
    return _accepted(view)


@routes.delete("/faas/python/{id}")
async def delete_function(request: web.Request) -> web.Response:
    function_id = _function_id(request)
    deployer = request.app[DEPLOYER]
    view = await deployer.get(function_id)
    await deployer.send(DeleteFunction(function_id=function_id))
    return _accepted(view.model_copy(update={"desired": "deleted", "state": "deleting"}))


@routes.get("/faas/python/{id}/logs")
async def function_logs(request: web.Request) -> web.Response:
    function_id = _function_id(request)
    try:
        tail = int(request.query.get("tail", "100"))
        if not 1 <= tail <= 10_000:
            raise ValueError
    except ValueError:
        raise invalid([FieldError("tail", "must be a whole number from 1 to 10000")]) from None
    lines = await request.app[DEPLOYER].logs(function_id, tail)
    return web.json_response({"id": str(function_id), "lines": lines})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    nc = request.app[DEPLOYER].nc
    if not nc.is_connected:
        raise Problem(503, "Not ready", "not connected to NATS", headers={"Retry-After": "1"})
    return web.json_response({"status": "ready"})
