"""The API's settings (``PYFAAS_*``)."""

from __future__ import annotations

from pydantic import Field

from pyfaas_common.settings import IdlePolicyDefaults, PlatformSettings, RuntimeName
from pyfaas_common.validation import default_python_versions


class ApiSettings(PlatformSettings, IdlePolicyDefaults):
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
