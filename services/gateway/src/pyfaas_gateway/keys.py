"""Typed application keys shared by the gateway's modules."""

import aiohttp
from aiohttp import web

from .access import AccessLog
from .routes import RouteTable
from .settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
ROUTES = web.AppKey("routes", RouteTable)
ACCESS = web.AppKey("access", AccessLog)
SESSION = web.AppKey("session", aiohttp.ClientSession)
