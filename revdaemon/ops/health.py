"""What /healthz and `status` report: liveness, readiness, and each poller's last run."""

from __future__ import annotations

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
    daemon: str | None = None  # daemon_tag of this process

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
                           for name, state in self.pollers.items()}}
        if details:
            report["started_at"] = self.started_at.isoformat()
            report["shutting_down"] = self.shutting_down
            report["pollers"] = {name: state.as_dict() for name, state in self.pollers.items()}
        return report

    def ready(self, store_ok: bool) -> bool:
        """The store takes writes, the daemon is not stopping, and no poller has stopped: a poller stops only
        when its API refused the credentials (engine/pollers.py), so not ready while a login is refused, and
        so while every poller is stopped. A standby polls nothing, and stays ready."""
        return store_ok and not self.shutting_down and not self.stopped_pollers()
