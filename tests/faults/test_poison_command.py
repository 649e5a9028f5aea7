"""A command that fails every time (a poison message) is delivered a bounded number of
times, its function is marked failed with the reason, and the commands behind it are
carried out meanwhile.

The poison is a real failure, not a test hook: a create whose script holds a NUL byte.
The API refuses such a script (422), but JetStream takes any bytes from any publisher (an
older API, a script of an operator's), pydantic accepts the string, and Postgres refuses
it on every insert (a ``text`` value cannot hold NUL).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import aiohttp
import nats
import pytest

from pyfaas_common import bus
from pyfaas_common.messages import CreateFunction
from pyfaas_common.subjects import Subjects
from tests.faults.harness import platform_on, record, wait_until
from tests.platform import Client, example

MAX_DELIVER = 6
"""Deliveries 1..6 come 0.5, 1, 2, 4, 8 s apart: given up after about 16 s."""


@pytest.mark.timeout(150)
async def test_poison_command_is_given_up_and_holds_nothing_up(
    tmp_path: Path, nats_url: str, postgres_url: str
) -> None:
    async with (
        platform_on(
            tmp_path / "data", nats_url, postgres_url,
            PYFAAS_COMMAND_MAX_DELIVER=str(MAX_DELIVER),
        ) as platform,
        aiohttp.ClientSession() as session,
    ):  # fmt: skip
        client = Client(session, platform)
        poison = CreateFunction(
            function_id=uuid.uuid4(),
            owner="poison",
            name="nul",
            code=example("hello_stdlib.py") + "\x00",
        )
        nc = await nats.connect(nats_url)
        try:
            subjects = Subjects(platform.env["PYFAAS_NATS_PREFIX"])
            await bus.publish_command(nc, subjects, poison)
        finally:
            await nc.close()
        published_at = time.monotonic()

        # Commands behind it, for other functions: carried out while it is redelivered.
        behind = [
            (await client.create(example("hello_stdlib.py"), user="poison", name=f"b{i}"))["id"]
            for i in range(3)
        ]
        for fid in behind:
            await client.wait_for(fid, {"ready"}, timeout=60)
        behind_ready = time.monotonic() - published_at
        status, early = await client.get(str(poison.function_id))
        assert status == 200 and early["state"] == "pending", early  # not given up yet

        failed = await client.wait_for(str(poison.function_id), {"failed"}, timeout=90)
        given_up = time.monotonic() - published_at
        assert f"create command failed {MAX_DELIVER} times and was given up" in failed["reason"]
        assert "invalid byte sequence" in failed["reason"], failed["reason"]
        assert "INSERT" not in failed["reason"]  # the database's words, not the statement

        # Not retried for ever: the consumer holds nothing unacknowledged or pending.
        async def drained() -> bool:
            nc = await nats.connect(nats_url)
            try:
                info = await nc.jetstream().consumer_info(
                    subjects.command_stream, subjects.deployer_durable
                )
            finally:
                await nc.close()
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_until(drained, 10, "the command consumer drained")
        log = (Path(platform.env["PYFAAS_DATA_DIR"]) / "platform.log").read_text()
        attempts = log.count(f'"function_id": "{poison.function_id}"')
        # Its function reads as failed and stays so (the reconciler has nothing to run).
        response = await client.call(str(poison.function_id))
        assert response.status == 502
        # A fix by the user brings it to life: an update with code.
        async with session.put(
            f"{platform.api}/faas/python/{poison.function_id}",
            json={"code": example("hello_stdlib.py")},
        ) as r:
            assert r.status == 202, await r.text()
        await client.wait_for(str(poison.function_id), {"ready"}, timeout=60)
        record(
            "poison command",
            f"a create Postgres refuses every time (NUL in the script), max_deliver={MAX_DELIVER}",
            given_up,
            lost=0,
            detail=f"given up after {MAX_DELIVER} deliveries ({given_up:.1f}s), function failed "
            f"with the reason; 3 creates behind it ready {behind_ready:.1f}s after it was "
            f"published; {attempts} log lines about it; an update with code revived it",
        )
