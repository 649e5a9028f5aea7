"""The gateway process: ``init_app`` wires the resources, ``serve`` runs one worker,
``main`` (``python -m pyfaas_gateway``) runs one or several (:mod:`workers`).

It reads routes from the database (read-only), follows the deployer's state events to keep
its cache true, proxies to functions over one keep-alive pool, and publishes access
records for the reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from nats.aio.msg import Msg
from pydantic import ValidationError

from pyfaas_common import bus, migrate
from pyfaas_common.auth import Authenticator
from pyfaas_common.db import make_engine
from pyfaas_common.logs import setup_logging
from pyfaas_common.messages import StateChanged
from pyfaas_common.streams import ensure_streams
from pyfaas_common.subjects import Subjects
from pyfaas_common.web import problem_middleware

from . import health
from .access import AccessLog
from .front import GatewaySite
from .headers import HeaderPolicy
from .keys import GATEWAY, METRICS, SETTINGS, Gateway
from .metrics import Metrics
from .proxy import proxy
from .routes import RouteTable
from .settings import GatewaySettings
from .upstream import UpstreamPool
from .wake import Waker

log = logging.getLogger(__name__)

_SHUTDOWN_SECONDS = 5.0
"""On SIGTERM, answers under way get this long to finish."""


def init_app(settings: GatewaySettings) -> web.Application:
    # client_max_size only bounds bodies read whole (none here); the proxy enforces
    # max_body_bytes on the stream itself.
    app = web.Application(middlewares=[problem_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        subjects = Subjects(settings.nats_prefix)
        engine = make_engine(settings.resolved_database_url)
        await migrate.wait_for_schema(engine)
        routes = RouteTable(
            engine, settings.negative_cache_seconds, settings.route_miss_queries_per_second
        )

        async def on_reconnect() -> None:
            # Events may have been missed while NATS was away: read the table afresh.
            try:
                await routes.load_all()
                log.info("nats reconnected; route table reloaded", extra={"routes": len(routes)})
            except Exception as exc:
                routes.clear()
                log.warning("route table reload failed; cleared", extra={"error": repr(exc)})

        nc = await bus.wait_for_nats(
            settings.nats_url, "pyfaas-gateway", reconnected_cb=on_reconnect
        )
        await ensure_streams(nc.jetstream(), subjects)

        waker = Waker(nc, subjects, settings, routes, app[METRICS])

        async def on_event(msg: Msg) -> None:
            try:
                event = StateChanged.model_validate_json(msg.data)
                routes.apply(event)
                waker.on_event(event)
            except ValidationError as exc:
                log.warning("ignoring a state event that does not parse", extra={"error": str(exc)})

        # Subscribe first, then load: an event that races the load is newer, and wins.
        await nc.subscribe(subjects.all_events, cb=on_event)
        await routes.load_all()
        gateway = Gateway(
            settings=settings,
            routes=routes,
            pool=UpstreamPool(
                connect_timeout=settings.upstream_connect_timeout,
                keepalive_seconds=settings.upstream_keepalive_seconds,
                max_idle_per_endpoint=settings.upstream_max_idle_per_function,
            ),
            session=aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=settings.upstream_connect_timeout
                ),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            ),
            access=AccessLog(nc, subjects, settings.access_interval),
            metrics=app[METRICS],
            headers=HeaderPolicy.build(settings.blocked_headers, settings.trust_forwarded),
            nc=nc,
            engine=engine,
            waker=waker,
            auth=Authenticator(settings),
        )
        app[GATEWAY] = gateway

        async def every_interval() -> None:
            while True:
                await asyncio.sleep(settings.access_interval)
                await gateway.access.flush()
                # With several workers a scrape reads all of them: keep each one's
                # route-cache counters current, not only the scraped one's.
                gateway.metrics.sync_routes(routes)

        ticker = asyncio.create_task(every_interval())
        yield
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await gateway.access.flush()
        await gateway.pool.close()
        await gateway.session.close()
        await nc.drain()
        await engine.dispose()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_route("*", "/gateway/{id}", proxy)
    app.router.add_route("*", "/gateway/{id}/{path:.*}", proxy)
    return app


def serve(settings: GatewaySettings, *, reuse_port: bool = False) -> None:
    """Run one worker until SIGTERM/SIGINT, on uvloop."""
    uvloop.run(_serve(settings, reuse_port=reuse_port))


async def start(settings: GatewaySettings, *, reuse_port: bool = False) -> web.AppRunner:
    """Listen on the configured address; the runner's ``cleanup()`` stops it.

    What ``web.run_app`` does, but listening with :class:`GatewaySite`: its connections
    start on the fast path (front.py) and are handed to this runner's aiohttp server
    otherwise. Both close a connection idle, or still sending its head, for
    ``keepalive_timeout``.
    """
    runner = web.AppRunner(
        init_app(settings),
        access_log=None,
        # A client that goes away cancels its handler, and so its upstream request.
        handler_cancellation=True,
        keepalive_timeout=settings.keepalive_timeout,
        shutdown_timeout=_SHUTDOWN_SECONDS,
    )
    await runner.setup()
    try:
        site = GatewaySite(
            runner, settings.gateway_host, settings.gateway_port,
            reuse_port=reuse_port or None, keepalive_timeout=settings.keepalive_timeout,
            shutdown_timeout=_SHUTDOWN_SECONDS,
        )  # fmt: skip
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    # What start-up made (modules, the route table, the pools) lives as long as the
    # worker: out of the collector's reach, a full collection no longer walks it. Under
    # load those walks (~80 ms each) were the whole of the gateway's p99 (docs/gateway.md).
    gc.collect()
    gc.freeze()
    return runner


async def _serve(settings: GatewaySettings, *, reuse_port: bool) -> None:
    runner = await start(settings, reuse_port=reuse_port)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    from .workers import run_workers

    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level)
    Authenticator(settings).warn_if_open("gateway")
    log.info(
        "gateway listening",
        extra={
            "host": settings.gateway_host,
            "port": settings.gateway_port,
            "workers": settings.gateway_workers,
        },
    )
    if settings.gateway_workers == 1:
        serve(settings)
    else:
        run_workers(settings)
