"""The deployer's settings (``PYFAAS_*``), on top of what every service shares."""

from __future__ import annotations

from pydantic import Field

from pyfaas_common.settings import PlatformSettings, RuntimeName
from pyfaas_common.validation import default_python_versions


class DeployerSettings(PlatformSettings):
    runtime: RuntimeName = "local"
    """``local``: each function a child process (no cluster). ``kubernetes``: production."""

    start_timeout: float = Field(default=180.0, gt=0)
    """Seconds a function may take from start to accepting connections, dependency
    install included, before it is marked failed."""

    reconcile_interval: float = Field(default=30.0, gt=0)
    """Seconds between full reconciles, which repair what a crash left behind."""

    command_max_deliver: int = Field(default=10, ge=1)
    """Deliveries of one command before it is given up (the function is marked failed)."""

    python_versions: list[str] = Field(default_factory=default_python_versions)
    """Python versions a script's ``requires-python`` may ask for (the API checks too)."""

    local_stop_on_shutdown: bool = True
    """On a clean stop (SIGTERM) stop the local runtime's function processes too.
    After a crash (SIGKILL) they keep running, and the next deployer adopts them."""

    restart_backoff_max: float = Field(default=60.0, gt=0)
    """Longest wait between restarts of a function that keeps exiting."""
