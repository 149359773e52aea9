"""Open Subscribe streams and the faults that cut them (salesforce-api.md §4.3, "Retry Long-Lived RPC Calls").

A stream owns an asyncio wake-up that any thread can ring (a commit in the HTTP server's thread, a fault from a
test): publishing rings every stream, so a new event leaves within one loop turn instead of a polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class Stream:
    loop: asyncio.AbstractEventLoop
    generation: int  # the reset generation it opened in; a later generation means "cut"
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def ring(self) -> None:
        """Thread-safe: sets `wake` on the stream's own loop."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: the stream is gone
            self.loop.call_soon_threadsafe(self.wake.set)


class Streams:
    """Every open Subscribe stream, the reset faults pending for them, and a shared delivery count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Stream] = set()
        self._generation = 0
        self._reset_after: int | None = None  # cut every stream once this many more events have gone out

    def open(self) -> Stream:
        stream = Stream(asyncio.get_running_loop(), self._generation)
        with self._lock:
            self._open.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        with self._lock:
            self._open.discard(stream)

    def ring_all(self) -> None:
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.ring()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._open)

    def reset(self, after_events: int | None = None) -> None:
        """Cut every open stream (UNAVAILABLE) now, or once `after_events` more events have been delivered."""
        with self._lock:
            if after_events:
                self._reset_after = after_events
                return
            self._reset_after = None
            self._generation += 1
        self.ring_all()

    def is_cut(self, stream: Stream) -> bool:
        with self._lock:
            return stream.generation != self._generation

    def allowance(self, wanted: int) -> int:
        """How many of `wanted` events may go out before a pending mid-burst reset."""
        with self._lock:
            return wanted if self._reset_after is None else min(wanted, self._reset_after)

    def delivered(self, count: int) -> None:
        with self._lock:
            if self._reset_after is None or count == 0:
                return
            self._reset_after -= count
            if self._reset_after > 0:
                return
            self._reset_after = None
            self._generation += 1
        self.ring_all()

    def clear_faults(self) -> None:
        with self._lock:
            self._reset_after = None
