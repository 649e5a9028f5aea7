"""The Kubernetes objects of one function, as plain dicts: pure, no I/O.

Called by the kubernetes runtime (``kubernetes.py``) before every server-side apply, by
``python -m pyfaas_deployer.render`` (``make render``) to show operators what pyfaas will
do to their cluster, and by the unit tests that validate and audit the objects. One builder
for all three, so what is tested and shown is what is applied.

Every field comes from an allowlist pyfaas owns: the user contributes the script (a
ConfigMap key), the environment (a Secret, so that read access to Deployments does not
reveal it) and, through ``[tool.pyfaas]`` in the script's PEP 723 block, the CPU and memory
limits within the operator's maxima. Nothing of a user's pod spec is ever passed through.
"""

from __future__ import annotations

import base64
import math
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from ..settings import DeployerSettings
from .base import FunctionSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "pyfaas"
FUNCTION_ID = "pyfaas.dev/function-id"
OWNER = "pyfaas.dev/owner"
DIGEST = "pyfaas.dev/digest"

CONTAINER = "function"
CONTAINER_PORT = 8080
SERVICE_PORT = 80
RUN_AS = 10001
"""An unprivileged uid/gid no image is likely to give a meaning to."""

SCRIPT_DIR = "/app"
CACHE_DIR = "/cache"

Manifest = dict[str, Any]

# PEP 723's reference regular expression (the same the API validates with).
_BLOCK_RE = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class FunctionConfigError(ValueError):
    """What a script asks of the cluster cannot be granted; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


def object_name(function_id: object) -> str:
    """One name for all of a function's objects: a DNS-1035 label (it starts with a letter,
    as Service names must), 39 characters."""
    return f"fn-{function_id}"


def endpoint(function_id: object, settings: DeployerSettings) -> str:
    return (
        f"http://{object_name(function_id)}.{settings.kubernetes_namespace}.svc."
        f"{settings.kubernetes_cluster_domain}:{SERVICE_PORT}"
    )


def selector(function_id: object) -> dict[str, str]:
    """The labels that pick a function's pods (and, as a selector string, all its objects)."""
    return {MANAGED_BY: MANAGER, FUNCTION_ID: str(function_id)}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def labels(spec: FunctionSpec) -> dict[str, str]:
    result = {
        **selector(spec.id),
        "app.kubernetes.io/name": "pyfaas-function",
        "app.kubernetes.io/component": "function",
    }
    # Owners are DNS labels (the API checks), so always valid label values; the guard keeps
    # an odd owner from making every object of the function unappliable.
    if _LABEL_VALUE_RE.match(spec.owner) and len(spec.owner) <= 63:
        result[OWNER] = spec.owner
    return result


def _metadata(spec: FunctionSpec, settings: DeployerSettings) -> Manifest:
    return {
        "name": object_name(spec.id),
        "namespace": settings.kubernetes_namespace,
        "labels": labels(spec),
        "annotations": {OWNER: spec.owner, "pyfaas.dev/name": spec.name},
    }


def _tool_table(code: str) -> dict[str, Any]:
    """``[tool.pyfaas]`` of the script's PEP 723 block ({} when absent). The API has
    already refused scripts whose block is not valid TOML."""
    for match in _BLOCK_RE.finditer(code):
        if match.group("type") != "script":
            continue
        toml = "".join(
            line[2:] if line.startswith("# ") else line[1:]
            for line in match.group("content").splitlines(keepends=True)
        )
        try:
            meta = tomllib.loads(toml)
        except tomllib.TOMLDecodeError:
            return {}
        table = meta.get("tool", {}).get("pyfaas", {})
        return table if isinstance(table, dict) else {}
    return {}


def _quantity(value: object, what: str) -> Decimal:
    try:
        return Decimal(parse_quantity(str(value)))
    except (ValueError, TypeError) as exc:
        raise FunctionConfigError(
            f'{what} {value!r} is not a Kubernetes quantity; write e.g. "500m" or "1Gi"'
        ) from exc


def resources(spec: FunctionSpec, settings: DeployerSettings) -> Resources:
    """The operator's defaults, or what the script asks for within the operator's maxima."""
    table = _tool_table(spec.code)
    limits: dict[str, str] = {}
    for key, default, maximum, setting in (
        ("cpu", settings.kubernetes_cpu_limit, settings.kubernetes_cpu_max, "CPU"),
        ("memory", settings.kubernetes_memory_limit, settings.kubernetes_memory_max, "MEMORY"),
    ):
        wanted = str(table.get(key, default))
        if _quantity(wanted, f"[tool.pyfaas] {key}") > _quantity(maximum, f"{key} maximum"):
            raise FunctionConfigError(
                f"[tool.pyfaas] {key} = {wanted!r} is above this platform's maximum of "
                f"{maximum!r} (PYFAAS_KUBERNETES_{setting}_MAX); ask for less"
            )
        if _quantity(wanted, f"[tool.pyfaas] {key}") <= 0:
            raise FunctionConfigError(f"[tool.pyfaas] {key} must be more than zero")
        limits[key] = wanted
    # A request above its limit is invalid: a small limit pulls the request down with it.
    cpu_request = min(
        (settings.kubernetes_cpu_request, limits["cpu"]), key=lambda q: _quantity(q, "cpu")
    )
    memory_request = min(
        (settings.kubernetes_memory_request, limits["memory"]),
        key=lambda q: _quantity(q, "memory"),
    )
    return Resources(cpu_request, memory_request, limits["cpu"], limits["memory"])


def config_map(spec: FunctionSpec, settings: DeployerSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, settings),
        "data": {"main.py": spec.code},
    }


def secret(spec: FunctionSpec, settings: DeployerSettings) -> Manifest:
    """The user's environment. ``data`` rather than ``stringData``: server-side apply
    tracks ``data``, and ``stringData`` would be merged into it on every apply."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, settings),
        "type": "Opaque",
        "data": {
            key: base64.b64encode(value.encode("utf-8")).decode("ascii")
            for key, value in sorted(spec.env.items())
        },
    }


def service(spec: FunctionSpec, settings: DeployerSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec.id),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _container_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _environment(spec: FunctionSpec) -> list[Manifest]:
    """pyfaas's own variables; ``env`` wins over the user's ``envFrom`` Secret, and the API
    refuses user variables with these names anyway."""
    values = {
        "PORT": str(CONTAINER_PORT),
        "HOST": "0.0.0.0",
        "HOME": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "UV_NO_PROGRESS": "1",
        "UV_CACHE_DIR": f"{CACHE_DIR}/uv",
        "UV_PYTHON_INSTALL_DIR": f"{CACHE_DIR}/python",
        "XDG_CACHE_HOME": CACHE_DIR,
        "PYFAAS_FUNCTION_ID": str(spec.id),
        "PYFAAS_FUNCTION_NAME": spec.name,
    }
    return [{"name": key, "value": value} for key, value in values.items()]


def startup_failure_threshold(settings: DeployerSettings, period: int) -> int:
    """Long enough for ``uv`` to resolve and install the dependencies: the start timeout."""
    return max(1, math.ceil(settings.start_timeout / period))


def deployment(spec: FunctionSpec, settings: DeployerSettings, replicas: int = 1) -> Manifest:
    res = resources(spec, settings)
    name = object_name(spec.id)
    startup_period = 2
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        # Service links would hand every function the addresses of its neighbours.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.kubernetes_image,
                "imagePullPolicy": settings.kubernetes_image_pull_policy,
                "command": ["uv", "run", "--script", f"{SCRIPT_DIR}/main.py"],
                "workingDir": "/tmp",
                "env": _environment(spec),
                "envFrom": [{"secretRef": {"name": name}}],
                "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                "startupProbe": {
                    "tcpSocket": {"port": "http"},
                    "periodSeconds": startup_period,
                    "timeoutSeconds": 1,
                    "failureThreshold": startup_failure_threshold(settings, startup_period),
                },
                # A TCP check, as the local runtime's: the contract is "serves HTTP on
                # $PORT", not "answers 200 on /".
                "readinessProbe": {
                    "tcpSocket": {"port": "http"},
                    "periodSeconds": 5,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                },
                "resources": {
                    "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                    "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
                },
                "securityContext": _container_security(),
                # The reason a crashed function reports carries its last words.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "cache", "mountPath": CACHE_DIR},
                ],
            }
        ],
        "volumes": [
            {
                "name": "script",
                "configMap": {
                    "name": name,
                    "items": [{"key": "main.py", "path": "main.py"}],
                    "defaultMode": 0o444,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "cache", "emptyDir": {"sizeLimit": settings.kubernetes_cache_size}},
        ],
    }
    if settings.kubernetes_runtime_class:
        pod_spec["runtimeClassName"] = settings.kubernetes_runtime_class
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, settings),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            # Past this, Kubernetes marks the rollout failed; our own start timeout says so
            # first, this only keeps the Deployment's condition honest.
            "progressDeadlineSeconds": math.ceil(settings.start_timeout) + 60,
            "selector": {"matchLabels": selector(spec.id)},
            # The new pod must be ready before the old one goes: no gap while uv installs.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels(spec),
                    # A new digest (code or env) changes the template, which rolls the pods.
                    "annotations": {DIGEST: spec.digest},
                },
                "spec": pod_spec,
            },
        },
    }


def function_objects(
    spec: FunctionSpec, settings: DeployerSettings, replicas: int = 1
) -> list[Manifest]:
    """Every object of one function, in the order to apply them: what the pod mounts
    before the Deployment that starts it."""
    return [
        config_map(spec, settings),
        secret(spec, settings),
        service(spec, settings),
        deployment(spec, settings, replicas),
    ]
