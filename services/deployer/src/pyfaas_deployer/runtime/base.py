"""The contract between the reconciler and a runtime.

The reconciler (``reconcile.py``) calls these methods under the function's lock; a runtime
never writes function state itself. Every method is idempotent: applying what is already
there, or deleting what is already gone, is a success.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
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


ExitCallback = Callable[[UUID, str], Awaitable[None]]
"""Called by a runtime when a function it started stops by itself (with the reason)."""


class Runtime(Protocol):
    name: str

    async def start(self) -> None:
        """Open connections; adopt what a previous deployer left running."""

    async def close(self) -> None: ...

    async def apply(self, spec: FunctionSpec) -> Observation:
        """Make the function run this spec; return once it accepts connections, failed,
        or the start timeout passed."""

    async def sleep(self, function_id: UUID) -> Observation:
        """Stop serving, keep what is needed to wake quickly."""

    async def delete(self, function_id: UUID) -> Observation:
        """Remove everything the runtime holds for the function."""

    async def observe(self, function_id: UUID) -> Observation:
        """What is there now, without changing anything."""

    async def managed(self) -> set[UUID]:
        """Every function the runtime holds something for (for orphan clean-up)."""

    async def logs(self, function_id: UUID, tail: int) -> list[str]: ...
