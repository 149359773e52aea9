"""What /healthz and `status` report: liveness, readiness, each poller's last run, and each change stream."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from revdaemon.store.records import utcnow


@dataclass
class PollerHealth:
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    stopped: bool = False  # credentials refused: the poller runs no more until the daemon restarts

    def as_dict(self) -> dict[str, Any]:
        return {
            "stopped": self.stopped,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


class StreamState(enum.StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"  # subscribed; the poll may slow down
    DOWN = "down"  # ended or refused; resubscribing with back-off, the poll at its short interval
    STANDBY = "standby"  # this replica does not lead: the leader subscribes
    STOPPED = "stopped"  # credentials refused: not again until the daemon restarts


@dataclass
class StreamHealth:
    """One change event subscription (engine/change_stream.py), as /healthz, `status` and the console show it."""

    topic: str
    state: StreamState = StreamState.STANDBY
    since: datetime = field(default_factory=utcnow)
    replay_id: str | None = None  # the last one committed with its events (hex)
    last_event_at: datetime | None = None  # when the newest event delivered arrived
    lag_seconds: float | None = None  # from its commit in Salesforce to its hint stored in the inbox
    events: int = 0  # change events delivered since the start
    hints: int = 0  # inbox events stored from them (new ones)
    last_error: str | None = None
    fell_back_at: datetime | None = None  # the last time the stored replay id was refused: LATEST plus a poll

    def enter(self, state: StreamState, error: str | None = None) -> bool:
        """Move to `state`; True when that is a change."""
        if error is not None:
            self.last_error = error
        if state is self.state:
            return False
        self.state, self.since = state, utcnow()
        return True

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {"topic": self.topic, "state": self.state.value, "since": iso(self.since), "replay_id": self.replay_id,
                "last_event_at": iso(self.last_event_at), "lag_seconds": self.lag_seconds, "events": self.events,
                "hints": self.hints, "last_error": self.last_error, "fell_back_at": iso(self.fell_back_at)}


def daemon_tag(replica_id: str, pid: int) -> str:
    """Which daemon process answers, as /healthz says it: `status` compares it with the replicas its store lists
    (id and pid), so it shows only the figures of its own store's daemon. A digest: the webhook port faces Nue,
    and host names and process ids are none of its business."""
    return hashlib.sha256(f"{replica_id}/{pid}".encode()).hexdigest()[:16]


@dataclass
class Health:
    started_at: datetime = field(default_factory=utcnow)
    shutting_down: bool = False
    pollers: dict[str, PollerHealth] = field(default_factory=dict)
    streams: dict[str, StreamHealth] = field(default_factory=dict)  # topic -> its change stream
    daemon: str | None = None  # daemon_tag of this process

    def stream(self, topic: str) -> StreamHealth:
        return self.streams.setdefault(topic, StreamHealth(topic=topic))

    def streaming(self) -> bool:
        """Every change stream is subscribed (and there is one): the Salesforce poll is only the net."""
        return bool(self.streams) and all(s.state is StreamState.STREAMING for s in self.streams.values())

    def poller(self, name: str) -> PollerHealth:
        return self.pollers.setdefault(name, PollerHealth())

    def poll_succeeded(self, name: str) -> None:
        self.poller(name).last_success_at = utcnow()

    def poll_failed(self, name: str, error: str) -> None:
        state = self.poller(name)
        state.last_error, state.last_error_at = error, utcnow()

    def poll_stopped(self, name: str, error: str) -> None:
        self.poll_failed(name, error)
        self.poller(name).stopped = True

    def stopped_pollers(self) -> list[str]:
        return sorted(name for name, state in self.pollers.items() if state.stopped)

    def report(self, *, store_ok: bool, details: bool = False) -> dict[str, Any]:
        """What /healthz answers: liveness, readiness and when each poll last succeeded. `details` adds each
        poller's last error, for the admin listener only: an API's message can name records, and the webhook
        port faces Nue."""
        report: dict[str, Any] = {
            "live": True, "ready": self.ready(store_ok), "store": store_ok, "daemon": self.daemon,
            "pollers_stopped": self.stopped_pollers(),
            "last_polls": {name: state.last_success_at.isoformat() if state.last_success_at else None
                           for name, state in self.pollers.items()},
            "streams": {topic: {"state": state.state.value, "since": state.since.isoformat(),
                                "fell_back_at": state.fell_back_at.isoformat() if state.fell_back_at else None}
                        for topic, state in self.streams.items()}}
        if details:
            report["started_at"] = self.started_at.isoformat()
            report["shutting_down"] = self.shutting_down
            report["pollers"] = {name: state.as_dict() for name, state in self.pollers.items()}
            report["change_streams"] = {topic: state.as_dict() for topic, state in self.streams.items()}
        return report

    def ready(self, store_ok: bool) -> bool:
        """The store takes writes, the daemon is not stopping, and no poller has stopped: a poller stops only
        when its API refused the credentials (engine/pollers.py), so not ready while a login is refused, and
        so while every poller is stopped. A standby polls nothing, and stays ready."""
        return store_ok and not self.shutting_down and not self.stopped_pollers()
