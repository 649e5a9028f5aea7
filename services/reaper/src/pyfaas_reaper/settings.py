"""The reaper's settings (``PYFAAS_*``)."""

from __future__ import annotations

from pyfaas_common.settings import IdlePolicyDefaults, PlatformSettings


class ReaperSettings(PlatformSettings, IdlePolicyDefaults):
    pass
