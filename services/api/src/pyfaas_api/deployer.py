"""The API's only way to the rest of pyfaas: commands to JetStream, reads by request/reply
to the deployer. Turns every failure into a :class:`Problem` a person can act on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypeVar
from uuid import UUID, uuid4

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel

from pyfaas_common import bus
from pyfaas_common.messages import (
    CommandBase,
    FunctionView,
    GetQuery,
    GetReply,
    ListQuery,
    ListReply,
    LogsChunk,
    LogsFollowControl,
    LogsFollowQuery,
    LogsFollowReply,
    LogsQuery,
    LogsReply,
    QueryError,
)
from pyfaas_common.problems import Problem, not_found, unavailable
from pyfaas_common.subjects import QueryVerb, Subjects

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class DeployerClient:
    def __init__(self, nc: Client, subjects: Subjects, timeout: float) -> None:
        self.nc = nc
        self.subjects = subjects
        self.timeout = timeout

    async def send(self, command: CommandBase) -> bool:
        """Return once JetStream has stored the command; from then on it is not lost.
        False when JetStream already had it (its ``Nats-Msg-Id`` within the duplicate
        window): this send stored nothing, an earlier one did."""
        try:
            ack = await bus.publish_command(self.nc, self.subjects, command, timeout=self.timeout)
        except Exception as exc:
            log.warning("command not accepted by JetStream", extra={"error": repr(exc)})
            raise unavailable(
                "NATS JetStream did not acknowledge the command, so it may or may not "
                "have been stored; retry in a moment (a create sent with an "
                "Idempotency-Key header can be retried without making a second function)",
                retry_after=2,
            ) from exc
        return not ack.duplicate

    async def _ask(self, verb: QueryVerb, query: BaseModel, reply_type: type[R]) -> R:
        try:
            msg = await self.nc.request(
                self.subjects.query(verb), bus.encode(query), timeout=self.timeout
            )
        except NoRespondersError as exc:
            raise unavailable("no deployer is running to answer; retry in a moment") from exc
        except (NatsTimeout, TimeoutError) as exc:
            raise unavailable(
                f"the deployer did not answer within {self.timeout:g}s; retry in a moment"
            ) from exc
        return reply_type.model_validate_json(msg.data)

    async def get(self, function_id: UUID, *, include_deleted: bool = False) -> FunctionView:
        query = GetQuery(id=function_id, include_deleted=include_deleted)
        reply = await self._ask("get", query, GetReply)
        _raise(reply.error)
        if reply.function is None:
            raise not_found(f"no function with id {function_id}")
        return reply.function

    async def list_for(self, user: str | None) -> list[FunctionView]:
        """``user``'s functions; None: every user's (an admin's list)."""
        reply = await self._ask("list", ListQuery(user=user), ListReply)
        _raise(reply.error)
        return reply.functions

    async def logs(self, function_id: UUID, tail: int) -> list[str]:
        reply = await self._ask("logs", LogsQuery(id=function_id, tail=tail), LogsReply)
        _raise(reply.error)
        return reply.lines

    @contextlib.asynccontextmanager
    async def follow_logs(
        self, function_id: UUID, tail: int, heartbeat: float
    ) -> AsyncIterator[AsyncIterator[LogsChunk]]:
        """Ask a deployer to stream the function's log lines; yields the chunks as they
        come (an ``end`` chunk last). Raises a :class:`Problem` before streaming when the
        function does not exist or no deployer answers. While the context is open a
        keepalive goes to the deployer every ``heartbeat`` seconds; leaving it tells the
        deployer to stop."""
        stream = uuid4()
        # Subscribed before asking, so that not even the tail can be missed.
        lines = await self.nc.subscribe(self.subjects.logs_lines(stream))
        control = self.subjects.logs_control(stream)
        keepalive: asyncio.Task[None] | None = None
        try:
            query = LogsFollowQuery(id=function_id, tail=tail, stream=stream, heartbeat=heartbeat)
            reply = await self._ask("logs_follow", query, LogsFollowReply)
            _raise(reply.error)

            async def keep_alive() -> None:
                while True:
                    await asyncio.sleep(heartbeat)
                    with contextlib.suppress(Exception):
                        await self.nc.publish(control, bus.encode(LogsFollowControl()))

            keepalive = asyncio.create_task(keep_alive())

            async def chunks() -> AsyncIterator[LogsChunk]:
                silence = 3 * heartbeat
                while True:
                    try:
                        msg = await lines.next_msg(timeout=silence)
                    except (NatsTimeout, TimeoutError):
                        yield LogsChunk(
                            seq=0, end=True,
                            reason=f"the deployer sent nothing for {silence:g}s; follow again",
                        )  # fmt: skip
                        return
                    chunk = LogsChunk.model_validate_json(msg.data)
                    yield chunk
                    if chunk.end:
                        return

            yield chunks()
        finally:
            if keepalive is not None:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await self.nc.publish(control, bus.encode(LogsFollowControl(stop=True)))
            with contextlib.suppress(Exception):
                await lines.unsubscribe()


def _raise(error: QueryError | None) -> None:
    if error is not None and error.status == 503:  # the deployer's database is away
        raise unavailable(error.detail, retry_after=2)
    if error is not None:
        raise Problem(
            error.status,
            error.title,
            error.detail,
            "not-found" if error.status == 404 else "about:blank",
        )
