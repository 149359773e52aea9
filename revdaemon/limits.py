"""How hard revdaemon may push each API: token buckets, concurrency caps, the Salesforce daily budget, and
the one retry loop (exponential backoff with full jitter, Retry-After honoured, bounded in attempts and
in total time).

No other module sleeps-and-retries on its own; every retry in the daemon goes through `retrying`.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import structlog
from aiolimiter import AsyncLimiter

from revdaemon.config import ApiRate
from revdaemon.domain.budget import BudgetPlan, UsageRate, plan_budget
from revdaemon.domain.budget import Priority as Priority  # re-exported: the connectors and engine import it here
from revdaemon.errors import Retryable, Throttled

log = structlog.get_logger("revdaemon.limits")

T = TypeVar("T")


class ApiLimiter:
    """A token bucket (requests per second, with a burst) and a cap on requests in flight, for one API."""

    def __init__(self, rate: ApiRate) -> None:
        self._bucket = AsyncLimiter(rate.burst, time_period=rate.burst / rate.requests_per_second)
        self._in_flight = anyio.CapacityLimiter(rate.max_concurrency)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._in_flight:
            await self._bucket.acquire()
            yield


@dataclass
class DailyBudget:
    """Salesforce's rolling 24-hour request allocation, as the `Sforce-Limit-Info` header last reported it.

    `plan()` is the planner's view of it (`domain/budget.py`): bulk work waits first, then polling; past
    `share` of the allocation only real-time work proceeds; after REQUEST_LIMIT_EXCEEDED nothing does
    until `paused_until`.
    """

    share: float
    used: int | None = None
    total: int | None = None
    paused_until: float | None = None  # time.monotonic() seconds
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rate: UsageRate = field(default_factory=UsageRate, repr=False)

    def observe(self, used: int, total: int) -> None:
        self.used, self.total = used, total
        self.rate.observe(self.clock(), used)

    def pause(self, seconds: float) -> None:
        until = self.clock() + seconds
        self.paused_until = max(until, self.paused_until or 0.0)

    def pause_left(self) -> float:
        """Seconds until the REQUEST_LIMIT_EXCEEDED pause ends (0: no pause)."""
        return max(0.0, (self.paused_until or 0.0) - self.clock()) if self.paused_until is not None else 0.0

    @property
    def used_share(self) -> float | None:
        if self.used is None or not self.total:
            return None
        return self.used / self.total

    def plan(self) -> BudgetPlan:
        now = self.clock()
        return plan_budget(used=self.used, total=self.total, share=self.share, per_second=self.rate.per_second(now),
                           paused=self.paused_until is not None and now < self.paused_until)

    def allows(self, priority: Priority) -> bool:
        return priority not in self.plan().deferred


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_total: float = 300.0  # seconds from the first attempt; past it the error is raised

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads retrying clients.
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; an HTTP-date form is ignored (rare from these APIs; backoff still applies)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    operation: str,
    retry_if: Callable[[Retryable], bool] = lambda exc: True,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `call`, retrying `Retryable` errors that `retry_if` accepts, per `policy`; anything else, or the
    last failure, is raised."""
    rng = rng or random.Random()
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Retryable as exc:
            if not retry_if(exc):
                raise
            retry_after = exc.retry_after if isinstance(exc, Throttled) else None
            wait = policy.delay(attempt, retry_after, rng)
            if attempt >= policy.max_attempts or clock() - started + wait > policy.max_total:
                log.warning("retries_exhausted", operation=operation, attempts=attempt, error=exc.message)
                raise
            log.info("retry_scheduled", operation=operation, attempt=attempt, wait_seconds=round(wait, 3),
                     error=exc.message, error_code=exc.context.error_code, status=exc.context.status)
            await sleep(wait)
