"""The scheduler: APScheduler 3.x on the daemon's own asyncio loop, started as an anyio part.

Jobs only enqueue inbox events (a poller's `run_once`) or call one coroutine (renewal scan, reconciliation);
the work itself happens in the workers. Every job has `coalesce=True` (a backlog of missed runs becomes one
run) and `max_instances=1` (a run never overlaps the previous one, as Home Assistant's coordinator does).
Intervals get a small random jitter so that pollers started together do not hit an API in step.
An interval job may be given a `stretch` (the API budget planner's poll multiplier): a run due sooner
than `stretch` times the interval after the last one is skipped, and an infinite stretch skips every run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskStatus
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from revdaemon.config import ScheduleSettings

log = structlog.get_logger("revdaemon.scheduler")

MAX_JITTER_SECONDS = 5.0  # jitter is 10 % of the interval, at most this
CRON_MISFIRE_GRACE_SECONDS = 3600  # a nightly job missed by a short outage (or a suspend) still runs once


class Pollable(Protocol):
    name: str

    async def run_once(self, now: datetime | None = None) -> Any: ...


class Scheduler:
    """A thin wrapper over `AsyncIOScheduler`; add jobs, then `await tg.start(scheduler.run)`."""

    def __init__(self, *, timezone: str = "UTC", clock: Callable[[], float] = time.monotonic) -> None:
        self.timezone = timezone
        self._scheduler = AsyncIOScheduler(timezone=timezone)
        self._clock = clock
        self.skipped: dict[str, int] = {}  # runs of each stretched job skipped so far

    @classmethod
    def from_settings(cls, settings: ScheduleSettings) -> Scheduler:
        return cls(timezone=settings.timezone)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def job_ids(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    def next_run_at(self, job_id: str) -> datetime | None:
        job = self._scheduler.get_job(job_id)
        return job.next_run_time if job is not None else None

    def add_interval(self, poller: Pollable, seconds: float, *, jitter: float | None = None,
                     run_now: bool = True, stretch: Callable[[], float] | None = None) -> None:
        """Run `poller.run_once()` every `seconds` (first run at start when `run_now`), or every `stretch()`
        times `seconds` while that is more than 1 (math.inf: not at all)."""
        if seconds <= 0:
            raise ValueError("an interval must be positive")
        job: Callable[[], Awaitable[Any]] = poller.run_once
        if stretch is not None:
            job = self._stretched(poller, seconds, stretch)
        job = _reported(poller.name, job)
        spread = min(seconds * 0.1, MAX_JITTER_SECONDS) if jitter is None else jitter
        trigger = IntervalTrigger(seconds=seconds, jitter=spread or None, timezone=self.timezone)
        options: dict[str, Any] = {}
        if run_now:
            options["next_run_time"] = datetime.now(trigger.timezone)
        # a run later than one interval is dropped: the next one reads the same changes anyway
        self._scheduler.add_job(job, trigger, id=poller.name, name=poller.name, coalesce=True,
                                max_instances=1, misfire_grace_time=max(1, int(seconds)), replace_existing=True,
                                **options)

    def _stretched(self, poller: Pollable, seconds: float,
                   stretch: Callable[[], float]) -> Callable[[], Awaitable[Any]]:
        last: float | None = None

        async def job() -> Any:
            nonlocal last
            factor = stretch()
            now = self._clock()
            # half an interval of slack: the trigger's jitter must not turn 2x into 3x
            if math.isinf(factor) or (factor > 1 and last is not None and now - last < (factor - 0.5) * seconds):
                self.skipped[poller.name] = self.skipped.get(poller.name, 0) + 1
                log.debug("poll_stretched", poller=poller.name, factor=factor)
                return None
            last = now
            return await poller.run_once()

        return job

    def add_cron(self, name: str, crontab: str, coroutine_fn: Callable[[], Awaitable[Any]]) -> None:
        """Run `coroutine_fn()` on a five-field crontab in the scheduler's timezone."""
        trigger = CronTrigger.from_crontab(crontab, timezone=self.timezone)

        self._scheduler.add_job(_reported(name, coroutine_fn), trigger, id=name, name=name, coalesce=True,
                                max_instances=1, misfire_grace_time=CRON_MISFIRE_GRACE_SECONDS, replace_existing=True)

    def run_now(self, job_id: str) -> bool:
        """Run a job at once, its schedule going on as before after it; False (nothing asked) for no such job, or
        while the scheduler runs no jobs (stopped, or paused: this replica does not lead)."""
        job = self._scheduler.get_job(job_id)
        if job is None or self._scheduler.state != STATE_RUNNING:
            return False
        # The next run time becomes now; after the run APScheduler takes the trigger's next fire time again.
        job.modify(next_run_time=datetime.now(job.trigger.timezone))
        return True

    def start(self, *, paused: bool = False) -> None:
        """Start on the running asyncio loop (call from inside it); `paused`: run no job until `resume`."""
        if not self._scheduler.running:
            self._scheduler.start(paused=paused)

    @property
    def paused(self) -> bool:
        return bool(self._scheduler.state == STATE_PAUSED)

    def pause(self) -> None:
        """Run no job until `resume` (this replica does not lead the scheduled work); a job running finishes."""
        if self._scheduler.state == STATE_RUNNING:
            self._scheduler.pause()

    def resume(self) -> None:
        if self._scheduler.state == STATE_PAUSED:
            self._scheduler.resume()

    def shutdown(self) -> None:
        """Stop without waiting; a job still running is cancelled (its store write is one transaction)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def run(self, *, paused: bool = False, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The scheduler as a supervisor part: started (paused until `resume`, if asked), ready, asleep until
        cancelled, then shut down."""
        self.start(paused=paused)
        log.info("scheduler_started", jobs=self.job_ids())
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                self.shutdown()
                # AsyncIOScheduler shuts down via call_soon; let the loop run it before we return
                await anyio.lowlevel.checkpoint()
            log.info("scheduler_stopped")


def _reported(name: str, run: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """A job that says how it failed in our own log rather than APScheduler's, and is quiet when the
    scheduler's shutdown cancels it (a poll in its back-off is not an error)."""

    async def job() -> Any:
        try:
            return await run()
        except anyio.get_cancelled_exc_class():
            log.info("scheduled_job_cancelled", job=name, reason="the scheduler stopped")
            return None  # the job's task ends here: nothing else waits on it
        except Exception:  # keep the schedule
            log.exception("scheduled_job_failed", job=name)
            return None

    return job
