"""Structured logging: one JSON object per line on stderr, with the service name and,
where there is one, the function id (bound with :func:`function_context`).

Secrets never reach a log line: the deployer registers every function's secret values
with :data:`SECRETS` as it reads them, and every record is passed through
:meth:`Redactor.redact` on its way out (message and extra fields), so even a reason that
quotes a function's own output cannot print one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterable, Iterator

from pythonjsonlogger.json import JsonFormatter

from .messages import REDACTED

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


MIN_REDACTED_LENGTH = 4
"""Shorter secret values are not searched for: replacing every "1" or "ab" in every log
line would make the logs unreadable and hide nothing worth hiding."""


class Redactor:
    """The secret values this process knows, per function, and their replacement."""

    def __init__(self) -> None:
        self._by_function: dict[str, frozenset[str]] = {}
        self._values: tuple[str, ...] = ()

    def set(self, function_id: object, values: Iterable[str]) -> None:
        kept = frozenset(v for v in values if len(v) >= MIN_REDACTED_LENGTH)
        key = str(function_id)
        if self._by_function.get(key, frozenset()) == kept:
            return
        if kept:
            self._by_function[key] = kept
        else:
            self._by_function.pop(key, None)
        # Longest first, so that a secret containing another is replaced whole.
        self._values = tuple(
            sorted({v for vs in self._by_function.values() for v in vs}, key=len, reverse=True)
        )

    def forget(self, function_id: object) -> None:
        self.set(function_id, ())

    def redact(self, text: str, values: Iterable[str] | None = None) -> str:
        """``text`` with every known secret value (or only ``values``) replaced."""
        candidates = self._values if values is None else sorted(values, key=len, reverse=True)
        for value in candidates:
            if len(value) >= MIN_REDACTED_LENGTH and value in text:
                text = text.replace(value, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


SECRETS = Redactor()
"""The process's redactor: the deployer fills it; every log record goes through it."""

_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _redact_record(record: logging.LogRecord) -> None:
    if record.args:
        record.msg = record.getMessage()
        record.args = None
    if isinstance(record.msg, str):
        record.msg = SECRETS.redact(record.msg)
    for name, value in list(record.__dict__.items()):
        if name not in _RECORD_FIELDS and isinstance(value, str):
            setattr(record, name, SECRETS.redact(value))
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        # The formatter prints exc_text when exc_info is gone: the redacted text, then.
        record.exc_text = SECRETS.redact(record.exc_text)
        record.exc_info = None


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        fid = _function_id.get()
        if fid is not None and not hasattr(record, "function_id"):
            record.function_id = fid
        if SECRETS:
            _redact_record(record)
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
