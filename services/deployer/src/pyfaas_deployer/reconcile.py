"""The level-triggered controller: drive each function's runtime towards its desired state.

Commands (``app.py``) only change desired state and then call :meth:`Reconciler.schedule`.
A reconcile reads the row, asks the runtime to converge, and records what it observed,
under a per-function lock so that two reconciles of one function never interleave, in
this process or (on Postgres) in any other deployer replica. A
periodic full pass repairs what a crash left behind: functions that should run but do not,
and runtime objects that belong to no function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

from pyfaas_common.db import FunctionRow
from pyfaas_common.logs import SECRETS, function_context
from pyfaas_common.messages import Desired, State

from .runtime import FunctionSpec, Observation, Runtime
from .settings import DeployerSettings
from .store import FunctionBusy, FunctionStore

log = logging.getLogger(__name__)

Publish = Callable[[FunctionRow], Awaitable[None]]

STABLE_AFTER_SECONDS = 30.0
"""A function that served this long before exiting starts its back-off from scratch."""

BUSY_RETRY_SECONDS = 1.0
"""When another deployer replica is reconciling a function, look again after this."""


class Reconciler:
    def __init__(
        self,
        store: FunctionStore,
        runtime: Runtime,
        publish: Publish,
        settings: DeployerSettings,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.publish = publish
        self.settings = settings
        self._locks: dict[UUID, asyncio.Lock] = {}
        self._queued: set[UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: dict[UUID, int] = {}
        self._ready_since: dict[UUID, float] = {}
        self._repair: set[UUID] = set()
        """Functions the runtime holds only part of: applied again even if they serve."""
        self._slots = asyncio.Semaphore(concurrency)
        self._closing = False

    # --- scheduling ------------------------------------------------------------------
    def schedule(self, function_id: UUID, delay: float = 0.0) -> None:
        """Reconcile soon; several requests for one function before it starts become one."""
        if self._closing:
            return
        if delay == 0:
            if function_id in self._queued:
                return
            self._queued.add(function_id)
        task = asyncio.create_task(self._run(function_id, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, function_id: UUID, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
            if function_id in self._queued:
                return  # a reconcile is already on its way
            self._queued.add(function_id)
        try:
            async with self._slots:
                self._queued.discard(function_id)
                await self.reconcile(function_id)
        except asyncio.CancelledError:
            raise
        except FunctionBusy:
            # Another replica has it; look again soon (its result may need nothing more).
            self.schedule(function_id, delay=BUSY_RETRY_SECONDS)
        except Exception:
            with function_context(function_id):
                log.exception("reconcile failed; retrying")
            self.schedule(function_id, delay=self._backoff(function_id))
        finally:
            self._queued.discard(function_id)

    def _backoff(self, function_id: UUID) -> float:
        failures = self._failures.get(function_id, 0) + 1
        self._failures[function_id] = failures
        return float(min(2 ** (failures - 1), self.settings.restart_backoff_max))

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """For tests and shutdown: wait until no reconcile is running or queued."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- one function ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lock(self, function_id: UUID) -> AsyncIterator[None]:
        # In-process first, so that one deployer holds at most one database lock (and one
        # connection) per function.
        async with (
            self._locks.setdefault(function_id, asyncio.Lock()),
            self.store.function_lock(function_id),
        ):
            yield

    async def reconcile(self, function_id: UUID) -> None:
        with function_context(function_id):
            async with self._lock(function_id):
                repair = function_id in self._repair
                self._repair.discard(function_id)
                row = await self.store.get(function_id)
                if row is None:
                    if function_id in await self.runtime.managed():
                        log.info("deleting runtime objects of an unknown function")
                        await self.runtime.delete(function_id)
                    return
                if row.desired == Desired.DELETED:
                    await self._delete(row)
                elif row.desired == Desired.SLEEPING:
                    await self._sleep(row)
                else:
                    await self._run_function(row, repair=repair)
            if row.desired == Desired.DELETED and row.state == State.DELETED:
                self._forget(function_id)

    def _forget(self, function_id: UUID) -> None:
        self._locks.pop(function_id, None)
        self._failures.pop(function_id, None)
        self._ready_since.pop(function_id, None)

    async def _record(
        self, row: FunctionRow, generation: int, state: State, obs: Observation | None = None
    ) -> None:
        changed = await self.store.observe(
            row.id,
            generation=generation,
            state=state,
            reason=obs.reason if obs else "",
            endpoint=obs.endpoint if obs else None,
        )
        if changed is not None:
            log.info("function is %s", state.value, extra={"generation": generation})
            await self.publish(changed)

    async def _delete(self, row: FunctionRow) -> None:
        await self.runtime.delete(row.id)  # also when already deleted: clears leftovers
        if row.state != State.DELETED:
            await self._record(row, row.generation, State.DELETED)

    async def _sleep(self, row: FunctionRow) -> None:
        if row.state == State.SLEEPING and row.observed_generation == row.generation:
            return
        await self.runtime.sleep(row.id)
        self._ready_since.pop(row.id, None)
        await self._record(row, row.generation, State.SLEEPING, Observation(
            state="sleeping", reason=row.reason))  # fmt: skip

    async def _run_function(self, row: FunctionRow, *, repair: bool = False) -> None:
        if not row.code_digest:
            return  # its create was given up (store.give_up): nothing to run until an update
        if row.state == State.READY and row.observed_generation == row.generation and not repair:
            seen = await self.runtime.observe(row.id)
            if seen.state == "ready" and seen.endpoint == row.endpoint:
                return
        if repair:
            log.warning("part of the function's runtime objects is gone; applying it again")
        # An update of a function that serves is a rollout: the function stays ready on
        # its old endpoint (generation > observed_generation says a new one is on its way)
        # so the gateway goes on routing to it until the new one serves.
        serving = row.state == State.READY and row.endpoint is not None
        # Secrets join the environment here, and only here: the runtime keeps them as it
        # keeps env (a Kubernetes Secret; the process environment).
        SECRETS.set(row.id, row.secrets.values())
        spec = FunctionSpec(
            id=row.id, owner=row.owner, name=row.name, code=row.code,
            env={**row.env, **row.secrets}, generation=row.generation,
        )  # fmt: skip
        # Start at once; saying "deploying" happens while the process starts (a wake's
        # cold start should not wait for a database write and an event).
        applying = asyncio.create_task(self.runtime.apply(spec))
        if not serving and row.state != State.DEPLOYING:
            # Keep the reason of a failure visible while the next attempt runs.
            try:
                await self._record(row, row.observed_generation, State.DEPLOYING, Observation(
                    state="deploying", reason=row.reason if row.state == State.FAILED else ""))  # fmt: skip
            except BaseException:
                applying.cancel()
                raise
        obs = await applying
        if obs.state == "ready":
            self._ready_since[row.id] = time.monotonic()
            await self._record(row, row.generation, State.READY, obs)
            if obs.after_switch is not None:
                # Recorded and published: the gateway routes to the new endpoint now.
                await obs.after_switch()
            return
        if serving:
            seen = await self.runtime.observe(row.id)
            if seen.state == "ready":
                # The new generation failed but the one before still serves: keep it, say
                # why in the reason, and wait for the user's next update (a script that
                # does not start would fail the same way again).
                log.warning("new generation failed; the previous one keeps serving")
                await self._record(row, row.generation, State.READY, Observation(
                    state="ready", endpoint=seen.endpoint,
                    reason=f"generation {row.generation} did not start, so the previous "
                    f"generation keeps serving; fix the script and update again. {obs.reason}",
                ))  # fmt: skip
                return
        await self._record(row, row.generation, State.FAILED, obs)
        delay = self._backoff(row.id)
        log.warning("function failed; next attempt in %gs", delay)
        self.schedule(row.id, delay=delay)

    # --- events from the runtime -----------------------------------------------------
    async def on_exit(self, function_id: UUID, reason: str) -> None:
        """A function that was serving stopped by itself: record why, restart with back-off."""
        since = self._ready_since.pop(function_id, None)
        if since is not None and time.monotonic() - since > STABLE_AFTER_SECONDS:
            self._failures.pop(function_id, None)
        # Within the reconciles' slots: each holder of a function's lock uses a second
        # database connection, so their number must stay well under the pool's size even
        # when many functions die at once.
        with function_context(function_id), contextlib.suppress(FunctionBusy):
            async with self._slots, self._lock(function_id):
                row = await self.store.get(function_id)
                if row is None or row.desired != Desired.RUNNING:
                    return
                seen = await self.runtime.observe(function_id)
                if seen.state == "ready" and seen.endpoint == row.endpoint:
                    return  # a newer process took over while this report waited
                await self._record(row, row.observed_generation, State.FAILED, Observation(
                    state="failed", reason=reason))  # fmt: skip
        self.schedule(function_id, delay=self._backoff(function_id))

    # --- everything ------------------------------------------------------------------
    async def full_pass(self) -> None:
        managed, partial = await self.runtime.inventory()
        # Only those that should run: a sleeping one is applied in full when it wakes.
        self._repair |= partial
        for function_id in await self.store.needing_reconcile():
            self.schedule(function_id)
        known = await self.store.known_ids()
        for orphan in managed - known:
            self.schedule(orphan)

    async def run_periodically(self) -> None:
        while True:
            try:
                await self.full_pass()
            except Exception:
                log.exception("full reconcile failed; trying again next interval")
            await asyncio.sleep(self.settings.reconcile_interval)
