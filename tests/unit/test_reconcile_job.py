"""The reconciliation job's "run now": one run at a time, budget permitting, started through the scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from revdaemon.connectors.salesforce_wire import IDS_PER_IN_LIST
from revdaemon.domain.reconciliation import Report
from revdaemon.engine.reconcile import ReconciliationJob, RunRefused
from revdaemon.limits import DailyBudget

pytestmark = pytest.mark.anyio


class Runs:
    """The job's run and the scheduler's trigger: the run waits until the test lets it end."""

    def __init__(self, *, leading: bool = True) -> None:
        self.leading = leading
        self.triggered = 0
        self.started = anyio.Event()
        self.finish = anyio.Event()

    def trigger(self) -> bool:
        self.triggered += 1
        return self.leading

    async def run(self) -> Report:
        self.started.set()
        await self.finish.wait()
        return Report(rows=())


def job_for(runs: Runs, budget: DailyBudget, report_path: Path | None = None) -> ReconciliationJob:
    return ReconciliationJob(runs.run, budget=budget, trigger=runs.trigger, report_path=report_path)


class TestRequest:
    async def test_a_second_request_is_refused_until_the_run_ends(self) -> None:
        """Asked for, then running: both refuse another run with the reason; after the run, one may start."""
        runs = Runs()
        job = job_for(runs, DailyBudget(share=0.5))
        assert "started" in await job.request()
        with pytest.raises(RunRefused, match="asked for at"):
            await job.request()
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.run)
            await runs.started.wait()
            with pytest.raises(RunRefused, match="running since"):
                await job.request()
            runs.finish.set()
        assert job.running_since is None
        await job.request()
        assert runs.triggered == 2

    async def test_refused_when_the_budget_has_no_room_for_the_estimate(self, tmp_path: Path) -> None:
        """The last report's accounts make the estimate: two full IN lists and one more are 3 queries, one too many
        here."""
        report = tmp_path / "reconciliation.json"
        accounts = 2 * IDS_PER_IN_LIST + 1
        report.write_text(json.dumps({"rows": [{"account_id": f"001{i:06d}"} for i in range(accounts)]}))
        budget = DailyBudget(share=0.5)
        budget.observe(3_747, 10_000)  # bulk waits from 3,750 used: room for 2 calls
        runs = Runs()
        with pytest.raises(RunRefused, match="about 3 Salesforce calls"):
            await job_for(runs, budget, report).request()
        budget.observe(3_740, 10_000)
        assert "about 3 Salesforce call(s)" in await job_for(runs, budget, report).request()
        assert runs.triggered == 1

    async def test_refused_where_the_scheduler_runs_no_jobs(self) -> None:
        """On a standby replica nothing starts, and a later request is not held back by it."""
        runs = Runs(leading=False)
        job = job_for(runs, DailyBudget(share=0.5))
        with pytest.raises(RunRefused, match="does not lead"):
            await job.request()
        assert job.requested_at is None


class TestRun:
    async def test_deferred_bulk_work_skips_the_nightly_run(self) -> None:
        """The scheduled run itself still waits while the budget defers bulk work."""
        runs = Runs()
        budget = DailyBudget(share=0.5)
        budget.observe(4_000, 10_000)
        assert await job_for(runs, budget).run() is None
        assert not runs.started.is_set()
