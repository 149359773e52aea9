"""The budget planner's hands: stretched poll intervals, the coalescing doorbell, and the /metrics gauges."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from prometheus_client.parser import text_string_to_metric_families

from revdaemon.engine.pacing import CoalescingDoorbell
from revdaemon.engine.scheduler import Scheduler
from revdaemon.limits import DailyBudget
from revdaemon.ops.metrics import Metrics

pytestmark = pytest.mark.anyio


class CountingPoller:
    name = "counting"

    def __init__(self) -> None:
        self.runs = 0

    async def run_once(self, now: datetime | None = None) -> Any:
        self.runs += 1


class TestStretchedPolls:
    async def run(self, factors: list[float], *, interval: float = 60.0) -> tuple[int, Scheduler]:
        """Fire the job once per interval (as the trigger does), with the planner's factor at each firing."""
        now = [0.0]
        scheduler = Scheduler(clock=lambda: now[0])
        poller = CountingPoller()
        factor = [1.0]
        job = scheduler._stretched(poller, interval, lambda: factor[0])
        for tick, value in enumerate(factors):
            now[0], factor[0] = tick * interval, value
            await job()
        return poller.runs, scheduler

    async def test_plenty_left_runs_every_interval(self) -> None:
        assert (await self.run([1.0] * 8))[0] == 8

    @pytest.mark.parametrize(("factor", "runs"), [(2.0, 4), (4.0, 2), (8.0, 1)])
    async def test_a_multiplier_skips_runs_in_between(self, factor: float, runs: int) -> None:
        """Eight intervals at 2x run four times, at 4x twice, at 8x once."""
        ran, scheduler = await self.run([factor] * 8)
        assert ran == runs and scheduler.skipped["counting"] == 8 - runs

    async def test_deferred_polls_never_run_and_resume_at_once(self) -> None:
        """An infinite stretch (polls deferred) skips every run; headroom back, the next firing runs."""
        assert (await self.run([math.inf] * 5 + [1.0]))[0] == 1


class TestCoalescingDoorbell:
    async def test_a_ring_with_no_window_returns_at_once(self) -> None:
        bell = CoalescingDoorbell(window=lambda: 0.0, stopping=lambda: False)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(bell.wait, 30.0)
                await anyio.lowlevel.checkpoint()
                bell.ring()

    async def test_rings_in_the_window_are_gathered_and_a_stop_ends_it(self) -> None:
        """While the window is open more rings do not end the wait; a stop does, at once."""
        stopping = [False]
        bell = CoalescingDoorbell(window=lambda: 30.0, stopping=lambda: stopping[0])
        done = anyio.Event()

        async def waiter() -> None:
            await bell.wait(30.0)
            done.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.lowlevel.checkpoint()
                bell.ring()
                for _ in range(3):
                    await anyio.sleep(0.01)
                    bell.ring()
                await anyio.sleep(0.01)
                assert not done.is_set()
                stopping[0] = True
                bell.ring()
                await done.wait()


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


class TestBudgetGauges:
    def test_defaults_before_any_report(self) -> None:
        """Nothing known: multiplier 1, nothing deferred, no exhaustion sample."""
        metrics = Metrics()
        metrics.set_budget(DailyBudget(share=0.5))
        got = samples(metrics)
        assert got[("revdaemon_poll_interval_multiplier", frozenset())] == 1
        assert {k[1]: v for k, v in got.items() if k[0] == "revdaemon_work_deferred"} == {
            frozenset({("kind", "realtime")}): 0, frozenset({("kind", "poll")}): 0,
            frozenset({("kind", "bulk")}): 0}
        assert not any(name == "revdaemon_api_budget_exhaustion_seconds" for name, _ in got)

    def test_exhaustion_rate_multiplier_and_deferred(self) -> None:
        now = [0.0]
        budget = DailyBudget(share=0.5, clock=lambda: now[0])
        budget.observe(4_000, 10_000)
        now[0] = 60.0
        budget.observe(4_060, 10_000)
        metrics = Metrics()
        metrics.set_budget(budget)
        got = samples(metrics)
        sf = frozenset({("api", "salesforce")})
        assert got[("revdaemon_api_budget_exhaustion_seconds", sf)] == pytest.approx(5_940.0)
        assert got[("revdaemon_api_usage_per_minute", sf)] == pytest.approx(60.0)
        assert got[("revdaemon_poll_interval_multiplier", frozenset())] == 4
        assert got[("revdaemon_work_deferred", frozenset({("kind", "bulk")}))] == 1
        assert got[("revdaemon_work_deferred", frozenset({("kind", "poll")}))] == 0
        now[0] = 10_000.0  # the window forgot the calls: no projection at this rate, no sample
        metrics.set_budget(budget)
        assert ("revdaemon_api_budget_exhaustion_seconds", sf) not in samples(metrics)
