"""The API's settings (``PYFAAS_*``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from pyfaas_common.auth import AuthSettings
from pyfaas_common.settings import (
    HttpServerSettings,
    IdlePolicyDefaults,
    PlatformSettings,
    RuntimeName,
)
from pyfaas_common.validation import MAX_ENV_BYTES, MAX_SCRIPT_BYTES, default_python_versions


class ApiSettings(PlatformSettings, HttpServerSettings, IdlePolicyDefaults, AuthSettings):
    api_host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` in a container."""

    api_port: int = 8000

    runtime: RuntimeName = "local"
    """Recorded on each function so that the deployer knows where it runs."""

    query_timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for the deployer's answer to a read before answering 503."""

    python_versions: list[str] = Field(default_factory=default_python_versions)
    """Python versions a script's ``requires-python`` may ask for; keep equal to the
    deployer's."""

    logs_heartbeat: float = Field(default=5.0, gt=0, le=60)
    """Seconds between keepalives of a log follow (``?follow=true``), both to the client
    (an SSE comment) and between the API and the deployer; three missed ones end it."""

    max_request_bytes: int = 4 * 1024 * 1024
    """A 512 KiB script can grow a lot when JSON-escaped; the script limit is checked after."""

    # --- quotas, per user (the function's owner) -----------------------------------------
    max_functions_per_user: int = Field(default=20, ge=0)
    """Functions a user may have (deleted ones do not count); 0: no limit. Twenty small
    functions of a few users fit a small cluster; raise it for bigger ones."""

    max_creates_per_minute: int = Field(default=10, ge=0)
    """Creates a user may make in any 60 seconds, per API process; 0: no limit. Each
    create installs dependencies and starts a process or a pod: this bounds the churn one
    user can cause. Over it: 429 with Retry-After."""

    max_script_bytes: int = Field(default=MAX_SCRIPT_BYTES, gt=0, le=MAX_SCRIPT_BYTES)
    """Largest script, inline or fetched (the hard ceiling, 512 KiB, keeps it in a
    ConfigMap)."""

    max_env_bytes: int = Field(default=MAX_ENV_BYTES, gt=0, le=MAX_ENV_BYTES)
    """Largest environment: names and values of env and secrets together."""

    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds a request body may take to arrive before 408: a client trickling its body
    a byte at a time is cut off."""

    # --- code from a URL (POST with source: {url}) -------------------------------------
    fetch_allow_http: bool = False
    """Allow plain http:// sources (https only by default)."""

    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts (comma-separated) the operator trusts: their addresses are not checked, so
    internal sources (a private Git server, 127.0.0.1 in tests) can be fetched from."""

    fetch_timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds a fetch may take in total, redirects included."""

    @field_validator("fetch_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value
