"""Runtimes: where functions actually run. One interface, chosen by ``PYFAAS_RUNTIME``."""

from __future__ import annotations

from ..settings import DeployerSettings
from .base import ExitCallback, FunctionSpec, Observation, Runtime


def make_runtime(settings: DeployerSettings, on_exit: ExitCallback) -> Runtime:
    if settings.runtime == "local":
        from .local import LocalRuntime

        return LocalRuntime(settings, on_exit)
    from .kubernetes import KubernetesRuntime

    return KubernetesRuntime(settings, on_exit)


__all__ = ["ExitCallback", "FunctionSpec", "Observation", "Runtime", "make_runtime"]
