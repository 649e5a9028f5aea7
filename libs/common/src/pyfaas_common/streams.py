"""Idempotent set-up of the JetStream streams pyfaas uses.

Every service calls :func:`ensure_streams` at start-up: the first one to start creates the
streams, the others find them in place (or bring their configuration up to date).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .subjects import Subjects

log = logging.getLogger(__name__)

DAY = 24 * 3600.0


def stream_configs(subjects: Subjects) -> list[StreamConfig]:
    return [
        # Commands are kept (not a work queue) so that a read can see a create that the
        # deployer has not processed yet, and so that an operator can replay them.
        StreamConfig(
            name=subjects.command_stream,
            subjects=[subjects.all_commands],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            duplicate_window=120.0,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.event_stream,
            subjects=[subjects.all_events],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=3600.0,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.access_stream,
            subjects=[subjects.all_access],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=DAY,
            discard=DiscardPolicy.OLD,
        ),
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects) -> None:
    for config in stream_configs(subjects):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream", extra={"stream": config.name})
        else:
            await js.update_stream(config)
