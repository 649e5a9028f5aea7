"""What the two HTTP services (api, gateway) share: errors as RFC 9457 problems."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .problems import PROBLEM_CONTENT_TYPE, Problem

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.body(instance)).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


_HTTP_DETAILS = {
    404: "nothing here; see /openapi.json for the API's paths",
    405: "this path does not take that method; see /openapi.json",
    413: "the request body is too large",
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into ``application/problem+json``, in one place."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        mapped = Problem(
            exc.status, exc.reason, _HTTP_DETAILS.get(exc.status, exc.text or exc.reason)
        )
        response = problem_response(mapped, request.path)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return problem_response(
            Problem(500, "Internal error", "pyfaas failed to handle this request; it is logged"),
            request.path,
        )
