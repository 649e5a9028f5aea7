"""The reaper process: consumes the gateway's access records into ``function_access``
(``last_access_at``, call counts, in-flight requests, open streams) and, every
``PYFAAS_SWEEP_INTERVAL``, asks the deployer to put idle functions to sleep and to delete
the ones asleep for too long (``sweep.py``).
"""

from __future__ import annotations

import asyncio
import logging

from faststream import AckPolicy, FastStream
from faststream.exceptions import NackMessage, RejectMessage
from faststream.nats import ConsumerConfig, JStream, PullSub
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common import bus, migrate
from pyfaas_common.consumers import make_broker
from pyfaas_common.db import make_engine
from pyfaas_common.logs import function_context, setup_logging
from pyfaas_common.messages import AccessRecord, CommandBase, utcnow
from pyfaas_common.streams import ensure_streams
from pyfaas_common.subjects import Subjects

from .access import record_access
from .settings import ReaperSettings
from .sweep import sweep

log = logging.getLogger(__name__)


def build_app(settings: ReaperSettings | None = None) -> FastStream:
    settings = settings or ReaperSettings()
    subjects = Subjects(settings.nats_prefix)
    broker = make_broker(settings.nats_url)
    engines: list[AsyncEngine] = []
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        engine = make_engine(settings.resolved_database_url)
        await migrate.wait_for_schema(engine)
        engines.append(engine)
        nc = await bus.wait_for_nats(settings.nats_url, "pyfaas-reaper")
        await ensure_streams(nc.jetstream(), subjects)
        await nc.close()

    async def sweep_forever() -> None:
        nc = await bus.wait_for_nats(settings.nats_url, "pyfaas-reaper-sweep")
        try:
            while True:
                await asyncio.sleep(settings.sweep_interval)
                try:
                    await sweep_once(nc)
                except Exception:
                    log.exception("sweep failed; trying again next interval")
        finally:
            await nc.drain()

    async def sweep_once(nc: Client) -> None:
        async def publish(command: CommandBase) -> None:
            await bus.publish_command(nc, subjects, command)

        decisions = await sweep(engines[0], settings, utcnow(), publish)
        for decision in decisions or []:
            with function_context(decision.command.function_id):
                log.info(
                    "asked to %s the function: %s",
                    decision.command.kind,
                    decision.why,
                )

    async def begin_sweeping() -> None:
        tasks.append(asyncio.create_task(sweep_forever()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines:
            await engine.dispose()

    @broker.subscriber(
        subjects.all_access,
        stream=JStream(subjects.access_stream, declare=False),
        durable=subjects.reaper_durable,
        pull_sub=PullSub(batch_size=64, timeout=1.0),
        config=ConsumerConfig(max_deliver=20, ack_wait=30),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="access records",
        description="what the gateway saw of each function, per interval",
    )
    async def on_access(body: AccessRecord, msg: NatsMessage) -> None:
        try:
            record = AccessRecord.model_validate_json(msg.body)
        except ValidationError as exc:
            log.error("refusing an access record that does not parse", extra={"error": str(exc)})
            raise RejectMessage() from exc
        meta = msg.raw_message.metadata
        try:
            await record_access(engines[0], record, meta.sequence.stream)
        except Exception as exc:
            delay = min(0.5 * 2 ** (meta.num_delivered - 1), 30.0)
            log.warning(
                "could not record access; retrying in %gs", delay, extra={"error": repr(exc)}
            )
            raise NackMessage(delay=delay) from exc

    return FastStream(
        broker, on_startup=[start], after_startup=[begin_sweeping], on_shutdown=[stop]
    )


def main() -> None:
    settings = ReaperSettings()
    setup_logging("reaper", settings.log_level)
    asyncio.run(build_app(settings).run(log_level=logging.WARNING))
