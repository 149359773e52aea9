"""Pacing the workers by the API budget: a doorbell whose ring opens a coalescing window.

An idle worker waits on the doorbell and claims as soon as new events are stored. While the budget
planner stretches work (`BudgetPlan.multiplier` above 1), a ring instead opens a window of `window()`
seconds in which later rings are let in too, so a trickle of webhooks is claimed, re-read and written as
one batch (fewer calls per event) rather than one batch each. Nothing is refused; a stop ends the window
at once.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from revdaemon.engine.worker import Doorbell


class CoalescingDoorbell(Doorbell):
    def __init__(self, *, window: Callable[[], float], stopping: Callable[[], bool]) -> None:
        super().__init__()
        self._window = window
        self._stopping = stopping

    async def wait(self, at_most: float) -> None:
        rung = self._event
        await super().wait(at_most)
        if not rung.is_set():
            return  # timed out: nothing new to gather
        window = self._window()
        deadline = anyio.current_time() + window
        while window > 0 and not self._stopping():
            await super().wait(window)  # a ring (a stop rings too) wakes this to check for the stop
            window = deadline - anyio.current_time()
