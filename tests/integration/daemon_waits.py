"""Waiting on a daemon that runs in the test's event loop (`run_daemon` with `on_ready`) against the simulators:
until a condition holds, and until every webhook is delivered and the inbox has drained."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from revdaemon.engine.supervisor import Daemon
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus

WAIT_SECONDS = 20.0  # bound on each wait for the daemon


async def until(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await anyio.sleep(0.1)


async def settled(box: Sandbox, daemon: Daemon, *, seconds: float = WAIT_SECONDS, grace: float = 0.0) -> None:
    """Every webhook the simulator meant to send is delivered and the daemon has nothing waiting or in hand.
    `grace`: first wait that long for a change event or a poll still on its way to the inbox."""
    assert await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(seconds)), "webhooks stuck"
    if grace:
        await anyio.sleep(grace)

    async def idle() -> bool:
        depths = await daemon.store.queue_depths()
        return depths.get(EventStatus.RECEIVED, 0) == 0 and depths.get(EventStatus.CLAIMED, 0) == 0

    try:
        await until(idle, "the daemon's queue to drain", seconds)
    except AssertionError as exc:
        waiting = [e for status in (EventStatus.RECEIVED, EventStatus.CLAIMED)
                   for e in await daemon.store.list_events(status=status)]
        raise AssertionError(f"{exc}; still waiting: " + "; ".join(
            f"{e.key} {e.type} {e.status.value} attempts={e.attempts} next={e.next_attempt_at:%H:%M:%S.%f} "
            f"claimed_by={e.claimed_by} error={e.last_error}" for e in waiting)) from None
