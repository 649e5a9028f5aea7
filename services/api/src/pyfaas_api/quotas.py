"""Per-user limits the API enforces before it stores a create: how many creates a minute
(:class:`CreateRate`), and how many functions (:func:`check_function_count`).

Called by :mod:`routes`. Both are deliberately simple and say so:

- the rate is counted in this API process's memory (a sliding window per user), so with N
  API replicas a user gets up to N times the limit; it exists to stop a runaway script,
  not to bill anyone;
- the count is the deployer's list of the user's functions, so creates still on their way
  to the deployer are not counted: a burst can overshoot by the creates in flight (at most
  the rate limit's worth), and the next create is refused.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable

from pyfaas_common.problems import Problem

WINDOW_SECONDS = 60.0
_MAX_USERS = 100_000


class CreateRate:
    """At most ``limit`` creates per user in any :data:`WINDOW_SECONDS`."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def take(self, user: str) -> float:
        """Count one create for ``user`` now (returns its stamp, for :meth:`give_back`), or
        raise 429 with the seconds until the oldest one leaves the window."""
        now = self.clock()
        if not self.limit:
            return now
        stamps = self._seen.get(user)
        if stamps is None:
            if len(self._seen) > _MAX_USERS:
                self._forget_idle(now)
            stamps = self._seen[user] = deque()
        while stamps and stamps[0] <= now - WINDOW_SECONDS:
            stamps.popleft()
        if len(stamps) >= self.limit:
            retry = max(1, math.ceil(stamps[0] + WINDOW_SECONDS - now))
            raise Problem(
                429,
                "Too many creates",
                f"{user} made {len(stamps)} creates in the last minute; the limit is "
                f"{self.limit} (PYFAAS_MAX_CREATES_PER_MINUTE). Retry in {retry}s",
                "quota-create-rate",
                headers={"Retry-After": str(retry)},
                extra={"limit": self.limit, "retry_after": retry},
            )
        stamps.append(now)
        return now

    def give_back(self, user: str, stamp: float) -> None:
        """A create that was refused after all (not stored) does not count."""
        stamps = self._seen.get(user)
        if stamps is not None:
            with contextlib.suppress(ValueError):
                stamps.remove(stamp)

    def _forget_idle(self, now: float) -> None:
        for user in [u for u, s in self._seen.items() if not s or s[-1] <= now - WINDOW_SECONDS]:
            del self._seen[user]


def check_function_count(user: str, count: int, limit: int) -> None:
    if limit and count >= limit:
        raise Problem(
            403,
            "Quota exceeded",
            f"{user} has {count} functions; the limit is {limit} "
            "(PYFAAS_MAX_FUNCTIONS_PER_USER). Delete one first",
            "quota-functions",
            extra={"limit": limit, "functions": count},
        )
