"""Wake on request: a call to a sleeping function wakes it and goes through.

Called by :func:`proxy.ready_route` when a route is ``sleeping`` (or is being woken).
The first request publishes one ``WakeFunction`` command; its id is derived from the
function and the generation it sleeps at, so a burst — in one worker or across several —
stores one command in JetStream. Every request that arrives meanwhile waits on the same
future, up to ``PYFAAS_WAKE_MAX_WAITING`` per function. The deployer's state events
(:meth:`Waker.on_event`, fed by :mod:`app`) settle it: ``ready`` lets them all through,
``failed`` answers them all at once with 502 and the reason, and a wake that takes longer
than ``PYFAAS_WAKE_TIMEOUT`` answers 503 with ``Retry-After``. Each woken request learns
how long the wake took (``X-Pyfaas-Cold-Start``), and the phases go to ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from uuid import UUID

from nats.aio.client import Client

from pyfaas_common import bus
from pyfaas_common.messages import StateChanged, WakeFunction
from pyfaas_common.problems import Problem, not_found, unavailable
from pyfaas_common.subjects import Subjects

from .metrics import Metrics
from .routes import Route, RouteTable
from .settings import GatewaySettings

log = logging.getLogger(__name__)

_WAKE_IDS = uuid.UUID("5f0e3c1a-2b4d-4e6f-8a9b-0c1d2e3f4a5b")


@dataclass(slots=True)
class _Wake:
    future: asyncio.Future[Route]
    started: float = field(default_factory=time.monotonic)
    deploying_at: float | None = None
    waiting: int = 0


class Waker:
    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        settings: GatewaySettings,
        routes: RouteTable,
        metrics: Metrics,
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.settings = settings
        self.routes = routes
        self.metrics = metrics
        self._wakes: dict[UUID, _Wake] = {}
        self.commands_published = 0

    def waking(self, function_id: UUID) -> bool:
        return function_id in self._wakes

    async def wake(self, route: Route) -> tuple[Route, float]:
        """The route once the function is ready, and the seconds this request waited."""
        fid = route.function_id
        wake = self._wakes.get(fid)
        if wake is None:
            wake = _Wake(asyncio.get_running_loop().create_future())
            self._wakes[fid] = wake
            await self._publish(route)
        if wake.waiting >= self.settings.wake_max_waiting:
            raise unavailable(
                f"{wake.waiting} requests are already waiting for this function to wake "
                "(PYFAAS_WAKE_MAX_WAITING); retry in a moment",
                retry_after=2,
            )
        arrived = time.monotonic()
        wake.waiting += 1
        try:
            async with asyncio.timeout(self.settings.wake_timeout):
                ready = await asyncio.shield(wake.future)
        except TimeoutError:
            raise unavailable(
                f"the function is still waking after {self.settings.wake_timeout:g}s "
                "(PYFAAS_WAKE_TIMEOUT); retry in a moment",
                retry_after=max(1, round(self.settings.wake_timeout / 2)),
            ) from None
        finally:
            wake.waiting -= 1
            if wake.future.done() and wake.waiting == 0 and self._wakes.get(fid) is wake:
                del self._wakes[fid]
        return ready, time.monotonic() - arrived

    async def _publish(self, route: Route) -> None:
        command = WakeFunction(
            function_id=route.function_id,
            command_id=uuid.uuid5(_WAKE_IDS, f"{route.function_id}:{route.generation}"),
        )
        try:
            await bus.publish_command(self.nc, self.subjects, command, timeout=5.0)
        except Exception as exc:
            wake = self._wakes.pop(route.function_id, None)
            if wake is not None and not wake.future.done():
                wake.future.set_exception(
                    unavailable("could not ask the deployer to wake the function; retry", 2)
                )
                wake.future.exception()
            log.warning("wake command not stored", extra={"error": repr(exc)})
            raise unavailable("could not ask the deployer to wake the function; retry", 2) from exc
        self.commands_published += 1
        log.info("waking function", extra={"function_id": str(route.function_id)})

    def on_event(self, event: StateChanged) -> None:
        fn = event.function
        wake = self._wakes.get(fn.id)
        if wake is None or wake.future.done():
            return
        now = time.monotonic()
        if fn.state == "deploying" and wake.deploying_at is None:
            wake.deploying_at = now
        elif fn.state == "ready" and fn.endpoint:
            route = Route.from_view(fn)
            wake.future.set_result(route)
            self._observe(wake, now)
        elif fn.state == "failed":
            wake.future.set_exception(
                Problem(
                    502,
                    "Function failed to wake",
                    fn.reason or "the function failed while waking",
                    "wake-failed",
                )
            )
            wake.future.exception()  # the waiters re-raise it; none may be left
        elif fn.state in ("deleting", "deleted"):
            wake.future.set_exception(not_found(f"the function is {fn.state}"))
            wake.future.exception()
        if wake.future.done() and wake.waiting == 0:
            self._wakes.pop(fn.id, None)

    def _observe(self, wake: _Wake, ready_at: float) -> None:
        cold = self.metrics.cold_start
        cold.labels("total").observe(ready_at - wake.started)
        if wake.deploying_at is not None:
            cold.labels("command").observe(wake.deploying_at - wake.started)
            cold.labels("start").observe(ready_at - wake.deploying_at)
