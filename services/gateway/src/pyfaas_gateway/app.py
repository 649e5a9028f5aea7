"""The gateway process: ``init_app`` wires the resources, ``main`` serves it.

It reads routes from the database (read-only), follows the deployer's state events to keep
its cache true, and publishes access records for the reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from nats.aio.msg import Msg
from pydantic import ValidationError

from pyfaas_common import bus, migrate
from pyfaas_common.db import make_engine
from pyfaas_common.logs import setup_logging
from pyfaas_common.messages import StateChanged
from pyfaas_common.streams import ensure_streams
from pyfaas_common.subjects import Subjects
from pyfaas_common.web import problem_middleware

from .access import AccessLog
from .keys import ACCESS, ROUTES, SESSION, SETTINGS
from .proxy import proxy
from .routes import RouteTable
from .settings import GatewaySettings

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def init_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        subjects = Subjects(settings.nats_prefix)
        engine = make_engine(settings.resolved_database_url)
        await migrate.wait_for_schema(engine)
        routes = RouteTable(engine, settings.negative_cache_seconds)
        app[ROUTES] = routes

        async def on_reconnect() -> None:
            routes.clear()
            log.info("nats reconnected; route cache cleared")

        nc = await bus.wait_for_nats(
            settings.nats_url, "pyfaas-gateway", reconnected_cb=on_reconnect
        )
        await ensure_streams(nc.jetstream(), subjects)

        async def on_event(msg: Msg) -> None:
            try:
                routes.apply(StateChanged.model_validate_json(msg.data))
            except ValidationError as exc:
                log.warning("ignoring a state event that does not parse", extra={"error": str(exc)})

        await nc.subscribe(subjects.all_events, cb=on_event)
        access = AccessLog(nc, subjects, settings.access_interval)
        app[ACCESS] = access
        flusher = asyncio.create_task(access.run())
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        yield
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await access.flush()
        await app[SESSION].close()
        await nc.drain()
        await engine.dispose()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/gateway/{id}", proxy)
    app.router.add_route("*", "/gateway/{id}/{path:.*}", proxy)
    return app


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    log.info(
        "gateway listening", extra={"host": settings.gateway_host, "port": settings.gateway_port}
    )
    web.run_app(
        init_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
    )
