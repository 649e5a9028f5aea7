"""A running platform (``faas dev``) per test module, on Postgres or the embedded SQLite."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js.errors import NotFoundError

from pyfaas_common.subjects import Subjects
from tests.platform import Client, Platform, external_platform

pytestmark = pytest.mark.e2e


async def _drop_streams(nats_url: str, prefix: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        s = Subjects(prefix)
        for stream in (s.command_stream, s.event_stream, s.access_stream):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def running_platform(
    tmp: Path, nats_url: str, database_url: str, **extra_env: str
) -> AsyncIterator[Platform]:
    external = external_platform(tmp)
    if external is not None:
        yield external
        return
    prefix = f"e{uuid.uuid4().hex[:12]}"
    platform = Platform(tmp, nats_url, prefix, database_url, extra_env)
    await platform.start()
    try:
        yield platform
    finally:
        code = await platform.stop()
        await _drop_streams(nats_url, prefix)
        assert code == 0, f"faas dev did not stop cleanly ({code}):\n{platform.log_tail()}"


@pytest.fixture(scope="module")
async def platform(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    """The platform on a real Postgres and a real NATS."""
    async for p in running_platform(tmp_path_factory.mktemp("platform"), nats_url, postgres_url):
        yield p


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, platform)
