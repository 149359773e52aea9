"""The API budget planner: one view of what Salesforce's daily allocation still allows, and what waits.

Pure: no I/O and no clock of its own (callers pass the time). `limits.DailyBudget` feeds it what each
Salesforce response's `Sforce-Limit-Info` reported; the client, the scheduler, the workers, `/metrics`,
`revdaemon status` and the console read its `BudgetPlan`.

Order of work, first served first: real-time (webhook-driven events and the reads and writes they cause),
then polling, then bulk (backfill and reconciliation). As the daemon's share of the allocation
(`limits.salesforce_daily_budget_share`) is spent, poll intervals and the workers' coalescing windows are
stretched first (2x past half of it, 4x past three quarters, 8x past 90 %); bulk reads are deferred from
three quarters on; polls once the share is spent; real-time work only while Salesforce itself refuses
(REQUEST_LIMIT_EXCEEDED: the hard limit).

Nue documents no daily allocation: its side is the token bucket alone (`limits.nue`), so it has no plan.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Priority(StrEnum):
    REALTIME = "realtime"  # webhook-driven work: deferred only at the hard limit
    POLL = "poll"  # incremental polls: stretched, then deferred once the share is spent
    BULK = "bulk"  # backfill and reconciliation: deferred first
    BACKGROUND = "poll"  # the name POLL had before BULK was split from it (an alias of POLL)


# Share of the daemon's allowance left at or below which poll intervals are multiplied (checked in order).
STRETCH: tuple[tuple[float, int], ...] = ((0.10, 8), (0.25, 4), (0.50, 2))
MAX_MULTIPLIER = STRETCH[0][1]
BULK_DEFERRED_AT = 0.25  # share of the allowance left at or below which backfill and reconciliation wait
DEFERRED_WORK = {  # what an operator reads for each deferred priority
    Priority.BULK: "backfill and reconciliation",
    Priority.POLL: "polling",
    Priority.REALTIME: "real-time work (Salesforce refused: daily limit reached)",
}


@dataclass(frozen=True, kw_only=True)
class BudgetPlan:
    used: int | None  # of the allocation, as last reported; None until a response reported it
    total: int | None
    share: float  # of the allocation the daemon may spend on work other than real-time
    left: float | None  # of that share, 0..1; None while unknown
    per_minute: float  # calls per minute across the org lately (ours and any other integration's)
    exhaustion_seconds: float | None  # until the allocation is spent at that rate; None: not at this rate
    multiplier: int  # poll intervals and coalescing windows are stretched by this
    deferred: frozenset[Priority]

    @property
    def poll_stretch(self) -> float:
        """The factor for poll intervals: `multiplier`, or infinity while polls are deferred."""
        return math.inf if Priority.POLL in self.deferred else float(self.multiplier)

    @property
    def deferred_work(self) -> list[str]:
        """What waits, in words, bulk first."""
        return [text for priority, text in DEFERRED_WORK.items() if priority in self.deferred]


def multiplier_for(left: float | None) -> int:
    """The poll-interval multiplier for the share of the allowance left (1 while unknown or plenty)."""
    if left is None:
        return 1
    for at_most, factor in STRETCH:
        if left <= at_most:
            return factor
    return 1


def plan_budget(*, used: int | None, total: int | None, share: float, per_second: float = 0.0,
                paused: bool = False) -> BudgetPlan:
    """The plan for an allocation of which `used` of `total` is spent, spending `per_second` lately.

    `paused`: Salesforce answered REQUEST_LIMIT_EXCEEDED and its pause has not ended: everything waits."""
    left: float | None = None
    remaining: int | None = None
    if used is not None and total:
        allowance = share * total
        left = min(1.0, max(0.0, 1.0 - used / allowance)) if allowance > 0 else 0.0
        remaining = max(0, total - used)
    deferred: set[Priority] = set()
    if paused:
        deferred = set(Priority)
    elif left is not None:
        if left <= BULK_DEFERRED_AT:
            deferred.add(Priority.BULK)
        if left <= 0.0:
            deferred.add(Priority.POLL)
    exhaustion: float | None = None
    if paused or remaining == 0:
        exhaustion = 0.0
    elif remaining is not None and per_second > 0:
        exhaustion = remaining / per_second
    return BudgetPlan(used=used, total=total, share=share, left=left, per_minute=per_second * 60.0,
                      exhaustion_seconds=exhaustion,
                      multiplier=MAX_MULTIPLIER if paused else multiplier_for(left),
                      deferred=frozenset(deferred))


def bulk_refusal(plan: BudgetPlan, calls: int) -> str | None:
    """Why bulk work of about `calls` Salesforce calls may not start now (None: it may). It may not while bulk
    work is deferred, nor when its own calls would bring the allowance down to where bulk work waits: its
    reads would then be refused half-way. While nothing has reported the allocation yet, it may."""
    if plan.deferred:
        if Priority.REALTIME in plan.deferred:
            return "Salesforce refused further calls (its daily limit is reached); try again once the pause ends"
        if Priority.BULK in plan.deferred:
            return (f"the Salesforce budget holds back bulk work: {plan.used} of {plan.total} calls used today, "
                    f"and bulk work waits once {_bulk_limit(plan)} are")
    if plan.used is None or not plan.total:
        return None
    if plan.used + calls >= _bulk_limit(plan):
        return (f"its about {calls} Salesforce calls would bring the budget to where bulk work waits: "
                f"{plan.used} of {plan.total} calls used today, bulk work waits once {_bulk_limit(plan)} are")
    return None


def _bulk_limit(plan: BudgetPlan) -> int:
    """Calls used at which bulk work is deferred (BULK_DEFERRED_AT of the daemon's share left)."""
    return math.floor((plan.total or 0) * plan.share * (1 - BULK_DEFERRED_AT))


class UsageRate:
    """Calls per second across the org, from the `used` figures Salesforce reports over a sliding window.

    The reported figure counts every integration's calls, so the rate is the org's, not only ours. At most
    one sample a second is kept; the rate decays while no call reports anything (`now` moves on)."""

    def __init__(self, *, window_seconds: float = 900.0, min_span_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self.min_span = min_span_seconds  # a burst in the first seconds is not read as a sustained rate
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, at: float, used: int) -> None:
        if self._samples and at - self._samples[-1][0] < 1.0:
            self._samples[-1] = (self._samples[-1][0], used)
        else:
            self._samples.append((at, used))
        self._prune(at)

    def per_second(self, now: float) -> float:
        self._prune(now)
        if len(self._samples) < 2:
            return 0.0
        (first_at, first_used), (_, last_used) = self._samples[0], self._samples[-1]
        # a figure that went down (the rolling 24 h window let old calls go) is no negative rate
        return max(0, last_used - first_used) / max(now - first_at, self.min_span)

    def _prune(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()


def describe_seconds(seconds: float | None) -> str:
    """`3 h 12 min`, `45 min`, `30 s`; "not at this rate" for None."""
    if seconds is None or math.isinf(seconds):
        return "not at this rate"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"
