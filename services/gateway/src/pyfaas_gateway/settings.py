"""The gateway's settings (``PYFAAS_*``)."""

from __future__ import annotations

from pydantic import Field

from pyfaas_common.settings import PlatformSettings


class GatewaySettings(PlatformSettings):
    gateway_host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` in a container."""

    gateway_port: int = 8080

    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to connect to a function before answering 502."""

    upstream_first_byte_timeout: float = Field(default=300.0, gt=0)
    """Seconds to wait for a function's response headers before answering 504."""

    negative_cache_seconds: float = Field(default=2.0, ge=0)
    """How long an unknown id is remembered as unknown (a flood of random ids must not
    become a flood of database queries)."""

    access_interval: float = Field(default=2.0, gt=0)
    """Seconds over which access records are aggregated per function before publishing."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest request body forwarded to a function."""
