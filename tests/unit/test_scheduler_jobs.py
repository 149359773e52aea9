"""Scheduled jobs report in revdaemon's own log: a failure as one structured line, a shutdown as no error."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import structlog

from revdaemon.engine.scheduler import Scheduler

pytestmark = pytest.mark.anyio


class _Poll:
    def __init__(self, name: str, *, fail: bool) -> None:
        self.name = name
        self.fail = fail
        self.started = anyio.Event()

    async def run_once(self, now: Any = None) -> Any:
        self.started.set()
        if self.fail:
            raise RuntimeError("the poll broke")
        await anyio.sleep_forever()  # a poll in its back-off when the daemon stops


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # APScheduler's AsyncIOScheduler


async def test_a_poll_cancelled_by_shutdown_is_not_an_error_and_a_failing_one_is_ours(
        caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler()
    waiting, failing = _Poll("waiting", fail=False), _Poll("failing", fail=True)
    scheduler.add_interval(waiting, 60)
    scheduler.add_interval(failing, 60)
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.INFO, logger="apscheduler"):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            with anyio.fail_after(5):
                await waiting.started.wait()
                await failing.started.wait()
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        await anyio.sleep(0.05)  # the cancelled job's task finishes on the loop
    assert {(e["event"], e.get("job")) for e in logs} >= {("scheduled_job_failed", "failing"),
                                                          ("scheduled_job_cancelled", "waiting")}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # nothing from APScheduler itself


async def test_shutdown_amid_retries_logs_one_line_per_job_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Several jobs asleep in their retry back-off when the daemon stops: exactly one structured
    `scheduled_job_cancelled` line each, nothing at error level, and no record from APScheduler or asyncio."""
    scheduler = Scheduler()
    polls = [_Poll(f"poll-{i}", fail=False) for i in range(3)]
    for poll in polls:
        scheduler.add_interval(poll, 60)
    scheduler.add_cron("nightly", "0 3 * * *", polls[0].run_once)  # a cron job that never came due
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            with anyio.fail_after(5):
                for poll in polls:
                    await poll.started.wait()
            tg.cancel_scope.cancel()
        await anyio.sleep(0.05)  # the cancelled jobs' tasks finish on the loop
    cancelled = sorted(e["job"] for e in logs if e["event"] == "scheduled_job_cancelled")
    assert cancelled == ["poll-0", "poll-1", "poll-2"]
    assert not [e for e in logs if e["log_level"] in ("error", "critical") or "exc_info" in e]
    assert not [r for r in caplog.records if r.name.startswith(("apscheduler", "asyncio")) and
                (r.levelno >= logging.WARNING or r.exc_info)]


class _Once:
    name = "once"

    def __init__(self) -> None:
        self.runs = 0
        self.ran = anyio.Event()

    async def run_once(self, now: Any = None) -> Any:
        self.runs += 1
        self.ran.set()


class TestRunNow:
    async def test_a_nightly_job_runs_at_once_and_keeps_its_schedule(self) -> None:
        """Asked to run now, a cron job runs at once, and its next run is the cron's again."""
        scheduler = Scheduler()
        job = _Once()
        scheduler.add_cron("nightly", "30 2 * * *", job.run_once)
        scheduler.start()
        try:
            nightly = scheduler.next_run_at("nightly")
            assert scheduler.run_now("nightly") is True
            with anyio.fail_after(5):
                await job.ran.wait()
            for _ in range(100):  # APScheduler sets the next run time just after the job is submitted
                if scheduler.next_run_at("nightly") == nightly:
                    break
                await anyio.sleep(0.01)
            assert scheduler.next_run_at("nightly") == nightly and job.runs == 1
        finally:
            scheduler.shutdown()

    async def test_nothing_runs_while_paused_or_for_an_unknown_job(self) -> None:
        """A paused scheduler (a standby replica) and an unknown job id refuse, and nothing runs."""
        scheduler = Scheduler()
        job = _Once()
        scheduler.add_cron("nightly", "30 2 * * *", job.run_once)
        assert scheduler.run_now("nightly") is False  # not started
        scheduler.start(paused=True)
        try:
            assert scheduler.run_now("nightly") is False and scheduler.run_now("other") is False
            await anyio.sleep(0.05)
            assert job.runs == 0
        finally:
            scheduler.shutdown()
