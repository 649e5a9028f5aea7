"""The reaper's settings (``PYFAAS_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pyfaas_common.settings import IdlePolicyDefaults, PlatformSettings


class ReaperSettings(PlatformSettings, IdlePolicyDefaults):
    idle_action: Literal["sleep", "delete"] = "sleep"
    """What happens to an idle function: ``sleep`` (scale to zero, woken by the next
    request) or ``delete`` (the design notes' original behaviour)."""

    sweep_interval: float = Field(default=10.0, gt=0)
    """Seconds between sweeps for idle and stale functions."""

    access_stale_after: float = Field(default=60.0, gt=0)
    """An in-flight count or open stream older than this is not believed (its gateway
    may have died with it): the function can go idle."""
