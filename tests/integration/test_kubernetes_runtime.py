"""The kubernetes runtime against an emulated Kubernetes API server, over real HTTP.

No cluster and no Docker engine exist where this suite runs: the ``kmock`` Kubernetes API
emulator stands in for the API server. The runtime reaches it the way it reaches a real
one — a kubeconfig, the official client's discovery, server-side apply, lists with label
selectors, pod logs — so what is tested is the conversation, not a mock of our own code.

kmock stores objects and merges patches; two behaviours of a real API server that the
runtime relies on are added here (:class:`ApiServer`): a server-side apply creates a
missing object, and a list honours its ``labelSelector``. The controllers and the kubelet
are played by :class:`Cluster`, a small loop that gives Deployments pods and a status the
way the test asks: healthy, crash-looping, or unable to pull the image.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import kmock
import pytest
import yaml

from pyfaas_deployer.runtime.base import FunctionSpec, Observation
from pyfaas_deployer.runtime.kubernetes import KubernetesRuntime
from pyfaas_deployer.runtime.manifests import DIGEST, FUNCTION_ID, MANAGED_BY, object_name
from pyfaas_deployer.settings import DeployerSettings
from tests.platform import example

NAMESPACE = "pyfaas-functions"
CODE = example("hello_stdlib.py")

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
PODS = kmock.resource("", "v1", "pods")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
SECRETS = kmock.resource("", "v1", "secrets")
SERVICES = kmock.resource("", "v1", "services")

Behaviour = Literal["healthy", "crashing", "bad-image", "slow"]


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _selected(item: dict[str, Any], selector: str) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("=")
        if (sep and labels.get(key) != value) or (not sep and key not in labels):
            return False
    return True


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side-apply creation, ``metadata.generation``, and
    lists with a ``kind`` that honour label selectors, as a real API server has them."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.method == kmock.method.PATCH and request.resource and request.name:
            key = (request.resource, request.namespace, request.name)
            exists = key in self.objects and not self.objects[key].deleted
            old: dict[str, Any] = dict(self.objects[key].raw) if exists else {}
            content_type = request.headers.get("Content-Type", "")
            if not exists and content_type.startswith("application/apply-patch"):
                meta = {"uid": str(uuid.uuid4()), "generation": 1, "namespace": request.namespace}
                self.objects[key] = _merge(request.data, {"metadata": meta})
            elif exists and _merge(old, request.data).get("spec") != old.get("spec"):
                generation = (old.get("metadata") or {}).get("generation", 1) + 1
                request.data.setdefault("metadata", {})["generation"] = generation
        return await super()._handle(request)

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        assert request.resource is not None
        resource = request.resource
        payload["kind"] = f"{self.resources[resource].kind}List"
        payload["apiVersion"] = f"{resource.group}/{resource.version}".lstrip("/")
        wanted = request.params.get("labelSelector")
        if wanted:
            payload["items"] = [item for item in payload["items"] if _selected(item, wanted)]
        return payload


class Cluster:
    """The controllers and the kubelet: every few milliseconds, give each Deployment the
    pod and the status that ``behaviour`` calls for."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.behaviour: Behaviour = "healthy"
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Cluster:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def live(self, resource: kmock.resource) -> dict[str, dict[str, Any]]:
        return {
            name: dict(obj.raw)
            for (res, _, name), obj in list(self.server.objects.items())
            if res == resource and not obj.deleted
        }

    async def _run(self) -> None:
        while True:
            for name, deployment in self.live(DEPLOYMENTS).items():
                self._reconcile(name, deployment)
            await asyncio.sleep(0.01)

    def _reconcile(self, name: str, deployment: dict[str, Any]) -> None:
        spec = deployment["spec"]
        template = spec["template"]
        digest = template["metadata"]["annotations"][DIGEST]
        generation = deployment["metadata"].get("generation", 1)
        pod_name = f"{name}-{digest[:10]}"
        pods = {n: p for n, p in self.live(PODS).items() if n.startswith(name)}
        for other in pods:
            if other != pod_name and self.behaviour == "healthy":
                self.server.objects[PODS, NAMESPACE, other].delete()  # the old one goes
        if spec["replicas"] == 0:
            for other in pods:
                self.server.objects[PODS, NAMESPACE, other].delete()
            status = {"observedGeneration": generation, "replicas": 0}
        else:
            if pod_name not in pods and self.behaviour != "slow":
                self.server.objects[PODS, NAMESPACE, pod_name] = self._pod(pod_name, template)
            ready = self.behaviour == "healthy"
            # maxUnavailable: 0: a previous pod that serves stays while the new one fails.
            old_serving = not ready and any(
                p["status"]["containerStatuses"][0].get("ready")
                for n, p in pods.items()
                if n != pod_name
            )
            status = {
                "observedGeneration": generation,
                "replicas": len({*pods, pod_name}) if not ready else 1,
                "updatedReplicas": 1,
                "availableReplicas": 1 if ready or old_serving else 0,
                "readyReplicas": 1 if ready or old_serving else 0,
            }
        if deployment.get("status") != status:
            self.server.objects[DEPLOYMENTS, NAMESPACE, name].patch({"status": status})

    def _pod(self, name: str, template: dict[str, Any]) -> dict[str, Any]:
        image = template["spec"]["containers"][0]["image"]
        container: dict[str, Any] = {"name": "function", "image": image, "restartCount": 0}
        if self.behaviour == "healthy":
            container |= {"ready": True, "state": {"running": {}}}
        elif self.behaviour == "crashing":
            container |= {
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "ModuleNotFoundError: No module named 'flask'",
                    }
                },
            }
        else:
            container |= {
                "ready": False,
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                },
            }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": dict(template["metadata"]["annotations"]),
                "creationTimestamp": "2025-01-01T00:00:00Z",
            },
            "status": {"phase": "Running", "containerStatuses": [container]},
        }


@pytest.fixture
def kubeconfig(tmp_path: Path, kmock: ApiServer) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "test", "user": {"token": "test"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


@pytest.fixture
def settings(tmp_path: Path, kubeconfig: Path) -> DeployerSettings:
    return DeployerSettings(
        data_dir=tmp_path / "data",
        runtime="kubernetes",
        start_timeout=2.0,
        kubernetes_in_cluster=False,
        kubernetes_kubeconfig=str(kubeconfig),
        kubernetes_poll_interval=0.02,
        kubernetes_request_timeout=5.0,
    )


@pytest.fixture
async def cluster(kmock: ApiServer) -> AsyncIterator[Cluster]:
    info = kmock.ResourceInfo
    verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    kmock.resources["v1/configmaps"] = info(kind="ConfigMap", namespaced=True, verbs=verbs)
    kmock.resources["v1/secrets"] = info(kind="Secret", namespaced=True, verbs=verbs)
    kmock.resources["v1/services"] = info(kind="Service", namespaced=True, verbs=verbs)
    kmock.resources["v1/pods"] = info(
        kind="Pod", namespaced=True, verbs=verbs, subresources={"log"}
    )
    kmock.resources["apps/v1/deployments"] = info(
        kind="Deployment", namespaced=True, verbs=verbs, subresources={"status", "scale"}
    )
    async with Cluster(kmock) as c:
        yield c


@pytest.fixture
async def runtime(settings: DeployerSettings, cluster: Cluster) -> AsyncIterator[KubernetesRuntime]:
    async def on_exit(function_id: uuid.UUID, reason: str) -> None:
        raise AssertionError("the kubernetes runtime leaves restarts to Kubernetes")

    rt = KubernetesRuntime(settings, on_exit)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.close()


def _spec(code: str = CODE, **kwargs: Any) -> FunctionSpec:
    return FunctionSpec(id=uuid.uuid4(), owner="alice", name="hello", code=code, **kwargs)


def _names(cluster: Cluster, resource: kmock.resource) -> set[str]:
    return set(cluster.live(resource))


pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.timeout(30)]


async def test_apply_creates_the_objects_and_reports_ready(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    spec = _spec(env={"GREETING": "hi"})
    seen = await runtime.apply(spec)

    name = object_name(spec.id)
    assert seen == Observation(
        state="ready", endpoint=f"http://{name}.{NAMESPACE}.svc.cluster.local:80"
    )
    for resource in (CONFIGMAPS, SECRETS, SERVICES, DEPLOYMENTS):
        assert _names(cluster, resource) == {name}
    assert cluster.live(CONFIGMAPS)[name]["data"] == {"main.py": CODE}
    assert cluster.live(SECRETS)[name]["data"] == {"GREETING": "aGk="}
    # Every write was a server-side apply by the field manager "pyfaas", forced.
    patches = list(kmock[kmock.method.PATCH])
    assert len(patches) == 4
    for request in patches:
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert request.params["fieldManager"] == "pyfaas"
        assert request.params["force"] == "true"
    assert not list(kmock[kmock.method.POST]) and not list(kmock[kmock.method.PUT])
    assert await runtime.observe(spec.id) == seen


async def test_reapplying_the_same_script_changes_nothing_and_a_new_one_rolls_the_pods(
    runtime: KubernetesRuntime, cluster: Cluster
) -> None:
    spec = _spec()
    assert (await runtime.apply(spec)).state == "ready"
    name = object_name(spec.id)
    first = cluster.live(DEPLOYMENTS)[name]

    assert (await runtime.apply(spec)).state == "ready"
    again = cluster.live(DEPLOYMENTS)[name]
    assert again["metadata"]["generation"] == first["metadata"]["generation"]
    assert _names(cluster, PODS) == {f"{name}-{spec.digest[:10]}"}

    new = FunctionSpec(
        id=spec.id, owner=spec.owner, name=spec.name, code=CODE + "\n# v2\n", generation=2
    )
    assert (await runtime.apply(new)).state == "ready"
    rolled = cluster.live(DEPLOYMENTS)[name]
    assert rolled["metadata"]["generation"] == first["metadata"]["generation"] + 1
    assert rolled["spec"]["template"]["metadata"]["annotations"][DIGEST] == new.digest
    assert cluster.live(CONFIGMAPS)[name]["data"]["main.py"].endswith("# v2\n")
    assert _names(cluster, PODS) == {f"{name}-{new.digest[:10]}"}


async def test_sleep_scales_to_zero_and_wake_applies_again(
    runtime: KubernetesRuntime, cluster: Cluster
) -> None:
    spec = _spec()
    assert (await runtime.apply(spec)).state == "ready"
    name = object_name(spec.id)

    assert await runtime.sleep(spec.id) == Observation(state="sleeping")
    assert cluster.live(DEPLOYMENTS)[name]["spec"]["replicas"] == 0
    assert await runtime.observe(spec.id) == Observation(state="sleeping")
    # The script and the Service stay: waking needs only a pod.
    assert name in _names(cluster, CONFIGMAPS) and name in _names(cluster, SERVICES)
    assert await runtime.sleep(spec.id) == Observation(state="sleeping")  # twice is fine

    woken = await runtime.apply(spec)
    assert woken.state == "ready"
    assert cluster.live(DEPLOYMENTS)[name]["spec"]["replicas"] == 1
    # Sleeping what was never there is a success too.
    assert await runtime.sleep(uuid.uuid4()) == Observation(state="sleeping")


async def test_delete_removes_every_labelled_object_and_twice_is_fine(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    spec, other = _spec(), _spec()
    assert (await runtime.apply(spec)).state == "ready"
    assert (await runtime.apply(other)).state == "ready"
    # Left by an older pyfaas under another name: the label, not the name, says whose it is.
    kmock.objects[CONFIGMAPS, NAMESPACE, "legacy-script"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "legacy-script",
            "namespace": NAMESPACE,
            "labels": {MANAGED_BY: "pyfaas", FUNCTION_ID: str(spec.id)},
        },
    }

    assert await runtime.delete(spec.id) == Observation(state="absent")
    for resource in (CONFIGMAPS, SECRETS, SERVICES, DEPLOYMENTS):
        assert _names(cluster, resource) == {object_name(other.id)}
    assert await runtime.observe(spec.id) == Observation(state="absent")
    assert await runtime.delete(spec.id) == Observation(state="absent")
    assert (await runtime.observe(other.id)).state == "ready"


async def test_managed_lists_every_function_for_orphan_clean_up(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    kept, orphan = _spec(), _spec()
    assert (await runtime.apply(kept)).state == "ready"
    assert (await runtime.apply(orphan)).state == "ready"
    # Not ours: no managed-by label, or a function id that is not a uuid.
    kmock.objects[CONFIGMAPS, NAMESPACE, "someone-else"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "someone-else", "namespace": NAMESPACE, "labels": {"app": "x"}},
    }
    kmock.objects[CONFIGMAPS, NAMESPACE, "hand-made"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "hand-made",
            "namespace": NAMESPACE,
            "labels": {MANAGED_BY: "pyfaas", FUNCTION_ID: "not-a-uuid"},
        },
    }
    assert await runtime.managed() == {kept.id, orphan.id}

    # What reconcile.full_pass does with an id that has no row: delete it.
    await runtime.delete(orphan.id)
    assert await runtime.managed() == {kept.id}
    assert _names(cluster, CONFIGMAPS) == {object_name(kept.id), "someone-else", "hand-made"}


async def test_a_crash_looping_function_fails_with_its_last_words(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    cluster.behaviour = "crashing"
    spec = _spec()
    pod = f"{object_name(spec.id)}-{spec.digest[:10]}"
    kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << (
        b"Traceback (most recent call last):\n"
        b'  File "/app/main.py", line 3, in <module>\n'
        b"ModuleNotFoundError: No module named 'flask'\n"
    )

    seen = await runtime.apply(spec)

    assert seen.state == "failed"
    assert "exited with code 1" in seen.reason
    assert "CrashLoopBackOff, 4 restarts" in seen.reason
    assert "Last log lines:\nTraceback (most recent call last):" in seen.reason
    # The termination message duplicates the log's end here: said once, not twice.
    assert seen.reason.count("No module named 'flask'") == 1
    log_requests = list(kmock[kmock.resource("v1/pods")][kmock.method.GET])
    assert any(r.params.get("previous") == "true" for r in log_requests)
    # The periodic reconcile's look says the same, so a function that crashes later is seen.
    assert (await runtime.observe(spec.id)).state == "failed"


async def test_an_image_that_cannot_be_pulled_fails_with_what_to_check(
    runtime: KubernetesRuntime, cluster: Cluster
) -> None:
    cluster.behaviour = "bad-image"
    seen = await runtime.apply(_spec())
    assert seen.state == "failed"
    assert "cannot be pulled (ImagePullBackOff" in seen.reason
    assert "PYFAAS_KUBERNETES_IMAGE" in seen.reason


async def test_a_function_that_never_starts_fails_at_the_start_timeout(
    runtime: KubernetesRuntime, cluster: Cluster
) -> None:
    cluster.behaviour = "slow"
    runtime.settings = runtime.settings.model_copy(update={"start_timeout": 0.3})
    seen = await runtime.apply(_spec())
    assert seen.state == "failed"
    assert "did not become ready within 0.3s (PYFAAS_START_TIMEOUT)" in seen.reason
    assert "No pod of this version exists yet." in seen.reason


async def test_resources_above_the_operator_maximum_fail_without_touching_the_cluster(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    code = CODE.replace("# ///\n", '# [tool.pyfaas]\n# memory = "64Gi"\n# ///\n', 1)
    seen = await runtime.apply(_spec(code))
    assert seen.state == "failed"
    assert "PYFAAS_KUBERNETES_MEMORY_MAX" in seen.reason
    assert not list(kmock[kmock.method.PATCH])


async def test_logs_come_from_the_function_pod(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    spec = _spec()
    assert await runtime.logs(spec.id, 10) == []  # nothing deployed: no lines, no error
    assert (await runtime.apply(spec)).state == "ready"
    pod = f"{object_name(spec.id)}-{spec.digest[:10]}"
    kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << b"one\ntwo\nthree\n"

    assert await runtime.logs(spec.id, 2) == ["two", "three"]
    request = list(kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"])[-1]
    assert request.params["tailLines"] == "2"
    assert request.params["container"] == "function"


async def test_a_failed_update_leaves_the_previous_pod_serving(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    spec = _spec()
    assert (await runtime.apply(spec)).state == "ready"
    cluster.behaviour = "crashing"
    broken = FunctionSpec(
        id=spec.id, owner=spec.owner, name=spec.name, code=CODE + "\nraise SystemExit(1)\n"
    )
    (
        kmock[
            f"get /api/v1/namespaces/{NAMESPACE}/pods/{object_name(spec.id)}-{broken.digest[:10]}/log"
        ]
        << b"boom\n"
    )

    seen = await runtime.apply(broken)
    assert seen.state == "failed" and "CrashLoopBackOff" in seen.reason
    # The update is stuck, the previous generation serves: the contract of Runtime.apply.
    assert (await runtime.observe(spec.id)).state == "ready"
    assert f"{object_name(spec.id)}-{spec.digest[:10]}" in _names(cluster, PODS)


async def test_follow_logs_yields_the_tail_then_new_lines_and_ends_on_delete(
    runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    spec = _spec()
    assert (await runtime.apply(spec)).state == "ready"
    pod = f"{object_name(spec.id)}-{spec.digest[:10]}"
    written = [
        "2025-01-01T00:00:01.5Z one",
        "2025-01-01T00:00:01.75Z two",
    ]

    def log(request: kmock.Request) -> bytes:
        assert request.params["timestamps"] == "true"
        lines = written
        if "tailLines" in request.params:
            lines = lines[-int(request.params["tailLines"]) :]
        if "sinceTime" in request.params:  # whole seconds, as the kubelet takes it
            lines = [line for line in lines if line[:19] >= request.params["sinceTime"][:19]]
        return "".join(f"{line}\n" for line in lines).encode()

    kmock[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << log
    follow = runtime.follow_logs(spec.id, 1)
    try:
        assert await anext(follow) == ["two"]
        written.append("2025-01-01T00:00:01.8Z three")  # the same second: not "two" again
        written.append("2025-01-01T00:00:02Z four")
        assert await asyncio.wait_for(anext(follow), 5) == ["three", "four"]
        await runtime.delete(spec.id)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(follow), 5)
    finally:
        await follow.aclose()
