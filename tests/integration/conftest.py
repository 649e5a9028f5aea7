"""The gateway harness's fixtures, for every module here (:mod:`gateway_harness`)."""

from tests.integration.gateway_harness import gw, session, start_gateway, upstream

__all__ = ["gw", "session", "start_gateway", "upstream"]
