"""The org's event bus: change events in commit order, each with an opaque replay id, kept for the retention
window (salesforce-api.md §4.3).

Replay ids are 8 big-endian bytes of a position counter that skips values, because Salesforce says replay ids
are not contiguous and must not be computed from one another [doc: event-message-durability.md]. A replay id
the bus gave out (an event's, or a keepalive's latest_replay_id) is valid for a CUSTOM subscription until the
events up to it are purged; a purged, never-issued or malformed one is not (`ReplayIdInvalid`).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass

Watcher = Callable[[], None]


class ReplayIdInvalid(Exception):
    """A replay id that names no retained event: malformed, purged, or never issued."""


@dataclass(frozen=True)
class BusEvent:
    position: int
    entity: str
    uuid: str
    schema_id: str
    payload: bytes  # Avro binary
    committed_at: float  # sim clock, seconds

    @property
    def replay_id(self) -> bytes:
        return encode_replay_id(self.position)


def encode_replay_id(position: int) -> bytes:
    return position.to_bytes(8, "big")


class EventBus:
    def __init__(self, clock: Callable[[], float], retention_seconds: float) -> None:
        self.clock = clock
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._events: list[BusEvent] = []  # in position order
        # Whether committed_at never decreases along _events (a clock set back breaks it): then the events past
        # the retention window are a prefix, found by bisection instead of a pass over every retained event
        # per publish, which made publishing cost in proportion to the events held (issue 30).
        self._in_time_order = True
        self._head = 1  # the position a LATEST subscriber starts at; valid as a CUSTOM replay id too
        self._purged_through = 0
        self._published = 0
        self._watchers: set[Watcher] = set()
        self.schemas: dict[str, str] = {}  # schema id -> JSON of every schema an event was encoded with

    def publish(self, entity: str, uuid: str, schema_id: str, payload: bytes) -> BusEvent:
        with self._lock:
            self._published += 1
            self._head += 1 + self._published % 3  # gaps between consecutive ids, like Salesforce's
            event = BusEvent(self._head, entity, uuid, schema_id, payload, self.clock())
            if self._events and event.committed_at < self._events[-1].committed_at:
                self._in_time_order = False
            self._events.append(event)
            self._purge_older_than(self.clock() - self.retention_seconds)
            watchers = list(self._watchers)
        for wake in watchers:  # outside the lock: a watcher may hop threads
            wake()
        return event

    @property
    def head(self) -> int:
        with self._lock:
            return self._head

    def start_after(self, replay_id: bytes) -> int:
        """The position a CUSTOM subscription starts after; raises ReplayIdInvalid."""
        if len(replay_id) != 8:
            raise ReplayIdInvalid(replay_id.hex())
        position = int.from_bytes(replay_id, "big")
        with self._lock:
            self._purge_older_than(self.clock() - self.retention_seconds)
            if not self._purged_through < position <= self._head:
                raise ReplayIdInvalid(replay_id.hex())
        return position

    def earliest(self) -> int:
        """The position before the oldest retained event (EARLIEST replays everything retained)."""
        with self._lock:
            self._purge_older_than(self.clock() - self.retention_seconds)
            return self._events[0].position - 1 if self._events else self._head

    def after(self, position: int, entities: frozenset[str], limit: int) -> tuple[list[BusEvent], int]:
        """Up to `limit` events of `entities` after `position`, and the position reached: the last event given,
        or the head once nothing more of these entities is waiting."""
        with self._lock:
            start = bisect.bisect_right(self._events, position, key=_position)  # positions only grow
            matching = [e for e in self._events[start:] if e.entity in entities]
            given = matching[:max(limit, 0)]
            if len(given) < len(matching):
                return given, given[-1].position if given else position
            return given, self._head

    def expire(self) -> None:
        """Purges every event, as if the retention window had passed: each replay id given out so far is invalid,
        and the head moves on so that subscribing LATEST yields a fresh, valid one."""
        with self._lock:
            self._events.clear()
            self._in_time_order = True
            self._purged_through = self._head
            self._head += 1

    def clear(self) -> None:
        """Back to an empty bus; the counter keeps going so an old replay id never names a new event."""
        self.expire()
        with self._lock:
            self.schemas.clear()

    def watch(self, wake: Watcher) -> None:
        with self._lock:
            self._watchers.add(wake)

    def unwatch(self, wake: Watcher) -> None:
        with self._lock:
            self._watchers.discard(wake)

    def _purge_older_than(self, cutoff: float) -> None:
        if self._in_time_order:
            if not self._events or self._events[0].committed_at >= cutoff:
                return
            older = bisect.bisect_left(self._events, cutoff, key=_committed_at)
            self._purged_through = self._events[older - 1].position  # positions grow along _events
            del self._events[:older]
            if self._purged_through == self._head:
                self._head += 1
            return
        kept = [e for e in self._events if e.committed_at >= cutoff]
        if len(kept) < len(self._events):
            self._purged_through = max(e.position for e in self._events if e.committed_at < cutoff)
            self._events = kept
            if self._purged_through == self._head:
                self._head += 1  # keep the head a valid replay id for the next LATEST subscriber


def _position(event: BusEvent) -> int:
    return event.position


def _committed_at(event: BusEvent) -> float:
    return event.committed_at
