"""Typed application keys, and :class:`Gateway`: what every proxied request needs.

:mod:`app` builds one :class:`Gateway` per worker process in its ``cleanup_ctx`` and
stores it under :data:`GATEWAY`; the handlers in :mod:`proxy`, :mod:`websocket` and
:mod:`health` read it with one lookup per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common.auth import Authenticator

from .access import AccessLog
from .headers import HeaderPolicy
from .metrics import Metrics
from .routes import RouteTable
from .settings import GatewaySettings
from .upstream import UpstreamPool
from .wake import Waker


@dataclass(slots=True)
class Gateway:
    settings: GatewaySettings
    routes: RouteTable
    pool: UpstreamPool
    """Plain HTTP to functions: the fast path."""
    session: aiohttp.ClientSession
    """WebSockets to functions (rare and long-lived: aiohttp's client is right for them)."""
    access: AccessLog
    metrics: Metrics
    headers: HeaderPolicy
    nc: Client
    engine: AsyncEngine
    waker: Waker
    auth: Authenticator
    """Checks tokens for private functions, and spots platform tokens to strip."""


SETTINGS = web.AppKey("settings", GatewaySettings)
METRICS = web.AppKey("metrics", Metrics)
GATEWAY = web.AppKey("gateway", Gateway)
