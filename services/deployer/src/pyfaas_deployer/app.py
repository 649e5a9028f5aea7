"""The deployer process: consumes commands, answers reads, runs the reconciler.

Started by ``python -m pyfaas_deployer`` (``faas dev`` does that). It is the only writer of
function state. Commands arrive on the durable JetStream consumer ``deployer`` with an
explicit ack policy: a command is acknowledged only once its desired state is committed to
the database, a transient failure is redelivered with back-off, and a command that fails on
every one of ``PYFAAS_COMMAND_MAX_DELIVER`` deliveries marks its function failed instead of
blocking the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from faststream import AckPolicy, FastStream
from faststream.exceptions import NackMessage, RejectMessage
from faststream.nats import ConsumerConfig, JStream, PullSub
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from pyfaas_common import bus, migrate
from pyfaas_common.consumers import make_broker
from pyfaas_common.db import FunctionRow, make_engine
from pyfaas_common.logs import SECRETS, function_context, setup_logging
from pyfaas_common.messages import (
    REDACTED,
    Command,
    CreateFunction,
    Desired,
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
    State,
    StateChanged,
)
from pyfaas_common.streams import ensure_streams
from pyfaas_common.subjects import Subjects

from .reconcile import Reconciler
from .runtime import Runtime, make_runtime
from .settings import DeployerSettings
from .store import CommandTooEarly, FunctionStore

log = logging.getLogger(__name__)

_commands: TypeAdapter[Any] = TypeAdapter(Command)


@dataclass
class Deployer:
    """The resources the handlers share, opened in :meth:`start`, closed in :meth:`stop`."""

    settings: DeployerSettings
    subjects: Subjects = field(init=False)
    nc: Client = field(init=False)
    store: FunctionStore = field(init=False)
    runtime: Runtime = field(init=False)
    reconciler: Reconciler = field(init=False)
    _loop_task: asyncio.Task[None] | None = None
    _follows: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.settings.nats_prefix)

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = self.settings.resolved_database_url
        # Room for the reconciles' function locks (a connection each, see store.py) beside
        # their own queries, the commands and the reads.
        engine = make_engine(url, **({} if url.startswith("sqlite") else {"pool_size": 20}))
        await migrate.upgrade(engine)
        self.store = FunctionStore(engine, self.settings)
        self.nc = await bus.wait_for_nats(self.settings.nats_url, "pyfaas-deployer")
        await ensure_streams(self.nc.jetstream(), self.subjects)
        self.runtime = make_runtime(self.settings, self._on_exit)
        self.reconciler = Reconciler(self.store, self.runtime, self.publish_state, self.settings)

    async def begin_reconciling(self) -> None:
        await self.runtime.start()
        self._loop_task = asyncio.create_task(self.reconciler.run_periodically())

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for follow in list(self._follows):
            follow.cancel()  # each tells its reader the deployer is stopping
        await asyncio.gather(*self._follows, return_exceptions=True)
        await self.reconciler.close()
        await self.runtime.close()
        await self.nc.drain()
        await self.store.engine.dispose()

    async def _on_exit(self, function_id: UUID, reason: str) -> None:
        await self.reconciler.on_exit(function_id, reason)

    async def publish_state(self, row: FunctionRow) -> None:
        """Tell the gateway (and anyone else) what changed. Losing one is survivable: the
        gateway also reads the database on a miss and on an upstream failure."""
        event = StateChanged(function=self.store.view(row))
        try:
            await self.nc.jetstream().publish(
                self.subjects.event(row.id, row.state), bus.encode(event), timeout=2.0
            )
        except Exception as exc:
            log.warning("could not publish state event", extra={"error": repr(exc)})

    # --- commands --------------------------------------------------------------------
    async def handle_command(self, msg: NatsMessage) -> None:
        meta = msg.raw_message.metadata
        try:
            command = _commands.validate_json(msg.body)
        except ValidationError as exc:
            # It will never parse: do not redeliver it.
            log.error("refusing a command that does not parse", extra={"error": str(exc)})
            raise RejectMessage() from exc
        with function_context(command.function_id):
            try:
                applied = await self.store.apply(command, meta.sequence.stream)
            except Exception as exc:
                delivered = meta.num_delivered
                if database_unreachable(exc):
                    # Not the command's fault: hold it for as long as the database is away
                    # (the consumer's max_deliver is unlimited for this reason), at most
                    # every 30 s, and never count it towards giving up.
                    delay = min(0.5 * 2 ** min(delivered - 1, 6), 30.0)
                    log.warning("database unreachable; command held, retrying in %gs: %s",
                                delay, describe_failure(exc))  # fmt: skip
                    raise NackMessage(delay=delay) from exc
                if delivered >= self.settings.command_max_deliver:
                    reason = (
                        f"the {command.kind} command failed {delivered} times and was given "
                        f"up: {describe_failure(exc)}"
                    )
                    log.error(reason)
                    try:
                        row = await self.store.give_up(command, reason)
                    except Exception as give_up_exc:
                        log.error(
                            "could not record the failure", extra={"error": repr(give_up_exc)}
                        )
                    else:
                        if row is not None:
                            await self.publish_state(row)
                    raise RejectMessage() from exc
                delay = min(0.5 * 2 ** (delivered - 1), 30.0)
                level = logging.INFO if isinstance(exc, CommandTooEarly) else logging.WARNING
                log.log(level, "command not applied yet; retrying in %gs: %s", delay,
                        describe_failure(exc))  # fmt: skip
                raise NackMessage(delay=delay) from exc
            if applied.changed and applied.row is not None:
                log.info("applied %s command", command.kind, extra={"seq": meta.sequence.stream})
                await self.publish_state(applied.row)
            if applied.row is not None:
                self.reconciler.schedule(command.function_id)

    # --- reads -----------------------------------------------------------------------
    async def handle_get(self, query: GetQuery) -> bytes:
        row = await self.store.get(query.id)
        if row is not None and (row.state != State.DELETED or query.include_deleted):
            return _reply(GetReply(function=self.store.view(row)))
        if row is None:
            pending = await self._pending_create(query.id)
            if pending is not None:
                return _reply(GetReply(function=pending))
        return _reply(GetReply(error=QueryError(
            status=404, title="Not found", detail=f"no function with id {query.id}")))  # fmt: skip

    async def _pending_create(self, function_id: UUID) -> FunctionView | None:
        """A create accepted by JetStream but not applied yet still answers a read (as
        ``pending``), so a GET right after the API's 202 never says 404."""
        try:
            msg = await self.nc.jetstream().get_last_msg(
                self.subjects.command_stream, self.subjects.command("create", function_id)
            )
        except NotFoundError:
            return None
        if msg.data is None:
            return None
        try:
            create = CreateFunction.model_validate_json(msg.data)
        except ValidationError:
            return None
        return FunctionView(
            id=create.function_id, user=create.owner, name=create.name, state=State.PENDING,
            desired=Desired.RUNNING, url=self.settings.function_url(create.function_id),
            generation=1, observed_generation=0, runtime=create.runtime, env=create.env,
            secrets=dict.fromkeys(create.secrets, REDACTED), visibility=create.visibility,
            invoke_key_hash=create.invoke_key_hash, request_digest=create.request_digest,
            idle_timeout=create.idle_timeout, delete_after=create.delete_after,
            created_at=create.issued_at,
            updated_at=create.issued_at,
        )  # fmt: skip

    async def handle_list(self, query: ListQuery) -> bytes:
        rows = await self.store.list_for(query.user)
        return _reply(ListReply(functions=[self.store.view(r) for r in rows]))

    async def handle_logs(self, query: LogsQuery) -> bytes:
        row = await self.store.get(query.id)
        if row is None or row.state == State.DELETED:
            return _reply(LogsReply(error=QueryError(
                status=404, title="Not found", detail=f"no function with id {query.id}")))  # fmt: skip
        SECRETS.set(row.id, row.secrets.values())
        lines = await self.runtime.logs(query.id, query.tail)
        # A function may print its own secrets; its log, as pyfaas shows it, does not.
        return _reply(LogsReply(lines=[SECRETS.redact(line) for line in lines]))

    async def handle_logs_follow(self, query: LogsFollowQuery) -> bytes:
        """Start streaming a function's log lines to the API (see ``LogsFollowQuery``);
        the answer only says whether the follow started."""
        if not await self._exists(query.id):
            return _reply(LogsFollowReply(error=QueryError(
                status=404, title="Not found", detail=f"no function with id {query.id}")))  # fmt: skip
        heard = asyncio.Event()
        stop = asyncio.Event()

        async def on_control(msg: Msg) -> None:
            heard.set()
            with contextlib.suppress(ValidationError):
                if LogsFollowControl.model_validate_json(msg.data).stop:
                    stop.set()

        # Subscribed before answering, so that a reader that leaves at once is heard.
        control = await self.nc.subscribe(self.subjects.logs_control(query.stream), cb=on_control)
        task = asyncio.create_task(self._follow(query, control, heard, stop))
        self._follows.add(task)
        task.add_done_callback(self._follows.discard)
        return _reply(LogsFollowReply())

    async def _exists(self, function_id: UUID) -> bool:
        row = await self.store.get(function_id)
        if row is not None:
            SECRETS.set(row.id, (row.secrets or {}).values())  # for the follow's redaction
            return row.state != State.DELETED
        return await self._pending_create(function_id) is not None

    async def _follow(
        self,
        query: LogsFollowQuery,
        control: Subscription,
        heard: asyncio.Event,
        stop: asyncio.Event,
    ) -> None:
        subject = self.subjects.logs_lines(query.stream)
        seq = 0

        async def send(lines: list[str], end: bool = False, reason: str = "") -> None:
            nonlocal seq
            lines = [SECRETS.redact(line) for line in lines] if SECRETS else lines
            for batch in _batches(lines) if lines else [[]]:
                seq += 1
                chunk = LogsChunk(seq=seq, lines=batch, end=end, reason=reason)
                await self.nc.publish(subject, bus.encode(chunk))

        lines_of = self.runtime.follow_logs(query.id, query.tail)
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        next_lines: asyncio.Task[list[str]] = asyncio.create_task(_next(lines_of))
        stopped = asyncio.create_task(stop.wait())
        try:
            with function_context(query.id):
                log.info("following logs", extra={"stream": str(query.stream)})
            while True:
                await asyncio.wait(
                    {next_lines, stopped},
                    timeout=query.heartbeat,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop.is_set():
                    return
                if heard.is_set():
                    heard.clear()
                    last_heard = loop.time()
                elif loop.time() - last_heard > 3 * query.heartbeat:
                    return  # the reader went away without a word
                if next_lines.done():
                    try:
                        lines = next_lines.result()
                    except StopAsyncIteration:
                        await send([], end=True, reason="the function was deleted")
                        return
                    next_lines = asyncio.create_task(_next(lines_of))
                    if lines:
                        await send(lines)
                        continue
                if not await self._exists(query.id):
                    await send([], end=True, reason="the function was deleted")
                    return
                await send([])  # a heartbeat: the reader knows we are still here
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await send([], end=True, reason="the deployer is stopping; follow again")
            raise
        except Exception as exc:
            log.exception("log follow failed")
            with contextlib.suppress(Exception):
                await send([], end=True, reason=f"reading the logs failed: {exc}")
        finally:
            for task in (next_lines, stopped):
                task.cancel()
            await asyncio.gather(next_lines, stopped, return_exceptions=True)
            with contextlib.suppress(Exception):
                await lines_of.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await control.unsubscribe()


async def _next(lines: AsyncIterator[list[str]]) -> list[str]:
    return await anext(lines)


MAX_CHUNK_BYTES = 256 * 1024
"""Well under NATS' default max_payload (1 MiB), with room for JSON escaping."""


def _batches(lines: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for line in lines:
        line = line[: MAX_CHUNK_BYTES // 2]  # one enormous line is cut, not dropped
        if batch and size + len(line) > MAX_CHUNK_BYTES // 2:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch


def database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached (or dropped the connection): a condition of the
    platform, not of the command, which must wait it out rather than be given up."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return isinstance(cause, OSError | ConnectionError | TimeoutError) or type(
            cause
        ).__name__ in (
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "TooManyConnectionsError",
        )
    return False


def describe_failure(exc: BaseException, limit: int = 500) -> str:
    """What went wrong, short enough for a reason and a log line. A database error says
    what the database said, not the statement and its parameters: those hold the whole
    script and the secrets, and may hold the very bytes that made it fail (a NUL)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        driver_error = exc.orig.__cause__ or exc.orig  # asyncpg's, under SQLAlchemy's adapter
        text = f"{type(driver_error).__name__}: {exc.orig}"
    else:
        text = str(exc) or type(exc).__name__
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reply(message: Any) -> bytes:
    return bytes(message.model_dump_json().encode())


async def _answer(reply_type: Any, read: Awaitable[bytes]) -> bytes:
    """A read the database cannot serve right now is answered at once with a 503, so the
    API says so at once too, instead of waiting out its query timeout for a reply that
    never comes (and a create's quota check does not stall while Postgres is away)."""
    try:
        return await read
    except (SQLAlchemyError, OSError) as exc:
        log.warning("cannot answer a read: the database is unavailable", extra={"error": repr(exc)})
        return _reply(reply_type(error=QueryError(
            status=503, title="Service unavailable",
            detail="the database is not answering; retry in a moment")))  # fmt: skip


def build_app(settings: DeployerSettings | None = None) -> FastStream:
    settings = settings or DeployerSettings()
    subjects = Subjects(settings.nats_prefix)
    deployer = Deployer(settings)
    broker = make_broker(settings.nats_url)

    @broker.subscriber(
        subjects.all_commands,
        stream=JStream(subjects.command_stream, declare=False),
        durable=subjects.deployer_durable,
        pull_sub=PullSub(batch_size=16, timeout=1.0),
        # Unlimited at the server: the handler gives up a command that fails by itself after
        # PYFAAS_COMMAND_MAX_DELIVER deliveries, but holds one that waits for the database.
        # ack_wait: applying a command is one short transaction (the reconcile runs after
        # the ack), so 10 s is ample; it is also how long the commands a killed deployer
        # had taken wait before they are delivered again.
        config=ConsumerConfig(max_deliver=-1, ack_wait=10),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="commands",
        description="create, update, delete, sleep and wake commands for one function",
    )
    async def on_command(command: Command, msg: NatsMessage) -> None:
        await deployer.handle_command(msg)

    # The typed parameters validate the bodies (one that does not is rejected by the
    # broker's middleware) and document them (AsyncAPI); the handlers answer with the
    # reply models, serialised as bytes.
    @broker.subscriber(subjects.query("get"), queue="deployer", title="get")
    async def on_get(query: GetQuery) -> bytes:
        return await _answer(GetReply, deployer.handle_get(query))

    @broker.subscriber(subjects.query("list"), queue="deployer", title="list")
    async def on_list(query: ListQuery) -> bytes:
        return await _answer(ListReply, deployer.handle_list(query))

    @broker.subscriber(subjects.query("logs"), queue="deployer", title="logs")
    async def on_logs(query: LogsQuery) -> bytes:
        return await _answer(LogsReply, deployer.handle_logs(query))

    @broker.subscriber(subjects.query("logs_follow"), queue="deployer", title="logs_follow")
    async def on_logs_follow(query: LogsFollowQuery) -> bytes:
        return await _answer(LogsFollowReply, deployer.handle_logs_follow(query))

    # Declared for the event contract (docs/asyncapi/): the deployer publishes these with
    # nats-py directly, one subject per function and state.
    broker.publisher(
        subjects.event("{function_id}", "{state}"),
        schema=StateChanged,
        title="state events",
        description="The function as it is now, after every change a user can see.",
    )

    return FastStream(
        broker,
        on_startup=[deployer.start],
        after_startup=[deployer.begin_reconciling],
        on_shutdown=[deployer.stop],
    )


def main() -> None:
    settings = DeployerSettings()
    setup_logging("deployer", settings.log_level)
    asyncio.run(build_app(settings).run(log_level=logging.WARNING))
