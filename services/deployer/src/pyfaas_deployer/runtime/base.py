"""The contract between the reconciler and a runtime.

The reconciler (``reconcile.py``) calls these methods under the function's lock; a runtime
never writes function state itself. Every method is idempotent: applying what is already
there, or deleting what is already gone, is a success.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol
from uuid import UUID

ObservedState = Literal["ready", "failed", "deploying", "sleeping", "absent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """Everything a runtime may use to run a function: an allowlist, nothing else."""

    id: UUID
    owner: str
    name: str
    code: str
    env: dict[str, str] = field(default_factory=dict)
    generation: int = 1

    @property
    def digest(self) -> str:
        """Changes when anything that needs a restart changes (code or environment)."""
        h = hashlib.sha256(self.code.encode())
        h.update(json.dumps(self.env, sort_keys=True).encode())
        return h.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    state: ObservedState
    reason: str = ""
    endpoint: str | None = None
    after_switch: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)
    """For a runtime that moves a function to a new endpoint on an update (local): what
    serves the previous generation, stopped once the reconciler has recorded and published
    the new endpoint, so that the gateway never routes to a process that is gone. None when
    there is nothing to retire (Kubernetes keeps one Service address and rolls pods itself)."""


ExitCallback = Callable[[UUID, str], Awaitable[None]]
"""Called by a runtime when a function it started stops by itself (with the reason)."""


class Runtime(Protocol):
    name: str

    async def start(self) -> None:
        """Open connections; adopt what a previous deployer left running."""

    async def close(self) -> None: ...

    async def apply(self, spec: FunctionSpec) -> Observation:
        """Make the function run this spec; return once it accepts connections, failed,
        or the start timeout passed. When an earlier spec is serving, keep it serving until
        the new one accepts connections, and if the new one fails leave the earlier one
        serving (``observe`` then still says ready): an update must not take a working
        function down."""

    async def sleep(self, function_id: UUID) -> Observation:
        """Stop serving, keep what is needed to wake quickly."""

    async def delete(self, function_id: UUID) -> Observation:
        """Remove everything the runtime holds for the function."""

    async def observe(self, function_id: UUID) -> Observation:
        """What is there now, without changing anything."""

    async def managed(self) -> set[UUID]:
        """Every function the runtime holds something for (for orphan clean-up)."""

    async def inventory(self) -> tuple[set[UUID], set[UUID]]:
        """For the full reconcile, in one look: :meth:`managed`, and those functions of
        which the runtime holds some of what it applies but not all (a part deleted behind
        pyfaas' back), to apply again."""

    async def logs(self, function_id: UUID, tail: int) -> list[str]: ...

    def follow_logs(self, function_id: UUID, tail: int) -> AsyncIterator[list[str]]:
        """The last ``tail`` lines (one batch, possibly empty), then each new batch of lines
        as the function prints them, across restarts and updates; ends when the function is
        deleted. The caller stops it by closing the iterator (``aclose``), which must release
        whatever the runtime holds (a file, an HTTP stream)."""
        ...
