"""NATS subject and JetStream stream names, all derived from ``PYFAAS_NATS_PREFIX``.

Every service builds its names through :class:`Subjects` so that two installations on one
NATS server (or two test runs) never see each other's messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

CommandVerb = Literal["create", "update", "delete", "sleep", "wake"]
QueryVerb = Literal["list", "get", "logs", "logs_follow"]


@dataclass(frozen=True, slots=True)
class Subjects:
    prefix: str = "faas"

    # --- streams -----------------------------------------------------------------
    @property
    def command_stream(self) -> str:
        return f"{self._stream_prefix}_CMD"

    @property
    def event_stream(self) -> str:
        return f"{self._stream_prefix}_EVENT"

    @property
    def access_stream(self) -> str:
        return f"{self._stream_prefix}_ACCESS"

    @property
    def _stream_prefix(self) -> str:
        return self.prefix.upper()

    # --- commands: {prefix}.cmd.{verb}.{function_id} -------------------------------
    def command(self, verb: CommandVerb, function_id: UUID | str) -> str:
        return f"{self.prefix}.cmd.{verb}.{function_id}"

    @property
    def all_commands(self) -> str:
        return f"{self.prefix}.cmd.>"

    def commands_for(self, function_id: UUID | str) -> str:
        return f"{self.prefix}.cmd.*.{function_id}"

    # --- events: {prefix}.event.{function_id}.{state} --------------------------------
    def event(self, function_id: UUID | str, state: str) -> str:
        return f"{self.prefix}.event.{function_id}.{state}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.event.>"

    # --- access records: {prefix}.access.{function_id} -------------------------------
    def access(self, function_id: UUID | str) -> str:
        return f"{self.prefix}.access.{function_id}"

    @property
    def all_access(self) -> str:
        return f"{self.prefix}.access.>"

    # --- queries: core request/reply, queue group "deployer" -------------------------
    def query(self, verb: QueryVerb) -> str:
        return f"{self.prefix}.query.{verb}"

    # --- one log follow: {prefix}.logs.{stream}.{lines,control} (see LogsFollowQuery) -----
    def logs_lines(self, stream: UUID | str) -> str:
        """Deployer to API: the lines of one follow, and its heartbeats."""
        return f"{self.prefix}.logs.{stream}.lines"

    def logs_control(self, stream: UUID | str) -> str:
        """API to deployer: keepalives of one follow, and its stop."""
        return f"{self.prefix}.logs.{stream}.control"

    # --- durable consumer names ------------------------------------------------------
    deployer_durable: str = "deployer"
    reaper_durable: str = "reaper"
