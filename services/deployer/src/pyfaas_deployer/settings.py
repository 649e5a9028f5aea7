"""The deployer's settings (``PYFAAS_*``), on top of what every service shares."""

from __future__ import annotations

from typing import Literal

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

    local_drain_seconds: float = Field(default=2.0, ge=0)
    """Local runtime, on an update: how long the previous generation keeps running after
    the gateway was switched to the new one, for the requests it is still answering."""

    # --- the kubernetes runtime (PYFAAS_KUBERNETES_*), read only when runtime=kubernetes ---
    # runtime/kubernetes.py applies what runtime/manifests.py builds from these; `make
    # render` prints it. Quantities are Kubernetes quantities ("250m", "512Mi").

    kubernetes_namespace: str = "pyfaas-functions"
    """Namespace of every function's objects; k8s/ labels it Pod Security "restricted" and
    fences it with NetworkPolicies, so keep it dedicated to functions."""

    kubernetes_image: str = "ghcr.io/astral-sh/uv:python3.12-bookworm-slim"
    """Image that runs ``uv run --script``: it needs ``uv`` on PATH and, ideally, a Python
    matching ``PYFAAS_PYTHON_VERSIONS`` (otherwise uv downloads one at every start)."""

    kubernetes_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    kubernetes_cluster_domain: str = "cluster.local"
    """The cluster's DNS domain; a function's endpoint is
    ``http://fn-{id}.{namespace}.svc.{cluster_domain}:80``."""

    kubernetes_cpu_request: str = "100m"
    kubernetes_memory_request: str = "128Mi"
    kubernetes_cpu_limit: str = "1"
    """Default CPU limit; a script may ask for another with ``[tool.pyfaas] cpu = "2"`` in
    its PEP 723 block, up to ``kubernetes_cpu_max``."""

    kubernetes_memory_limit: str = "512Mi"
    """Default memory limit; a script may ask for another with ``[tool.pyfaas] memory``,
    up to ``kubernetes_memory_max``."""

    kubernetes_cpu_max: str = "2"
    kubernetes_memory_max: str = "2Gi"

    kubernetes_cache_size: str = "2Gi"
    """Size limit of the emptyDir holding uv's cache (the script's virtual environment and,
    if the image lacks the Python asked for, the interpreter). The root fs is read-only."""

    kubernetes_runtime_class: str = ""
    """``runtimeClassName`` of function pods, e.g. ``gvisor`` for a sandbox; empty: none."""

    kubernetes_in_cluster: bool | None = None
    """Use the pod's service account (True) or a kubeconfig (False); None picks in-cluster
    when ``KUBERNETES_SERVICE_HOST`` is set."""

    kubernetes_kubeconfig: str = ""
    """Path of the kubeconfig when not in-cluster; empty means ``$KUBECONFIG`` or
    ``~/.kube/config``."""

    kubernetes_context: str = ""
    """Kubeconfig context; empty means the current one."""

    kubernetes_poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between looks at a rolling-out Deployment and its pods while ``apply``
    waits for it to become available or to fail."""

    kubernetes_request_timeout: float = Field(default=30.0, gt=0)
    """Seconds one call to the Kubernetes API may take before it counts as failed."""
