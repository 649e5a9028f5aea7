"""The versioned message bodies that travel over NATS, one pydantic model each.

These are the event contract: the AsyncAPI document FastStream generates from them is
published in ``docs/asyncapi.json``. Every body carries ``"v": 1``; a consumer refuses a
version it does not know instead of guessing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class State(StrEnum):
    """Where a function is, as the deployer last observed it."""

    PENDING = "pending"
    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"
    SLEEPING = "sleeping"
    DELETING = "deleting"
    DELETED = "deleted"


class Desired(StrEnum):
    """Where a user (or the reaper) wants a function to be."""

    RUNNING = "running"
    SLEEPING = "sleeping"
    DELETED = "deleted"


Visibility = Literal["public", "private"]
"""Who may call a function through the gateway: anyone, or its owner (and admins) and
holders of its invoke key."""

REDACTED = "********"
"""What a secret's value reads as wherever it is shown (API answers, state events)."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = 1


# --- commands (JetStream, {prefix}.cmd.{verb}.{function_id}) ---------------------------


class CommandBase(Message):
    kind: str
    """The verb, also the subject's third token; each command narrows it to a literal."""
    command_id: UUID = Field(default_factory=uuid4, description="Also the Nats-Msg-Id header.")
    function_id: UUID
    issued_at: datetime = Field(default_factory=utcnow)


class CreateFunction(CommandBase):
    kind: Literal["create"] = "create"
    owner: str
    name: str
    code: str
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict, description="Environment variables whose values are never shown."
    )
    idle_timeout: int | None = None
    delete_after: int | None = None
    runtime: str = "local"
    visibility: Visibility = "public"
    invoke_key_hash: str | None = Field(
        default=None, description="SHA-256 (hex) of the function's invoke key; the key is not kept."
    )
    request_digest: str | None = Field(
        default=None,
        description="SHA-256 (hex) of a create request sent with an Idempotency-Key: a "
        "retry with the same key must carry the same request.",
    )


class UpdateFunction(CommandBase):
    """New code or settings; fields left out keep their value."""

    kind: Literal["update"] = "update"
    code: str | None = None
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = None
    idle_timeout: int | None = None
    delete_after: int | None = None
    visibility: Visibility | None = None
    invoke_key_hash: str | None = None
    """Set: a new invoke key replaces the old one (the API made it)."""


class DeleteFunction(CommandBase):
    kind: Literal["delete"] = "delete"


class SleepFunction(CommandBase):
    kind: Literal["sleep"] = "sleep"
    reason: str = ""


class WakeFunction(CommandBase):
    kind: Literal["wake"] = "wake"


Command = Annotated[
    CreateFunction | UpdateFunction | DeleteFunction | SleepFunction | WakeFunction,
    Field(discriminator="kind"),
]


# --- what the deployer tells everybody (JetStream, {prefix}.event.{id}.{state}) --------


class FunctionView(Message):
    """A function as users see it: the API returns this, the state events carry it."""

    id: UUID
    user: str
    name: str
    state: State
    desired: Desired
    reason: str = ""
    url: str = ""
    endpoint: str | None = Field(
        default=None, description="Where the gateway reaches the function; internal."
    )
    generation: int
    observed_generation: int
    runtime: str
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict, description="The secret variables' names; every value is REDACTED."
    )
    idle_timeout: int | None = None
    delete_after: int | None = None
    visibility: Visibility = "public"
    invoke_key_hash: str | None = Field(
        default=None, description="For the gateway; internal: the API never returns it."
    )
    request_digest: str | None = Field(
        default=None, description="Internal: the API never returns it."
    )
    created_at: datetime
    updated_at: datetime


class StateChanged(Message):
    function: FunctionView
    at: datetime = Field(default_factory=utcnow)


# --- access records (JetStream, {prefix}.access.{function_id}) -------------------------


class AccessRecord(Message):
    """What the gateway saw of one function during one interval."""

    function_id: UUID
    window_start: datetime
    window_end: datetime
    calls: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    in_flight: int = 0
    open_streams: int = 0
    last_access_at: datetime


# --- reads (core NATS request/reply, queue group "deployer") ---------------------------


class GetQuery(Message):
    id: UUID
    include_deleted: bool = Field(
        default=False,
        description="Answer with a deleted function's tombstone (state deleted) too, "
        "rather than not found.",
    )


class ListQuery(Message):
    user: str | None = Field(default=None, description="None: every user's (for admins).")


class LogsQuery(Message):
    id: UUID
    tail: int = Field(default=100, ge=1, le=10_000)


class QueryError(Message):
    status: int
    title: str
    detail: str


class GetReply(Message):
    function: FunctionView | None = None
    error: QueryError | None = None


class ListReply(Message):
    functions: list[FunctionView] = Field(default_factory=list)
    error: QueryError | None = None


class LogsReply(Message):
    lines: list[str] = Field(default_factory=list)
    error: QueryError | None = None


# --- following logs (core NATS, {prefix}.query.logs_follow then {prefix}.logs.{stream}.*) --
#
# The API picks a stream id, subscribes to ``logs.{stream}.lines`` and asks on
# ``query.logs_follow``; the deployer that takes the request answers at once (or with the
# error, e.g. 404), then publishes :class:`LogsChunk` messages to the lines subject: the
# tail first, each new batch of lines, and an empty chunk every ``heartbeat`` seconds when
# there is nothing to say. The API publishes :class:`LogsFollowControl` to
# ``logs.{stream}.control`` as often; each side gives up on the other after three silent
# heartbeats, so a vanished API or deployer never leaves the other following forever.


class LogsFollowQuery(Message):
    id: UUID
    tail: int = Field(default=100, ge=0, le=10_000)
    stream: UUID = Field(description="Names the lines and control subjects of this follow.")
    heartbeat: float = Field(default=5.0, gt=0, le=60)


class LogsFollowReply(Message):
    error: QueryError | None = None


class LogsChunk(Message):
    seq: int = Field(description="1, 2, 3... per stream, so that a lost message is noticed.")
    lines: list[str] = Field(default_factory=list)
    end: bool = False
    reason: str = Field(default="", description="With end: why the follow ended.")


class LogsFollowControl(Message):
    stop: bool = False
    """False: a keepalive (the API still has a reader); True: the reader went away."""
