"""Function state in the database: the deployer is its only writer.

Commands change only what is *desired* (and bump ``generation``); the reconciler records
what it *observed*. Each command carries its JetStream sequence, and a command older than
the last one applied to a function is ignored, so duplicates, redeliveries and reordering
are harmless. Deleted functions stay as tombstones so a late create cannot resurrect them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pyfaas_common.db import FunctionRow, is_postgres, sessionmaker
from pyfaas_common.logs import SECRETS
from pyfaas_common.messages import (
    REDACTED,
    CommandBase,
    CreateFunction,
    DeleteFunction,
    Desired,
    FunctionView,
    SleepFunction,
    State,
    UpdateFunction,
    WakeFunction,
    utcnow,
)
from pyfaas_common.settings import PlatformSettings


class FunctionBusy(Exception):
    """Another deployer replica is reconciling this function now."""

    def __str__(self) -> str:
        return f"function {self.args[0]} is being reconciled by another deployer"


class CommandTooEarly(Exception):
    """The command is about a function whose create has not been applied yet: retry later."""

    def __str__(self) -> str:
        return f"no function {self.args[0]} yet; its create has not arrived"


@dataclass(frozen=True, slots=True)
class Applied:
    row: FunctionRow | None
    changed: bool


def digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class FunctionStore:
    def __init__(self, engine: AsyncEngine, settings: PlatformSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._session = sessionmaker(engine)

    @contextlib.asynccontextmanager
    async def function_lock(self, function_id: UUID) -> AsyncIterator[None]:
        """One reconcile of a function at a time across deployer replicas: a Postgres
        session advisory lock on a connection of its own, outside any transaction (a
        reconcile may wait minutes for a start; no idle transaction stays open meanwhile),
        released at the end or with the connection when a deployer dies. Taken without
        waiting: :class:`FunctionBusy` when another replica holds it, so nobody queues
        behind someone else's slow start. SQLite means one deployer; within a process
        :class:`Reconciler` has its own lock."""
        if not is_postgres(self.engine):
            yield
            return
        key = {"k": int.from_bytes(function_id.bytes[:8], "big", signed=True)}
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            if not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), key):
                raise FunctionBusy(function_id)
            released = False
            try:
                yield
            finally:
                try:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
                    released = True
                finally:
                    if not released:  # never back to the pool still holding the lock
                        await conn.invalidate()

    # --- reads ---------------------------------------------------------------------
    async def get(self, function_id: UUID) -> FunctionRow | None:
        async with self._session() as s:
            return await s.get(FunctionRow, function_id)

    async def list_for(self, owner: str | None) -> list[FunctionRow]:
        """``owner``'s live functions; None: everybody's (an admin's list)."""
        query = select(FunctionRow).where(FunctionRow.state != State.DELETED)
        if owner is not None:
            query = query.where(FunctionRow.owner == owner)
        async with self._session() as s:
            rows = await s.scalars(query.order_by(FunctionRow.created_at))
            return list(rows)

    async def needing_reconcile(self) -> list[UUID]:
        """Every function that is not known to be where it should be, plus every running
        one (a full reconcile also checks that what is there still serves)."""
        async with self._session() as s:
            rows = await s.scalars(select(FunctionRow.id).where(FunctionRow.state != State.DELETED))
            return list(rows)

    async def known_ids(self) -> set[UUID]:
        async with self._session() as s:
            rows = await s.scalars(select(FunctionRow.id).where(FunctionRow.state != State.DELETED))
            return set(rows)

    def view(self, row: FunctionRow) -> FunctionView:
        """The function as the API and the state events show it: secrets by name only,
        and a reason (which may quote the function's output) with their values redacted."""
        secrets = dict(row.secrets or {})
        SECRETS.set(row.id, secrets.values())
        return FunctionView(
            id=row.id,
            user=row.owner,
            name=row.name,
            state=State(row.state),
            desired=Desired(row.desired),
            reason=SECRETS.redact(row.reason, secrets.values()),
            url=self.settings.function_url(row.id),
            endpoint=row.endpoint,
            generation=row.generation,
            observed_generation=row.observed_generation,
            runtime=row.runtime,
            env=dict(row.env),
            secrets=dict.fromkeys(secrets, REDACTED),
            idle_timeout=row.idle_timeout,
            delete_after=row.delete_after,
            visibility="private" if row.visibility == "private" else "public",
            invoke_key_hash=row.invoke_key_hash,
            request_digest=row.request_digest,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # --- commands ------------------------------------------------------------------
    async def apply(self, command: CommandBase, seq: int) -> Applied:
        async with self._session() as s, s.begin():
            row = await s.get(FunctionRow, command.function_id, with_for_update=True)
            if isinstance(command, CreateFunction):
                return await self._create(s, row, command, seq)
            if row is None:
                if isinstance(command, DeleteFunction):
                    s.add(self._tombstone(command, seq))
                    return Applied(None, changed=False)
                raise CommandTooEarly(command.function_id)
            if seq <= row.last_command_seq or row.desired == Desired.DELETED:
                return Applied(row, changed=False)
            row.last_command_seq = seq
            now = utcnow()
            if isinstance(command, UpdateFunction):
                if command.code is not None:
                    row.code, row.code_digest = command.code, digest(command.code)
                if command.env is not None:
                    row.env = dict(command.env)
                if command.secrets is not None:
                    row.secrets = dict(command.secrets)
                if command.visibility is not None:
                    row.visibility = command.visibility
                if command.invoke_key_hash is not None:
                    row.invoke_key_hash = command.invoke_key_hash
                if "idle_timeout" in command.model_fields_set:
                    row.idle_timeout = command.idle_timeout
                if "delete_after" in command.model_fields_set:
                    row.delete_after = command.delete_after
            elif isinstance(command, DeleteFunction):
                row.desired, row.state, row.reason = Desired.DELETED, State.DELETING, ""
                # A deleted function keeps a tombstone row, not its secrets.
                row.secrets, row.invoke_key_hash = {}, None
            elif isinstance(command, SleepFunction):
                if row.desired != Desired.RUNNING:
                    return Applied(row, changed=False)
                row.desired, row.reason = Desired.SLEEPING, command.reason
            elif isinstance(command, WakeFunction):
                if row.desired != Desired.SLEEPING:
                    return Applied(row, changed=False)
                row.desired = Desired.RUNNING
            row.generation += 1
            row.updated_at = now
            return Applied(row, changed=True)

    async def _create(
        self, s: AsyncSession, row: FunctionRow | None, command: CreateFunction, seq: int
    ) -> Applied:
        if row is not None:  # a duplicate, or a create that lost the race to its delete
            return Applied(row, changed=False)
        now = utcnow()
        row = FunctionRow(
            id=command.function_id,
            owner=command.owner,
            name=command.name,
            code=command.code,
            code_digest=digest(command.code),
            env=dict(command.env),
            secrets=dict(command.secrets),
            visibility=command.visibility,
            invoke_key_hash=command.invoke_key_hash,
            request_digest=command.request_digest,
            runtime=command.runtime,
            idle_timeout=command.idle_timeout,
            delete_after=command.delete_after,
            desired=Desired.RUNNING,
            state=State.PENDING,
            reason="",
            endpoint=None,
            generation=1,
            observed_generation=0,
            last_command_seq=seq,
            created_at=command.issued_at,
            updated_at=now,
        )
        s.add(row)
        return Applied(row, changed=True)

    @staticmethod
    def _tombstone(command: CommandBase, seq: int) -> FunctionRow:
        now = utcnow()
        return FunctionRow(
            id=command.function_id, owner="", name="", code="", code_digest="", env={},
            secrets={}, visibility="public", invoke_key_hash=None, runtime="", idle_timeout=None, desired=Desired.DELETED, state=State.DELETED,
            reason="deleted before it was created", endpoint=None, generation=1,
            observed_generation=1, last_command_seq=seq, created_at=now, updated_at=now,
        )  # fmt: skip

    async def give_up(self, command: CommandBase, reason: str) -> FunctionRow | None:
        """A command failed on every delivery: say so on the function. A create that never
        made its row leaves one without code (what it carried may be what failed), failed
        with the reason: the user sees why, and may delete it or update it with code. A
        function that serves goes on serving; its reason says what was given up."""
        async with self._session() as s, s.begin():
            row = await s.get(FunctionRow, command.function_id, with_for_update=True)
            if row is None and isinstance(command, CreateFunction):
                now = utcnow()
                row = FunctionRow(
                    id=command.function_id, owner=command.owner[:63], name=command.name[:63],
                    code="", code_digest="", env={}, secrets={}, visibility=command.visibility,
                    invoke_key_hash=None, runtime=command.runtime[:32],
                    idle_timeout=command.idle_timeout, delete_after=command.delete_after,
                    desired=Desired.RUNNING, state=State.FAILED, reason=reason, endpoint=None,
                    generation=1, observed_generation=1, last_command_seq=0,
                    created_at=now, updated_at=now,
                )  # fmt: skip
                s.add(row)
                return row
            if row is None or row.state == State.DELETED:
                return None
            if row.state != State.READY:
                row.state = State.FAILED
            row.reason, row.updated_at = reason, utcnow()
            return row

    # --- observations --------------------------------------------------------------
    async def observe(
        self,
        function_id: UUID,
        *,
        generation: int,
        state: State,
        reason: str = "",
        endpoint: str | None = None,
    ) -> FunctionRow | None:
        """Record what the reconciler saw for ``generation``; returns the row if anything
        a user can see changed."""
        async with self._session() as s, s.begin():
            row = await s.get(FunctionRow, function_id, with_for_update=True)
            if row is None:
                return None
            before = (row.state, row.reason, row.endpoint, row.observed_generation)
            row.state, row.reason, row.endpoint = state, reason, endpoint
            row.observed_generation = max(row.observed_generation, generation)
            if (row.state, row.reason, row.endpoint, row.observed_generation) == before:
                return None
            row.updated_at = utcnow()
            return row

    async def last_change(self, function_id: UUID) -> datetime | None:
        row = await self.get(function_id)
        return row.updated_at if row else None
