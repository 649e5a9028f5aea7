# ruff: noqa: F811
"""The deployer's full reconcile repairs what happened behind its back: runtime objects
that belong to no function are deleted, and a function whose objects are gone is applied
again.

:meth:`Reconciler.full_pass` runs against the kubernetes runtime and a real Postgres
(:class:`FunctionStore`, migrated as the deployer migrates it). There is no Kubernetes
cluster on this machine: the ``kmock`` Kubernetes API emulator stands in for one, with
the API server and cluster behaviours of ``test_kubernetes_runtime.py`` (its fixtures are
imported by name).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common.db import FunctionRow
from pyfaas_common.messages import CreateFunction, State
from pyfaas_deployer.reconcile import Reconciler
from pyfaas_deployer.runtime.base import FunctionSpec
from pyfaas_deployer.runtime.kubernetes import KubernetesRuntime
from pyfaas_deployer.runtime.manifests import object_name
from pyfaas_deployer.settings import DeployerSettings
from pyfaas_deployer.store import FunctionStore

# The shared fixtures are imported by name; pytest passes them as arguments.
from tests.integration.test_kubernetes_runtime import (  # noqa: F401
    CODE,
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACE,
    SECRETS,
    SERVICES,
    ApiServer,
    Cluster,
    cluster,
    kubeconfig,
    runtime,
    settings,
)

pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.timeout(30)]

OBJECTS = {
    "ConfigMap": CONFIGMAPS,
    "Secret": SECRETS,
    "Service": SERVICES,
    "Deployment": DEPLOYMENTS,
}


@pytest.fixture
async def reconciler(
    engine: AsyncEngine, runtime: KubernetesRuntime, settings: DeployerSettings
) -> AsyncIterator[Reconciler]:
    # A full pass looks at every row: each test starts from an empty table.
    async with engine.begin() as conn:
        await conn.execute(FunctionRow.__table__.delete())

    async def publish(_row: FunctionRow) -> None:
        return None

    reconciler = Reconciler(FunctionStore(engine, settings), runtime, publish, settings)
    yield reconciler
    await reconciler.close()


async def _ready_function(reconciler: Reconciler, name: str) -> uuid.UUID:
    """A function created as the deployer creates one, reconciled until it serves."""
    fid = uuid.uuid4()
    await reconciler.store.apply(
        CreateFunction(function_id=fid, owner="alice", name=name, code=CODE, runtime="kubernetes"),
        seq=1,
    )
    await reconciler.reconcile(fid)
    row = await reconciler.store.get(fid)
    assert row is not None and row.state == State.READY, row and row.reason
    return fid


def _holders(cluster: Cluster, fid: uuid.UUID) -> set[str]:
    """The kinds of object the function has in the cluster."""
    name = object_name(fid)
    return {kind for kind, resource in OBJECTS.items() if name in cluster.live(resource)}


async def test_objects_of_a_function_without_a_row_are_deleted(
    reconciler: Reconciler, runtime: KubernetesRuntime, cluster: Cluster
) -> None:
    kept = await _ready_function(reconciler, "kept")
    # Left by a deployer that crashed between its apply and its write, or by a row
    # removed by hand: objects in the cluster, no row in the database.
    orphan = FunctionSpec(id=uuid.uuid4(), owner="alice", name="orphan", code=CODE)
    assert (await runtime.apply(orphan)).state == "ready"
    assert await reconciler.store.get(orphan.id) is None
    assert await runtime.managed() == {kept, orphan.id}

    await reconciler.full_pass()
    await reconciler.wait_idle()

    assert _holders(cluster, orphan.id) == set()
    assert await runtime.managed() == {kept}
    # The function with a row was looked at and left alone.
    assert _holders(cluster, kept) == set(OBJECTS)
    row = await reconciler.store.get(kept)
    assert row is not None and row.state == State.READY


async def test_a_ready_function_whose_objects_were_deleted_is_applied_again(
    reconciler: Reconciler, runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    fid = await _ready_function(reconciler, "repaired")
    before = await reconciler.store.get(fid)
    assert before is not None
    name = object_name(fid)
    # Someone ran kubectl delete on everything of the function; the row still says ready.
    for resource in OBJECTS.values():
        kmock.objects[resource, NAMESPACE, name].delete()
    assert _holders(cluster, fid) == set()
    assert (await runtime.observe(fid)).state == "absent"

    await reconciler.full_pass()
    await reconciler.wait_idle()

    assert _holders(cluster, fid) == set(OBJECTS)
    assert cluster.live(CONFIGMAPS)[name]["data"] == {"main.py": CODE}
    seen = await runtime.observe(fid)
    assert seen.state == "ready"
    row = await reconciler.store.get(fid)
    assert row is not None
    assert (row.state, row.endpoint, row.generation) == (
        State.READY,
        seen.endpoint,
        before.generation,
    )


async def test_a_serving_function_missing_some_of_its_objects_is_applied_again(
    reconciler: Reconciler, runtime: KubernetesRuntime, cluster: Cluster, kmock: ApiServer
) -> None:
    fid = await _ready_function(reconciler, "partly")
    whole = await _ready_function(reconciler, "whole")
    name = object_name(fid)
    # The Deployment still serves, so the function looks ready; but the gateway's way to
    # it (the Service) and the script its next pod mounts (the ConfigMap) are gone.
    for resource in (SERVICES, CONFIGMAPS):
        kmock.objects[resource, NAMESPACE, name].delete()
    assert (await runtime.observe(fid)).state == "ready"
    assert (await runtime.inventory())[1] == {fid}

    await reconciler.full_pass()
    await reconciler.wait_idle()

    assert _holders(cluster, fid) == set(OBJECTS)
    assert cluster.live(CONFIGMAPS)[name]["data"] == {"main.py": CODE}
    assert (await runtime.inventory())[1] == set()
    assert _holders(cluster, whole) == set(OBJECTS)
    row = await reconciler.store.get(fid)
    assert row is not None and row.state == State.READY
