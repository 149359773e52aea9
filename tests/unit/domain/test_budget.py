"""The API budget planner: thresholds, the projection, the multiplier, and DailyBudget on top of it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from revdaemon.domain.budget import (
    MAX_MULTIPLIER,
    BudgetPlan,
    Priority,
    UsageRate,
    bulk_refusal,
    describe_seconds,
    multiplier_for,
    plan_budget,
)
from revdaemon.limits import DailyBudget

TOTAL = 10_000


def plan_at(used: int, *, share: float = 0.5, per_second: float = 0.0, paused: bool = False) -> BudgetPlan:
    return plan_budget(used=used, total=TOTAL, share=share, per_second=per_second, paused=paused)


class TestThresholds:
    def test_unknown_budget_defers_nothing(self) -> None:
        """Before any response reported usage, everything runs at its configured pace."""
        plan = plan_budget(used=None, total=None, share=0.5)
        assert plan.deferred == frozenset() and plan.multiplier == 1 and plan.exhaustion_seconds is None
        assert plan.left is None and plan.poll_stretch == 1.0

    @pytest.mark.parametrize(("used", "multiplier", "deferred"), [
        (0, 1, set()),
        (2_400, 1, set()),  # 52 % of the share left
        (2_500, 2, set()),  # half of the share left: polls stretch before anything waits
        (3_700, 2, set()),  # 26 % left
        (3_750, 4, {Priority.BULK}),  # a quarter left: backfill and reconciliation wait
        (4_500, 8, {Priority.BULK}),  # 10 % left
        (5_000, 8, {Priority.BULK, Priority.POLL}),  # the share spent: only real-time work proceeds
        (9_999, 8, {Priority.BULK, Priority.POLL}),
        (10_000, 8, {Priority.BULK, Priority.POLL}),  # real-time still tries: Salesforce says when it is over
    ])
    def test_work_waits_in_order(self, used: int, multiplier: int, deferred: set[Priority]) -> None:
        """Polls stretch first, then bulk work waits, then polls; real-time work never waits on our figures."""
        plan = plan_at(used)
        assert plan.multiplier == multiplier
        assert plan.deferred == frozenset(deferred)

    def test_the_hard_limit_defers_everything(self) -> None:
        """After REQUEST_LIMIT_EXCEEDED (the pause) nothing is sent, real-time work included."""
        plan = plan_at(1_000, paused=True)
        assert plan.deferred == frozenset(Priority) and plan.exhaustion_seconds == 0.0
        assert plan.multiplier == MAX_MULTIPLIER and math.isinf(plan.poll_stretch)

    def test_deferred_work_in_words(self) -> None:
        """Operators read what waits, bulk first; polls deferred stretch to infinity."""
        plan = plan_at(5_000)
        assert plan.deferred_work == ["backfill and reconciliation", "polling"]
        assert math.isinf(plan.poll_stretch)
        assert plan_at(4_000).deferred_work == ["backfill and reconciliation"]

    def test_the_old_name_of_poll(self) -> None:
        """Priority.BACKGROUND (the name before bulk was split off) is polling."""
        assert Priority.BACKGROUND is Priority.POLL

    @given(st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1))
    def test_multiplier_never_falls_as_less_is_left(self, a: float, b: float) -> None:
        """The less of the share is left, the longer the intervals: monotonic, from 1 to the maximum."""
        more, less = max(a, b), min(a, b)
        assert 1 <= multiplier_for(more) <= multiplier_for(less) <= MAX_MULTIPLIER

    @given(st.integers(min_value=0, max_value=TOTAL), st.integers(min_value=0, max_value=TOTAL))
    def test_deferral_only_grows_with_use(self, a: int, b: int) -> None:
        """Spending more never lets more kinds of work through."""
        assert plan_at(min(a, b)).deferred <= plan_at(max(a, b)).deferred


class TestProjection:
    def test_exhaustion_is_what_is_left_over_the_rate(self) -> None:
        """2,000 calls left at 10 calls/s: spent in 200 s."""
        plan = plan_at(8_000, per_second=10.0)
        assert plan.exhaustion_seconds == pytest.approx(200.0) and plan.per_minute == pytest.approx(600.0)

    def test_no_rate_no_projection(self) -> None:
        """At no recent use the allocation is not spent at this rate."""
        assert plan_at(8_000, per_second=0.0).exhaustion_seconds is None
        assert describe_seconds(None) == "not at this rate"

    def test_spent_is_now(self) -> None:
        assert plan_at(TOTAL + 5, per_second=1.0).exhaustion_seconds == 0.0

    @pytest.mark.parametrize(("seconds", "text"), [
        (30, "30 s"), (600, "10 min"), (3 * 3600 + 12 * 60, "3 h 12 min"), (3 * 86_400, "3 days"),
    ])
    def test_durations_in_words(self, seconds: float, text: str) -> None:
        assert describe_seconds(seconds) == text


class TestBulkRefusal:
    def test_room_left_allows_the_run(self) -> None:
        """With the allowance far from where bulk waits, a run of a few calls may start."""
        assert bulk_refusal(plan_at(1_000), 3) is None

    def test_unknown_budget_allows_the_run(self) -> None:
        """Before any response reported the allocation, nothing is refused on a guess."""
        assert bulk_refusal(plan_budget(used=None, total=None, share=0.5), 50) is None

    def test_deferred_bulk_work_is_refused_with_the_figures(self) -> None:
        """Past three quarters of the share, bulk waits: the reason gives used, total and the limit."""
        reason = bulk_refusal(plan_at(4_000), 1)
        assert reason is not None and "4000 of 10000" in reason and "3750" in reason

    def test_calls_that_would_reach_the_limit_are_refused(self) -> None:
        """A run whose own calls would bring the budget to the bulk limit is refused before it starts."""
        assert bulk_refusal(plan_at(3_700), 49) is None
        reason = bulk_refusal(plan_at(3_700), 50)
        assert reason is not None and "about 50 Salesforce calls" in reason

    def test_the_hard_limit_says_salesforce_refused(self) -> None:
        """While Salesforce's own limit pauses everything, the reason says so."""
        reason = bulk_refusal(plan_at(100, paused=True), 1)
        assert reason is not None and "daily limit is reached" in reason


class TestUsageRate:
    def test_rate_from_reported_usage(self) -> None:
        """The org's figure rising by 600 over 10 minutes is 1 call/s."""
        rate = UsageRate(window_seconds=900)
        for minute in range(11):
            rate.observe(minute * 60.0, 1_000 + minute * 60)
        assert rate.per_second(600.0) == pytest.approx(1.0)

    def test_a_short_burst_is_spread_over_the_minimum_span(self) -> None:
        """100 calls in 2 s at start-up is not read as 50 calls/s."""
        rate = UsageRate(min_span_seconds=60)
        rate.observe(0.0, 0)
        rate.observe(2.0, 100)
        assert rate.per_second(2.0) == pytest.approx(100 / 60)

    def test_decays_when_idle_and_forgets_the_window(self) -> None:
        rate = UsageRate(window_seconds=900)
        rate.observe(0.0, 0)
        rate.observe(60.0, 60)
        assert rate.per_second(120.0) == pytest.approx(0.5)
        assert rate.per_second(2_000.0) == 0.0

    def test_a_falling_figure_is_no_negative_rate(self) -> None:
        """The rolling 24 h window lets old calls go: the figure may drop."""
        rate = UsageRate()
        rate.observe(0.0, 500)
        rate.observe(120.0, 400)
        assert rate.per_second(120.0) == 0.0

    def test_one_sample_a_second(self) -> None:
        rate = UsageRate()
        for n in range(1_000):
            rate.observe(10.0 + n / 1_000, n)
        assert len(rate._samples) == 1 and rate._samples[0] == (10.0, 999)


class TestDailyBudget:
    def test_allows_follows_the_plan(self) -> None:
        """DailyBudget reads its plan: bulk waits before polls; real-time goes until the pause."""
        now = [0.0]
        budget = DailyBudget(share=0.5, clock=lambda: now[0])
        assert all(budget.allows(p) for p in Priority)
        budget.observe(4_000, TOTAL)
        assert budget.allows(Priority.POLL) and not budget.allows(Priority.BULK)
        budget.observe(5_000, TOTAL)
        assert budget.allows(Priority.REALTIME) and not budget.allows(Priority.POLL)
        budget.pause(30)
        assert not budget.allows(Priority.REALTIME)
        now[0] = 31.0
        assert budget.allows(Priority.REALTIME)

    def test_plan_projects_from_what_responses_reported(self) -> None:
        now = [0.0]
        budget = DailyBudget(share=0.5, clock=lambda: now[0])
        budget.observe(1_000, TOTAL)
        now[0] = 120.0
        budget.observe(1_120, TOTAL)
        plan = budget.plan()
        assert plan.per_minute == pytest.approx(60.0)
        assert plan.exhaustion_seconds == pytest.approx((TOTAL - 1_120) / 1.0)
