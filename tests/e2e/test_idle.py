"""Idle functions, end to end with the real reaper: a function nobody calls goes to sleep
(its process stops), says why, wakes when asked, and is deleted after sleeping too long."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest

from pyfaas_common import bus
from pyfaas_common.messages import WakeFunction
from pyfaas_common.subjects import Subjects
from tests.e2e.conftest import running_platform
from tests.platform import Client, Platform, example, local_only

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def idle_platform(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    async for p in running_platform(
        tmp_path_factory.mktemp("idle"), nats_url, postgres_url, PYFAAS_SWEEP_INTERVAL="0.3"
    ):
        local_only(p)  # needs a sweep interval of its own
        yield p


async def test_an_idle_function_sleeps_and_wakes(idle_platform: Platform, nats_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(example("hello_stdlib.py"), idle_timeout=2, delete_after=0))[
            "id"
        ]
        await client.wait_for(fid, {"ready"})
        assert (await client.call(fid, "hi")).status == 200
        process = idle_platform.data_dir / "functions" / fid / "process.json"
        assert process.exists()

        asleep = await client.wait_for(fid, {"sleeping"}, timeout=20)
        assert asleep["reason"] == "idle for 2 s"
        assert asleep["desired"] == "sleeping"
        assert not process.exists()  # scaled to zero: no process
        response = await client.call(fid, "hi")
        assert response.status == 503

        nc = await nats.connect(nats_url)
        try:
            prefix = idle_platform.env["PYFAAS_NATS_PREFIX"]
            await bus.publish_command(
                nc, Subjects(prefix), WakeFunction(function_id=uuid.UUID(fid))
            )
        finally:
            await nc.close()
        awake = await client.wait_for(fid, {"ready"}, timeout=30)
        assert awake["generation"] == asleep["generation"] + 1
        assert (await client.call(fid, "again")).status == 200


async def test_a_function_asleep_too_long_is_deleted(idle_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        fid = (await client.create(example("hello_stdlib.py"), idle_timeout=1, delete_after=1))[
            "id"
        ]
        await client.wait_for(fid, {"sleeping"}, timeout=20)
        await client.wait_for(fid, {"HTTP 404"}, timeout=20)
        assert (await client.call(fid, "")).status == 404
        assert not (idle_platform.data_dir / "functions" / fid).exists()


async def test_never_idle_stays_up(idle_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, idle_platform)
        never = (await client.create(example("hello_stdlib.py"), idle_timeout=None))["id"]
        quick = (await client.create(example("hello_stdlib.py"), idle_timeout=1))["id"]
        await client.wait_for(quick, {"sleeping"}, timeout=20)  # the reaper has swept since
        status, data = await client.get(never)
        assert (status, data["state"], data["idle_timeout"]) == (200, "ready", 0)
