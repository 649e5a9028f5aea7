"""The OpenAPI 3.1 document, generated from the same pydantic models that validate the
requests (``pyfaas_common.schemas``), so the document and the behaviour cannot drift."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from pyfaas_common.schemas import (
    CreateRequest,
    FunctionList,
    FunctionLogs,
    FunctionResource,
    ListRequest,
    ProblemDetail,
    UpdateRequest,
)

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("ProblemDetail")}},
    }


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The function's id, as returned by the create.",
}

_COMMON_ERRORS = {
    "401": _problem(
        "PYFAAS_AUTH=jwt and the request has no valid token (Authorization: Bearer <token>)"
    ),
    "503": _problem("NATS or the deployer is not reachable; retry after Retry-After seconds"),
}
_NOT_YOURS = "No such function (another user's function answers the same)"
_FORBIDDEN = _problem("The token is another user's than the user the request names")


@cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(  # Source is reached through CreateRequest
        [
            (CreateRequest, "validation"),
            (UpdateRequest, "validation"),
            (ListRequest, "validation"),
            (FunctionResource, "serialization"),
            (FunctionList, "serialization"),
            (FunctionLogs, "serialization"),
            (ProblemDetail, "serialization"),
        ],
        ref_template=REF,
    )
    accepted = {"description": "Accepted: the command is stored and will be carried out",
                "content": _json("FunctionResource")}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pyfaas",
            "version": "1",
            "description": "Deploy one Python script with PEP 723 metadata; call it under "
            "/gateway/{id}/ on the gateway. Errors are RFC 9457 problem details.",
        },
        "paths": {
            "/faas/python": {
                "post": {
                    "operationId": "createFunction",
                    "summary": "Deploy a script",
                    "description": "The script comes inline (`code`) or from a URL "
                    "(`source: {url}`), fetched once by pyfaas' safe-fetching rules; a "
                    "refusal is a 422 whose `rule` names the rule (https-only, "
                    "public-addresses-only, redirects, size-cap, timeout, status-200, "
                    "utf-8, valid-url, reachable). A private function's answer carries its "
                    "`invoke_key`, once. With an `Idempotency-Key` header a create can be "
                    "retried (after a 503, a timeout) without making a second function.",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                            "description": "Any unique string (a UUID): every create with the "
                            "same key and user makes the same one function. A retry that "
                            "finds it answers 202 with it (without the invoke key) and "
                            "`Idempotent-Replayed: true`.",
                        }
                    ],
                    "requestBody": {"required": True, "content": _json("CreateRequest")},
                    "responses": {
                        "202": accepted,
                        "400": _problem(
                            "The body is not JSON, or the Idempotency-Key is malformed"
                        ),
                        "409": _problem(
                            "The function this Idempotency-Key made has since been deleted"
                        ),
                        "403": _problem(
                            "The token is another user's, or the user has as many functions "
                            "as PYFAAS_MAX_FUNCTIONS_PER_USER allows"
                        ),
                        "413": _problem("The body is too large"),
                        "422": _problem(
                            "A field is invalid, or the source was refused; "
                            "'errors' says which and why"
                        ),
                        "429": {
                            **_problem(
                                "Too many creates in the last minute "
                                "(PYFAAS_MAX_CREATES_PER_MINUTE)"
                            ),
                            "headers": {
                                "Retry-After": {
                                    "description": "Seconds until a create is accepted again",
                                    "schema": {"type": "integer"},
                                }
                            },
                        },
                        **_COMMON_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listFunctions",
                    "summary": "List a user's functions",
                    "parameters": [
                        {
                            "name": "user",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": 'Whose functions; or send {"user": ...} as body. '
                            "With a token: defaults to the token's user; an admin who leaves "
                            "it out gets every user's.",
                        }
                    ],
                    "requestBody": {"required": False, "content": _json("ListRequest")},
                    "responses": {
                        "200": {"description": "The functions", "content": _json("FunctionList")},
                        "400": _problem("A body was sent and it is not JSON"),
                        "403": _FORBIDDEN,
                        "422": _problem("No user, or not a valid user name"),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/faas/python/{id}": {
                "parameters": [_ID],
                "get": {
                    "operationId": "getFunction",
                    "summary": "One function with its state and reason",
                    "responses": {
                        "200": {
                            "description": "The function",
                            "content": _json("FunctionResource"),
                        },
                        "404": _problem(_NOT_YOURS),
                        **_COMMON_ERRORS,
                    },
                },
                "put": {
                    "operationId": "updateFunction",
                    "summary": "New code or settings: a new generation, rolled out",
                    "description": "Fields left out keep their value. The answer is the "
                    "function as the update makes it: wait until `observed_generation` "
                    "reaches its `generation`. The URL stays the same, and the previous "
                    "generation keeps serving until the new one accepts connections; if the "
                    "new one does not start, the function stays `ready` on the previous one "
                    "and `reason` says why.",
                    "requestBody": {"required": True, "content": _json("UpdateRequest")},
                    "responses": {
                        "202": accepted,
                        "404": _problem(_NOT_YOURS),
                        "400": _problem("The body is not JSON"),
                        "413": _problem("The body is too large"),
                        "422": _problem("A field is invalid"),
                        **_COMMON_ERRORS,
                    },
                },
                "delete": {
                    "operationId": "deleteFunction",
                    "summary": "Delete a function",
                    "responses": {
                        "202": accepted,
                        "404": _problem(_NOT_YOURS),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/faas/python/{id}/logs": {
                "parameters": [_ID],
                "get": {
                    "operationId": "functionLogs",
                    "summary": "Recent log lines of the function, or a live stream of them",
                    "description": "Without follow: the last `tail` lines as JSON. With "
                    "`follow=true`: server-sent events (text/event-stream): the last `tail` "
                    "lines, then each new line as the function prints it (across restarts and "
                    "updates), one `data:` event per line; a comment (`: heartbeat`) every few "
                    "seconds when there is nothing to say; `event: gap` when lines were lost; "
                    "`event: end` with the reason as data when the stream ends (the function "
                    "was deleted, or the platform restarted: follow again).",
                    "parameters": [
                        {
                            "name": "tail",
                            "in": "query",
                            "required": False,
                            "description": "How many of the last lines; 0 (only with "
                            "follow) means only new ones.",
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 10000,
                                "default": 100,
                            },
                        },
                        {
                            "name": "follow",
                            "in": "query",
                            "required": False,
                            "description": "Stream new lines as server-sent events.",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Log lines (JSON), or with follow=true a stream "
                            "of server-sent events",
                            "content": {
                                **_json("FunctionLogs"),
                                "text/event-stream": {
                                    "schema": {"type": "string"},
                                    "example": ": following\n\ndata: listening on "
                                    "0.0.0.0:8000\n\n: heartbeat\n\nevent: end\ndata: "
                                    "the function was deleted\n\n",
                                },
                            },
                        },
                        "404": _problem(_NOT_YOURS),
                        "422": _problem("tail or follow is out of range"),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The API process is alive",
                    "security": [],
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "The API can accept commands (it is connected to NATS)",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": _problem("Not connected to NATS; retry after Retry-After"),
                    },
                }
            },
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "With PYFAAS_AUTH=jwt: the token's sub is the user, an "
                    "admin claim sees every user's functions (`faas token` mints one for "
                    "local use). With PYFAAS_AUTH=none no token is needed.",
                }
            },
        },
        # Either a token, or nothing (PYFAAS_AUTH=none); /healthz never needs one.
        "security": [{"bearerAuth": []}, {}],
    }
