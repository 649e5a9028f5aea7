"""The deployer as a real process against a real NATS and Postgres: commands published
the way the API (or a retrying client) publishes them, state read back the way the API
reads it. Duplicate, unknown, out-of-order and unparseable commands are all harmless."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as Nats

from pyfaas_common import bus
from pyfaas_common.messages import (
    CreateFunction,
    DeleteFunction,
    GetQuery,
    GetReply,
    ListQuery,
    ListReply,
    UpdateFunction,
)
from pyfaas_common.subjects import Subjects
from tests.platform import example

CODE = example("hello_stdlib.py")


class Deployer:
    def __init__(self, nc: Nats, subjects: Subjects, data_dir: Path) -> None:
        self.nc = nc
        self.subjects = subjects
        self.data_dir = data_dir

    async def send(self, command: Any) -> None:
        await bus.publish_command(self.nc, self.subjects, command)

    async def get(self, function_id: uuid.UUID) -> GetReply:
        msg = await self.nc.request(
            self.subjects.query("get"), bus.encode(GetQuery(id=function_id)), timeout=5
        )
        return GetReply.model_validate_json(msg.data)

    async def until(
        self, function_id: uuid.UUID, check: Callable[[GetReply], bool], timeout: float = 30
    ) -> GetReply:
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.get(function_id)
            if check(reply):
                return reply
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition never met; last reply {reply}")
            await asyncio.sleep(0.05)

    async def consumer_settled(self) -> None:
        """Every command delivered and acknowledged."""
        js = self.nc.jetstream()
        deadline = time.monotonic() + 20
        while True:
            info = await js.consumer_info(
                self.subjects.command_stream, self.subjects.deployer_durable
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer not settled: {info}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def deployer(
    nats_url: str, prefix: str, postgres_url: str, data_dir: Path
) -> AsyncIterator[Deployer]:
    env = {
        **os.environ,
        "PYFAAS_NATS_URL": nats_url,
        "PYFAAS_NATS_PREFIX": prefix,
        "PYFAAS_DATABASE_URL": postgres_url,
        "PYFAAS_DATA_DIR": str(data_dir),
    }
    log = (data_dir / "deployer.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyfaas_deployer", env=env, stdout=log, stderr=log
    )
    nc = await nats.connect(nats_url)
    subjects = Subjects(prefix)
    try:
        # Ready when it answers reads.
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.request(
                    subjects.query("list"), bus.encode(ListQuery(user="x")), timeout=0.5
                )
                break
            except Exception:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError((data_dir / "deployer.log").read_text()) from None
                await asyncio.sleep(0.1)
        yield Deployer(nc, subjects, data_dir)
    finally:
        await nc.close()
        proc.terminate()
        await proc.wait()
        log.close()


def _ready(reply: GetReply) -> bool:
    return reply.function is not None and reply.function.state == "ready"


async def test_a_duplicate_create_makes_one_function(deployer: Deployer) -> None:
    fid = uuid.uuid4()
    create = CreateFunction(function_id=fid, owner="alice", name="dup", code=CODE)
    await deployer.send(create)
    await deployer.send(create)  # same command id: JetStream stores it once
    await deployer.send(create.model_copy(update={"command_id": uuid.uuid4()}))  # a client's retry
    await deployer.until(fid, _ready)
    await deployer.consumer_settled()

    msg = await deployer.nc.request(
        deployer.subjects.query("list"), bus.encode(ListQuery(user="alice")), timeout=5
    )
    listed = ListReply.model_validate_json(msg.data).functions
    assert [f.id for f in listed] == [fid]
    assert listed[0].generation == 1
    assert len(list((deployer.data_dir / "functions").glob("*/process.json"))) == 1


async def test_deleting_an_unknown_id_is_a_harmless_success(deployer: Deployer) -> None:
    fid = uuid.uuid4()
    await deployer.send(DeleteFunction(function_id=fid))
    await deployer.consumer_settled()
    assert (await deployer.get(fid)).error.status == 404  # type: ignore[union-attr]

    # A create that arrives after its delete does not bring the function back.
    await deployer.send(CreateFunction(function_id=fid, owner="alice", name="late", code=CODE))
    await deployer.consumer_settled()
    assert (await deployer.get(fid)).error.status == 404  # type: ignore[union-attr]
    assert not (deployer.data_dir / "functions" / str(fid)).exists()


async def test_commands_apply_in_stream_order_whatever_order_they_arrive(
    deployer: Deployer,
) -> None:
    """The stream's sequence orders commands. An update published before its function's
    create is older than the create: it waits (it is not an error) and, once the create
    is applied, it is dropped as stale instead of undoing anything — and it does not
    stay in the consumer forever."""
    fid = uuid.uuid4()
    await deployer.send(UpdateFunction(function_id=fid, env={"GREETING": "stale"}))
    await deployer.send(CreateFunction(function_id=fid, owner="alice", name="ooo", code=CODE))
    reply = await deployer.until(fid, _ready)
    await deployer.consumer_settled()
    assert reply.function is not None
    assert (reply.function.generation, reply.function.env) == (1, {})

    # A newer update is applied: a new generation, rolled out.
    await deployer.send(UpdateFunction(function_id=fid, env={"GREETING": "fresh"}))
    reply = await deployer.until(
        fid, lambda r: _ready(r) and r.function is not None and r.function.observed_generation == 2
    )
    assert reply.function is not None
    assert reply.function.env == {"GREETING": "fresh"}


async def test_a_command_that_does_not_parse_does_not_block_the_others(deployer: Deployer) -> None:
    js = deployer.nc.jetstream()
    bogus = uuid.uuid4()
    await js.publish(deployer.subjects.command("create", bogus), b'{"v": 99, "kind": "create"}')
    fid = uuid.uuid4()
    await deployer.send(CreateFunction(function_id=fid, owner="alice", name="after", code=CODE))
    await deployer.until(fid, _ready)
    await deployer.consumer_settled()
    assert (await deployer.get(bogus)).error is not None
    # Rejected at once (it can never parse), not redelivered until max_deliver.
    info = await js.consumer_info(
        deployer.subjects.command_stream, deployer.subjects.deployer_durable
    )
    assert info.num_redelivered == 0
