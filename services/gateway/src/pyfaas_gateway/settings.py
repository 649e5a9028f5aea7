"""The gateway's settings (``PYFAAS_*``), read once per process by :func:`app.main`.

Every limit has a default that suits one machine and a function that streams: nothing
cuts a long-lived stream unless the operator asks for it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from pyfaas_common.auth import AuthSettings
from pyfaas_common.settings import HttpServerSettings, PlatformSettings


class GatewaySettings(PlatformSettings, HttpServerSettings, AuthSettings):
    gateway_host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` in a container."""

    gateway_port: int = 8080

    wake_timeout: float = Field(default=60.0, gt=0)
    """Seconds a request waits for a sleeping function to wake before 503 + Retry-After."""

    wake_max_waiting: int = Field(default=1000, ge=1)
    """Requests that may wait for one function to wake; more answer 503 at once."""

    gateway_workers: int = Field(default=1, ge=1, le=256)
    """Worker processes sharing the port (SO_REUSEPORT). One per core in production; one
    keeps ``make dev`` light."""

    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to connect to a function before answering 502."""

    upstream_first_byte_timeout: float = Field(default=300.0, gt=0)
    """Seconds from the end of the request to the function's response headers before
    answering 504. Generous: functions that think for minutes are legitimate."""

    stream_idle_timeout: float = Field(default=900.0, ge=0)
    """Seconds without a byte in either direction of a body (or a WebSocket) before the
    gateway gives up on it; 0 means never. An SSE stream that sends keep-alive comments
    more often than this lives for ever."""

    max_duration: float = Field(default=0.0, ge=0)
    """Seconds an exchange may last in total; 0 (the default) means no total limit, so
    long-lived streams are not cut."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest request body (and WebSocket message) forwarded to a function; above it 413."""

    blocked_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["X-Pyfaas-*", "Forwarded", "X-Real-IP"]
    )
    """Request headers never forwarded to a function (comma-separated; a trailing ``*``
    matches a prefix): the platform's own headers, and client-made forwarding headers that
    would contradict the ``X-Forwarded-*`` the gateway sets."""

    trust_forwarded: bool = False
    """Keep the client's ``X-Forwarded-Proto``/``-Host`` (set it behind a trusted load
    balancer); otherwise the gateway states what it saw itself."""

    upstream_keepalive_seconds: float = Field(default=30.0, gt=0)
    """How long an idle keep-alive connection to a function is kept for reuse."""

    upstream_max_idle_per_function: int = Field(default=64, ge=0)
    """Idle keep-alive connections kept per function; more are closed when released."""

    negative_cache_seconds: float = Field(default=2.0, ge=0)
    """How long an unknown id is remembered as unknown (a flood of random ids must not
    become a flood of database queries)."""

    route_miss_queries_per_second: float = Field(default=50.0, gt=0)
    """Database reads a second allowed for ids the route table does not know; beyond it
    they answer 404 at once (the table holds every live function, so they are unknown)."""

    access_interval: float = Field(default=2.0, gt=0)
    """Seconds over which access records are aggregated per function before publishing."""

    readiness_timeout: float = Field(default=2.0, gt=0)
    """Seconds ``/readyz`` waits for the database before calling it unreachable."""

    @field_validator("blocked_headers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
