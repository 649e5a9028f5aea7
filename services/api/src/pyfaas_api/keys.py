"""Typed application keys shared by the API's modules."""

from aiohttp import web

from pyfaas_common.auth import Authenticator

from .deployer import DeployerClient
from .quotas import CreateRate
from .settings import ApiSettings

SETTINGS = web.AppKey("settings", ApiSettings)
DEPLOYER = web.AppKey("deployer", DeployerClient)
AUTH = web.AppKey("auth", Authenticator)
CREATE_RATE = web.AppKey("create_rate", CreateRate)
