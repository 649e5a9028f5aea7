"""The kubernetes runtime: each function is a ConfigMap, a Secret, a Deployment and a Service.

Chosen by ``PYFAAS_RUNTIME=kubernetes`` (``make_runtime`` in ``__init__.py``); the
reconciler calls it under the function's lock. The objects come from ``manifests.py`` and
are applied with server-side apply (field manager ``pyfaas``), so applying twice changes
nothing and a new script, which changes the pod template's digest annotation, rolls the
pods. Sleep scales the Deployment to zero; delete removes every object carrying the
function's label, so objects from an older pyfaas with other names go too.

The official client is synchronous: every call runs in a worker thread
(``asyncio.to_thread``) so that the deployer's event loop keeps serving NATS meanwhile.

Kubernetes restarts a crashed container itself, so this runtime never calls ``on_exit``:
the reconciler's periodic pass calls :meth:`observe`, which reports a crash-looping
function as failed, with its reason, and the reconciler records it.

An update rolls the pods with ``maxUnavailable: 0``: the previous pod serves until the new
one is ready. If the new one never becomes ready, ``apply`` says failed (with the reason)
while ``observe`` says ready as long as a previous pod still serves; the rollout stays
stuck, Kubernetes retrying the new pod with its own back-off, until the next update.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from kubernetes.dynamic.resource import Resource

from pyfaas_common.logs import function_context

from ..settings import DeployerSettings
from . import manifests
from .base import ExitCallback, FunctionSpec, Observation
from .manifests import FunctionConfigError, Manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

LOG_TAIL_IN_REASON = 20

# (apiVersion, kind) of everything a function is made of; also what delete and managed()
# look through. The Deployment goes first on delete: its pods stop before their script.
KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
)

# Container states that will not fix themselves without a change by someone.
CRASHING = {"CrashLoopBackOff", "RunContainerError"}
IMAGE_PROBLEMS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_PROBLEMS = {"CreateContainerConfigError", "CreateContainerError"}


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(self, settings: DeployerSettings, on_exit: ExitCallback) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self.on_exit = on_exit  # unused: see the module docstring
        self._api: client.ApiClient | None = None
        self._dynamic: DynamicClient | None = None
        self._resources: dict[str, Resource] = {}

    # --- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._connect)

    def _connect(self) -> None:
        configuration = client.Configuration()
        in_cluster = self.settings.kubernetes_in_cluster
        if in_cluster is None:
            in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=self.settings.kubernetes_kubeconfig or None,
                context=self.settings.kubernetes_context or None,
                client_configuration=configuration,
            )
        self._api = client.ApiClient(configuration)
        # Discovery is cached in our data directory, not in a shared /tmp file.
        cache = Path(self.settings.data_dir) / "kubernetes-discovery.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        self._dynamic = DynamicClient(self._api, cache_file=str(cache))
        for api_version, kind in KINDS:
            self._resources[kind] = self._dynamic.resources.get(api_version=api_version, kind=kind)
        self._resources["Pod"] = self._dynamic.resources.get(api_version="v1", kind="Pod")
        log.info(
            "connected to Kubernetes",
            extra={"host": configuration.host, "namespace": self.namespace},
        )

    async def close(self) -> None:
        if self._api is not None:
            await asyncio.to_thread(self._api.close)
        self._api = None
        self._dynamic = None

    @property
    def _client(self) -> DynamicClient:
        if self._dynamic is None:
            raise RuntimeError("KubernetesRuntime.start() was not called")
        return self._dynamic

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.settings.kubernetes_request_timeout)
        return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

    # --- the Runtime interface -------------------------------------------------------
    async def apply(self, spec: FunctionSpec) -> Observation:
        try:
            objects = manifests.function_objects(spec, self.settings)
        except FunctionConfigError as exc:
            return Observation(state="failed", reason=str(exc))
        for manifest in objects:
            refused = await self._apply(manifest)
            if refused is not None:
                return refused
        with function_context(spec.id):
            log.info("applied function objects", extra={"generation": spec.generation})
        return await self._wait_available(spec)

    async def _apply(self, manifest: Manifest) -> Observation | None:
        """Server-side apply one object; a refusal that retrying cannot cure (a missing
        namespace, RBAC, a policy) becomes a failed observation that names the object."""
        resource = self._resources[manifest["kind"]]
        try:
            await self._call(
                self._client.server_side_apply,
                resource,
                body=manifest,
                namespace=self.namespace,
                field_manager=manifests.MANAGER,
                # pyfaas owns these objects: a hand edit is overwritten, not a conflict.
                force_conflicts=True,
            )
        except ApiException as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (409, 429):
                raise  # transient: the reconciler retries with back-off
            return Observation(
                state="failed",
                reason=f"the Kubernetes API refused the {manifest['kind']} "
                f"{manifest['metadata']['name']} in namespace {self.namespace}: "
                f"{_api_message(exc)}",
            )
        return None

    async def sleep(self, function_id: UUID) -> Observation:
        with contextlib.suppress(NotFoundError):  # nothing runs: asleep already
            await self._call(
                self._client.patch,
                self._resources["Deployment"],
                body={"spec": {"replicas": 0}},
                name=manifests.object_name(function_id),
                namespace=self.namespace,
                content_type="application/merge-patch+json",
                field_manager=manifests.MANAGER,
            )
        return Observation(state="sleeping")

    async def delete(self, function_id: UUID) -> Observation:
        wanted = manifests.selector_string(manifests.selector(function_id))
        for _, kind in KINDS:
            for item in await self._list(kind, wanted):
                name = item["metadata"]["name"]
                with contextlib.suppress(NotFoundError):  # what is gone is deleted
                    await self._call(
                        self._client.delete,
                        self._resources[kind],
                        name=name,
                        namespace=self.namespace,
                        # Pods and ReplicaSets follow their Deployment without us waiting.
                        propagation_policy="Background",
                    )
        return Observation(state="absent")

    async def observe(self, function_id: UUID) -> Observation:
        """Ready while any pod serves, an earlier generation's included (see the module
        docstring); otherwise what stands in the way of the current one."""
        return await self._look(function_id)

    async def managed(self) -> set[UUID]:
        return set().union(*(await self._ids_by_kind()).values())

    async def inventory(self) -> tuple[set[UUID], set[UUID]]:
        kinds = list((await self._ids_by_kind()).values())
        every: set[UUID] = set().union(*kinds)
        return every, every - every.intersection(*kinds)

    async def _ids_by_kind(self) -> dict[str, set[UUID]]:
        """For each kind pyfaas applies, the functions that have one (one list call a kind)."""
        wanted = f"{manifests.MANAGED_BY}={manifests.MANAGER}"
        by_kind: dict[str, set[UUID]] = {}
        for _, kind in KINDS:
            ids = by_kind[kind] = set()
            for item in await self._list(kind, wanted):
                value = (item["metadata"].get("labels") or {}).get(manifests.FUNCTION_ID, "")
                try:
                    ids.add(UUID(value))
                except ValueError:
                    continue  # labelled by hand, not ours to clean up
        return by_kind

    async def logs(self, function_id: UUID, tail: int) -> list[str]:
        pods = await self._pods(function_id)
        if not pods:
            return []
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        name = newest["metadata"]["name"]
        lines = await self._log_tail(name, tail, previous=False)
        if lines is None:  # not started (again) yet: what the last run said
            lines = await self._log_tail(name, tail, previous=True)
        return lines or []

    async def follow_logs(self, function_id: UUID, tail: int) -> AsyncIterator[list[str]]:
        """The newest pod's log, polled with timestamps so that each poll returns only what
        is new; when a new pod takes over (a restart by an update, a wake) its log is
        followed from its start. Ends when the Deployment is gone (the function deleted)."""
        pod = await self._newest_pod(function_id)
        last = ""
        lines: list[str] = []
        if pod is not None:
            lines, last = await self._stamped_log(pod, tail=tail, since="")
        yield lines
        # A poll (every PYFAAS_KUBERNETES_POLL_INTERVAL), not a streaming read: closing
        # the follow then never has to interrupt a blocking read in a worker thread.
        while True:
            await asyncio.sleep(self.settings.kubernetes_poll_interval)
            if await self._deployment(function_id) is None:
                return
            newest = await self._newest_pod(function_id)
            if newest is None:
                continue  # asleep, or between pods
            if newest != pod:
                pod, last = newest, ""
            lines, last = await self._stamped_log(pod, tail=None, since=last)
            if lines:
                yield lines

    async def _newest_pod(self, function_id: UUID) -> str | None:
        pods = await self._pods(function_id)
        if not pods:
            return None
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        name: str = newest["metadata"]["name"]
        return name

    async def _stamped_log(
        self, pod: str, *, tail: int | None, since: str
    ) -> tuple[list[str], str]:
        """Lines after the timestamp ``since`` ("" for all, or the last ``tail``), and the
        timestamp of the last one. ``sinceTime`` has whole seconds: the lines of that
        second come again and are dropped here by their full timestamp."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log"
        query: list[tuple[str, Any]] = [("container", manifests.CONTAINER), ("timestamps", "true")]
        if tail is not None:
            query.append(("tailLines", tail))
        if since:
            query.append(("sinceTime", since.split(".")[0].rstrip("Z") + "Z"))
        try:
            response = await self._call(
                self._client.request, "get", path, query_params=query, serialize=False
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return [], since  # not started yet, or gone: try again next poll
            raise
        lines: list[str] = []
        for raw in response.data.decode("utf-8", "replace").splitlines():
            stamp, _, text = raw.partition(" ")
            if since and _stamp_key(stamp) <= _stamp_key(since):
                continue
            lines.append(text)
            since = stamp
        return lines, since

    # --- looking -----------------------------------------------------------------------
    async def _list(self, kind: str, label_selector: str) -> list[Manifest]:
        result = await self._call(
            self._client.get,
            self._resources[kind],
            namespace=self.namespace,
            label_selector=label_selector,
        )
        items: list[Manifest] = result.to_dict().get("items") or []
        return items

    async def _pods(self, function_id: UUID) -> list[Manifest]:
        return await self._list("Pod", manifests.selector_string(manifests.selector(function_id)))

    async def _log_tail(self, pod: str, tail: int, *, previous: bool) -> list[str] | None:
        """The last lines of the function container's log; None when there is none to read
        (the container has not started, or has no previous run)."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log"
        query: list[tuple[str, Any]] = [("container", manifests.CONTAINER), ("tailLines", tail)]
        if previous:
            query.append(("previous", "true"))
        try:
            response = await self._call(
                self._client.request, "get", path, query_params=query, serialize=False
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise
        text = response.data.decode("utf-8", "replace")
        return text.splitlines()[-tail:] if tail > 0 else []

    async def _deployment(self, function_id: UUID) -> Manifest | None:
        try:
            result = await self._call(
                self._client.get,
                self._resources["Deployment"],
                name=manifests.object_name(function_id),
                namespace=self.namespace,
            )
        except NotFoundError:
            return None
        found: Manifest = result.to_dict()
        return found

    async def _look(self, function_id: UUID, digest: str | None = None) -> Observation:
        """Where the function's rollout stands. ``digest`` limits the verdict on pods to
        those of that script; without it, the Deployment's current template decides."""
        digest_given = digest
        deployment = await self._deployment(function_id)
        if deployment is None:
            return Observation(state="absent")
        spec = deployment.get("spec") or {}
        if spec.get("replicas", 1) == 0:
            return Observation(state="sleeping")
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        digest = digest or (template_meta.get("annotations") or {}).get(manifests.DIGEST)
        url = manifests.endpoint(function_id, self.settings)

        if _rolled_out(deployment):
            return Observation(state="ready", endpoint=url)
        if digest_given is None and (
            (deployment.get("status") or {}).get("availableReplicas") or 0
        ):
            return Observation(state="ready", endpoint=url)
        for condition in (deployment.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                return Observation(
                    state="failed",
                    reason=f"Kubernetes cannot create the function's pod: "
                    f"{condition.get('message') or condition.get('reason')}",
                )
            if condition.get("reason") == "ProgressDeadlineExceeded":
                return Observation(
                    state="failed",
                    reason=f"the function did not become ready: {condition.get('message')}",
                )
        for pod in await self._pods(function_id):
            annotations = pod["metadata"].get("annotations") or {}
            if digest is not None and annotations.get(manifests.DIGEST) != digest:
                continue  # an older script's pod on its way out
            reason = await self._pod_failure(pod)
            if reason is not None:
                return Observation(state="failed", reason=reason, endpoint=url)
        return Observation(state="deploying", endpoint=url)

    async def _pod_failure(self, pod: Manifest) -> str | None:
        """A reason a person can act on, when the pod is stuck in a state that waiting will
        not fix; None while it may still come up."""
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            why = waiting.get("reason")
            if why in IMAGE_PROBLEMS:
                return (
                    f"the function image {status.get('image') or self.settings.kubernetes_image!r} "
                    f"cannot be pulled ({why}: {waiting.get('message') or 'no detail'}); check "
                    f"PYFAAS_KUBERNETES_IMAGE and that the cluster can reach its registry"
                )
            if why in CONFIG_PROBLEMS:
                return f"Kubernetes cannot start the function's container ({why}): {waiting.get('message')}"
            if why in CRASHING:
                return await self._crash_reason(pod["metadata"]["name"], status, why)
        return None

    async def _crash_reason(self, pod: str, status: Manifest, why: str) -> str:
        terminated = (status.get("lastState") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        how = f"exited with code {code}" if code is not None else "exited"
        if terminated.get("reason") == "OOMKilled":
            how = (
                "was killed for using more memory than its limit (OOMKilled); ask for more "
                'with [tool.pyfaas] memory = "1Gi" in the script block'
            )
        elif terminated.get("reason") and terminated.get("reason") != "Error":
            how += f" ({terminated['reason']})"
        restarts = status.get("restartCount", 0)
        parts = [f"the function {how} and keeps being restarted ({why}, {restarts} restarts)."]
        tail = await self._log_tail(pod, LOG_TAIL_IN_REASON, previous=True) or []
        message = (terminated.get("message") or "").strip()
        # With FallbackToLogsOnError the message is usually the log's own end: say it once.
        if message and message not in "\n".join(tail):
            parts.append(f"Termination message:\n{message}")
        if tail:
            parts.append("Last log lines:\n" + "\n".join(tail))
        return "\n".join(parts)

    async def _wait_available(self, spec: FunctionSpec) -> Observation:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.start_timeout
        while True:
            seen = await self._look(spec.id, digest=spec.digest)
            if seen.state in ("ready", "failed"):
                return seen
            if seen.state == "absent":
                return Observation(
                    state="failed",
                    reason=f"the Deployment {manifests.object_name(spec.id)} disappeared while "
                    "the function was starting; it will be applied again",
                )
            if loop.time() > deadline:
                return Observation(state="failed", reason=await self._timeout_reason(spec))
            await asyncio.sleep(self.settings.kubernetes_poll_interval)

    async def _timeout_reason(self, spec: FunctionSpec) -> str:
        parts = [
            f"the function did not become ready within {self.settings.start_timeout:g}s "
            "(PYFAAS_START_TIMEOUT); it must serve HTTP on 0.0.0.0:$PORT, and its "
            "dependencies must install in that time."
        ]
        pods = [
            p
            for p in await self._pods(spec.id)
            if ((p["metadata"].get("annotations") or {}).get(manifests.DIGEST) == spec.digest)
        ]
        for pod in pods:
            status = pod.get("status") or {}
            for condition in status.get("conditions") or []:
                if condition.get("status") == "False" and condition.get("message"):
                    parts.append(f"Pod {condition.get('type')}: {condition['message']}")
            for container in status.get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason"):
                    detail = f": {waiting['message']}" if waiting.get("message") else ""
                    parts.append(f"Container {waiting['reason']}{detail}")
        if pods:
            newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
            tail = await self._log_tail(
                newest["metadata"]["name"], LOG_TAIL_IN_REASON, previous=False
            )
            if tail:
                parts.append("Last log lines:\n" + "\n".join(tail))
        else:
            parts.append("No pod of this version exists yet.")
        return "\n".join(parts)


def _rolled_out(deployment: Manifest) -> bool:
    """The rule of ``kubectl rollout status``: the controller has seen the newest spec,
    every replica runs it, one is available, and no pod of an older template remains."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = spec.get("replicas", 1)
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    updated = status.get("updatedReplicas") or 0
    return bool(
        (status.get("observedGeneration") or 0) >= generation
        and updated >= wanted
        and (status.get("availableReplicas") or 0) >= 1
        and (status.get("replicas") or 0) <= updated
    )


def _stamp_key(stamp: str) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed as the kubelet writes it, made
    comparable as a string: ``...:05.1Z`` sorts before ``...:05.12Z``."""
    base, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{base}.{fraction.ljust(9, '0')}"


def _api_message(exc: ApiException) -> str:
    summary = getattr(exc, "summary", None)
    if callable(summary):
        try:
            return str(summary())
        except ValueError:
            pass
    return f"{exc.status} {exc.reason}"
