"""Two deployer replicas on one Postgres never reconcile the same function at once.

Each replica here is a :class:`Reconciler` with its own engine (its own connections, as
two pods would have) against a real Postgres. The runtime both drive is a recording
stand-in: the property under test is the deployers' lock, and the runtime that matters for
several replicas (Kubernetes) has no cluster on this machine. It counts how many calls
into it are under way for the function at once — two would mean two replicas applying,
sleeping or deleting the same function over each other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from pyfaas_common import migrate
from pyfaas_common.db import make_engine
from pyfaas_common.messages import CreateFunction, DeleteFunction
from pyfaas_deployer.reconcile import Reconciler
from pyfaas_deployer.runtime import FunctionSpec, Observation
from pyfaas_deployer.settings import DeployerSettings
from pyfaas_deployer.store import FunctionStore
from tests.platform import example

pytestmark = pytest.mark.timeout(60)


class RecordingRuntime:
    """Slow, and tells when two calls for one function overlap."""

    name = "recording"

    def __init__(self) -> None:
        self.busy: dict[UUID, int] = {}
        self.most_at_once = 0
        """Most calls under way at once for one function."""
        self.most_overall = 0
        """Most calls under way at once for all functions together."""
        self.calls: list[str] = []
        self.running: set[UUID] = set()

    async def _call(self, what: str, function_id: UUID) -> None:
        self.busy[function_id] = self.busy.get(function_id, 0) + 1
        self.most_at_once = max(self.most_at_once, self.busy[function_id])
        self.most_overall = max(self.most_overall, sum(self.busy.values()))
        self.calls.append(what)
        try:
            await asyncio.sleep(0.3)
        finally:
            self.busy[function_id] -= 1

    async def apply(self, spec: FunctionSpec) -> Observation:
        await self._call("apply", spec.id)
        self.running.add(spec.id)
        return Observation(state="ready", endpoint="http://127.0.0.1:9")

    async def delete(self, function_id: UUID) -> Observation:
        await self._call("delete", function_id)
        self.running.discard(function_id)
        return Observation(state="absent")

    async def observe(self, function_id: UUID) -> Observation:
        if function_id in self.running:
            return Observation(state="ready", endpoint="http://127.0.0.1:9")
        return Observation(state="absent")

    async def managed(self) -> set[UUID]:
        return set(self.running)


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[Reconciler, Reconciler]]:
    settings = DeployerSettings(database_url=postgres_url)
    engines = [make_engine(postgres_url) for _ in range(2)]
    await migrate.upgrade(engines[0])
    runtime = RecordingRuntime()

    async def publish(_row: object) -> None:
        return None

    pair = tuple(
        Reconciler(FunctionStore(e, settings), runtime, publish, settings)  # type: ignore[arg-type]
        for e in engines
    )
    try:
        yield pair[0], pair[1]
    finally:
        for engine in engines:
            await engine.dispose()


async def _both(a: Reconciler, b: Reconciler, fid: UUID) -> None:
    a.schedule(fid)
    b.schedule(fid)
    await asyncio.gather(a.wait_idle(), b.wait_idle())


async def test_two_replicas_never_drive_one_function_at_once(
    replicas: tuple[Reconciler, Reconciler],
) -> None:
    a, b = replicas
    runtime: RecordingRuntime = a.runtime  # type: ignore[assignment]
    fid = uuid.uuid4()
    create = CreateFunction(
        function_id=fid, owner="alice", name="twice", code=example("hello_stdlib.py")
    )
    await a.store.apply(create, seq=1)
    # Both replicas were told about the create (a redelivery, a full pass): both reconcile;
    # the one that finds the other at work looks again a second later.
    await _both(a, b, fid)
    assert runtime.most_at_once == 1
    assert runtime.calls == ["apply"]  # the second found it running, and left it
    row = await b.store.get(fid)
    assert row is not None and row.state == "ready"

    await b.store.apply(DeleteFunction(function_id=fid), seq=2)
    await _both(a, b, fid)
    assert runtime.most_at_once == 1
    assert runtime.calls.count("delete") >= 1


async def test_other_functions_are_not_held_up(
    replicas: tuple[Reconciler, Reconciler],
) -> None:
    a, b = replicas
    runtime: RecordingRuntime = a.runtime  # type: ignore[assignment]
    ids = [uuid.uuid4() for _ in range(4)]
    for i, fid in enumerate(ids):
        await a.store.apply(
            CreateFunction(function_id=fid, owner="alice", name=f"f{i}", code="x"), seq=i + 1
        )
    for fid in ids:
        a.schedule(fid)
        b.schedule(fid)
    await asyncio.gather(a.wait_idle(), b.wait_idle())
    assert runtime.calls == ["apply"] * 4
    assert runtime.most_at_once == 1
    assert runtime.most_overall > 1  # different functions went ahead side by side


async def test_many_functions_dying_at_once_do_not_exhaust_the_pool(postgres_url: str) -> None:
    # 40 functions exit together (an OOM, a shared dependency down): each report takes the
    # function's lock, which holds a connection, and needs another for its reads and
    # writes. With the deployer's pool (20 + 10 overflow) they must all be recorded.
    settings = DeployerSettings(database_url=postgres_url)
    engine = make_engine(postgres_url, pool_size=20, max_overflow=10, pool_timeout=5)
    await migrate.upgrade(engine)
    runtime = RecordingRuntime()

    async def publish(_row: object) -> None:
        return None

    reconciler = Reconciler(FunctionStore(engine, settings), runtime, publish, settings)  # type: ignore[arg-type]
    try:
        ids = [uuid.uuid4() for _ in range(40)]
        for i, fid in enumerate(ids):
            await reconciler.store.apply(
                CreateFunction(function_id=fid, owner="bob", name=f"d{i}", code="x"), seq=i + 1
            )
            reconciler.schedule(fid)
        await reconciler.wait_idle()
        runtime.running.clear()  # every process is gone
        await asyncio.wait_for(
            asyncio.gather(*(reconciler.on_exit(fid, "killed (OOM)") for fid in ids)), 20
        )
        for fid in ids:
            row = await reconciler.store.get(fid)
            assert row is not None and (row.state, row.reason) == ("failed", "killed (OOM)")
    finally:
        await reconciler.close()
        await engine.dispose()
