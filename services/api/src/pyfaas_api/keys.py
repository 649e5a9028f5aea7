"""Typed application keys shared by the API's modules."""

from aiohttp import web

from .deployer import DeployerClient
from .settings import ApiSettings

SETTINGS = web.AppKey("settings", ApiSettings)
DEPLOYER = web.AppKey("deployer", DeployerClient)
