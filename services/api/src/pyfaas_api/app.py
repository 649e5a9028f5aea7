"""The API process: ``init_app`` wires the resources, ``main`` serves it.

Stateless: it validates, publishes commands to JetStream and asks the deployer for reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from pyfaas_common import bus
from pyfaas_common.auth import Authenticator
from pyfaas_common.logs import setup_logging
from pyfaas_common.streams import ensure_streams
from pyfaas_common.subjects import Subjects
from pyfaas_common.web import problem_middleware

from .deployer import DeployerClient
from .keys import AUTH, CREATE_RATE, DEPLOYER, SETTINGS
from .openapi import openapi_document
from .quotas import CreateRate
from .routes import routes
from .settings import ApiSettings

log = logging.getLogger(__name__)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def init_app(settings: ApiSettings) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware], client_max_size=settings.max_request_bytes
    )
    app[SETTINGS] = settings
    app[AUTH] = Authenticator(settings)
    app[CREATE_RATE] = CreateRate(settings.max_creates_per_minute)

    async def nats_ctx(app: web.Application) -> AsyncIterator[None]:
        subjects = Subjects(settings.nats_prefix)
        nc = await bus.wait_for_nats(settings.nats_url, "pyfaas-api")
        await ensure_streams(nc.jetstream(), subjects)
        app[DEPLOYER] = DeployerClient(nc, subjects, settings.query_timeout)
        yield
        await nc.drain()

    app.cleanup_ctx.append(nats_ctx)
    app.add_routes(routes)
    app.router.add_get("/openapi.json", _openapi)
    return app


def main() -> None:
    settings = ApiSettings()
    setup_logging("api", settings.log_level)
    log.info("api listening", extra={"host": settings.api_host, "port": settings.api_port})
    app = init_app(settings)
    app[AUTH].warn_if_open("API")
    web.run_app(
        app,
        host=settings.api_host,
        port=settings.api_port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
        keepalive_timeout=settings.keepalive_timeout,
    )
