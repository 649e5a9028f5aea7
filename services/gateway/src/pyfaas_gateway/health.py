"""``/healthz``, ``/readyz`` and ``/metrics``: what orchestrators and Prometheus ask.

``/healthz`` says the process serves (liveness: restart it if not); ``/readyz`` says it
can route (NATS connected, the database answering), so a load balancer sends it traffic
only then.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from pyfaas_common.problems import unavailable

from .keys import GATEWAY


async def healthz(request: web.Request) -> web.Response:
    # The worker's pid tells an operator (and a test) which worker process answered.
    return web.json_response({"status": "ok", "worker": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    problems = []
    if not gateway.nc.is_connected:
        problems.append("NATS is not connected")
    try:
        async with asyncio.timeout(gateway.settings.readiness_timeout):
            async with gateway.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        problems.append(f"the database does not answer: {type(exc).__name__}")
    if problems:
        raise unavailable("; ".join(problems), retry_after=1)
    return web.json_response({"status": "ready", "nats": "ok", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    gateway.metrics.sync_routes(gateway.routes)
    return web.Response(
        body=gateway.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
