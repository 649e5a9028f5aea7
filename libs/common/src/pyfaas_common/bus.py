"""Connecting to NATS the same way in every service, and publishing commands so that
JetStream de-duplicates them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import PubAck
from pydantic import BaseModel

from .messages import CommandBase
from .subjects import Subjects

log = logging.getLogger(__name__)


async def connect(url: str, name: str, **options: Any) -> Client:
    """A client that reconnects forever: a NATS restart must not take a service down."""

    async def _error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    client: list[Client] = []

    async def _disconnected() -> None:
        if client and client[0].is_closed:
            return  # our own close(), not a lost connection
        log.warning("nats disconnected")

    async def _reconnected() -> None:
        log.info("nats reconnected")

    options.setdefault("error_cb", _error)
    options.setdefault("disconnected_cb", _disconnected)
    options.setdefault("reconnected_cb", _reconnected)
    nc = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        **options,
    )
    client.append(nc)
    return nc


async def wait_for_nats(url: str, name: str, timeout: float = 30.0, **options: Any) -> Client:
    """Connect, retrying with back-off until ``timeout`` (services may start before NATS)."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.1
    while True:
        try:
            return await connect(url, name, **options)
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"cannot reach NATS at {url}: {exc!r}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


async def publish_command(
    nc: Client, subjects: Subjects, command: CommandBase, timeout: float = 5.0
) -> PubAck:
    """Publish a command to JetStream with ``Nats-Msg-Id`` set to its id, so that a retry
    of the same command within the duplicate window is stored once."""
    verb: Any = command.kind
    js = nc.jetstream(timeout=timeout)
    return await js.publish(
        subjects.command(verb, command.function_id),
        encode(command),
        headers={"Nats-Msg-Id": str(command.command_id)},
        timeout=timeout,
    )
