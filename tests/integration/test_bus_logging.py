"""What the shared NATS client says in the logs: a lost connection is a warning an
operator should see; a service closing its own connection (at start-up, at shutdown) is
not one."""

from __future__ import annotations

import logging

import pytest

from pyfaas_common import bus


async def test_closing_our_own_connection_is_not_reported_as_lost(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyfaas_common.bus")
    nc = await bus.connect(nats_url, "pyfaas-test")
    await nc.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
