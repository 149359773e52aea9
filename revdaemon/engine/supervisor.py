"""The daemon's supervisor: one task group that owns every long-running part, and a clean stop.

Parts start with `await tg.start(...)` and report ready once bound and migrated; the supervisor stops
them all on SIGTERM or SIGINT (or after `stop_after` seconds, for demos and tests) and closes the store
last, so nothing is written after it closes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import structlog

from revdaemon.config import Settings
from revdaemon.store import open_store

log = structlog.get_logger("revdaemon.supervisor")

# A long-running part: `part(settings, store, task_status=...)` calls task_status.started() once ready.
Part = Callable[..., Coroutine[Any, Any, None]]


async def run_daemon(
    settings: Settings,
    *,
    parts: tuple[Part, ...] = (),
    stop_after: float | None = None,
) -> None:
    store = await open_store(settings.database_path)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            for part in parts:
                await tg.start(part, settings, store)
            summary = await store.summary()
            log.info(
                "daemon_started",
                database=str(settings.database_path),
                queued=summary.queue_depths,
                parts=len(parts),
            )
            if stop_after is not None:
                await anyio.sleep(stop_after)
                log.info("daemon_stopping", reason="stop_after elapsed")
                tg.cancel_scope.cancel()
    finally:
        await store.close()
        log.info("daemon_stopped")


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("daemon_stopping", reason=signal.Signals(signum).name)
            scope.cancel()
            return
