"""Structured logging: one JSON object per line on stderr, with the service name and,
where there is one, the function id (bound with :func:`function_context`)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

_function_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pyfaas_function_id", default=None
)


@contextlib.contextmanager
def function_context(function_id: object) -> Iterator[None]:
    token = _function_id.set(str(function_id))
    try:
        yield
    finally:
        _function_id.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        fid = _function_id.get()
        if fid is not None and not hasattr(record, "function_id"):
            record.function_id = fid
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(service))
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log each request or message at INFO drown what matters.
    for noisy in ("aiohttp.access", "faststream.access", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
