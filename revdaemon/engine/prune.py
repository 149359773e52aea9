"""The prune job: the store's retention rules (store/retention.py) carried out in small batches.

The leader runs it nightly (`schedule.prune_cron`), and an operator with `revdaemon prune`. Each batch is one short
transaction of at most `batch` rows, and the job sleeps `pause` seconds between batches: a worker's claim, a
webhook's commit or the console's read waits for one batch at most, never for the whole run (on SQLite, one
writer at a time, that is the difference; on PostgreSQL the batches touch no row a worker claims). A run that
stops half-way (a restart, leadership lost) has lost nothing: the next one takes up what is left.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio
import structlog

from revdaemon.store import Store
from revdaemon.store.records import Clock, utcnow
from revdaemon.store.retention import DEFAULT_BATCH, PruneStep, cutoff_of

log = structlog.get_logger("revdaemon.prune")

PAUSE_SECONDS = 0.01  # between batches: enough for waiting writers (other processes' too) to get the lock


async def prune_store(store: Store, cutoff: datetime, *, dry_run: bool = False, batch: int = DEFAULT_BATCH,
                      pause: float = PAUSE_SECONDS, keep_going: Callable[[], bool] = lambda: True,
                      on_batch: Callable[[PruneStep], None] | None = None) -> PruneStep:
    """Prune what the retention rules let go of the rows last changed before `cutoff` (with `dry_run`, only count
    it), batch after batch, until done or `keep_going()` says stop. Returns the last step: its counts."""
    started = time.perf_counter()
    step = PruneStep(cutoff=cutoff, batch=batch, dry_run=dry_run)
    while not step.finished:
        if not keep_going():
            log.warning("prune_stopped", reason="this replica no longer leads", batches=step.batches,
                        **{target.value: count for target, count in step.pruned.items()})
            return step
        step = await store.prune(step)
        if on_batch is not None:
            on_batch(step)
        await anyio.sleep(pause)
    log.info("store_pruned", cutoff=cutoff.isoformat(), dry_run=dry_run, batches=step.batches,
             seconds=round(time.perf_counter() - started, 1),
             **{target.value: count for target, count in step.pruned.items()})
    return step


def nightly_prune(store: Store, retention_days: int, *, leading: Callable[[], bool],
                  clock: Clock = utcnow) -> Callable[[], Awaitable[None]]:
    """The scheduled job: prune what is older than `retention_days`, while this replica leads."""

    async def job() -> None:
        cutoff = cutoff_of(clock(), retention_days)
        if cutoff is not None:
            await prune_store(store, cutoff, keep_going=leading)

    return job
