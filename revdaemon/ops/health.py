"""What /healthz and `status` report: liveness, readiness, and each poller's last run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from revdaemon.store.records import utcnow


@dataclass
class PollerHealth:
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


@dataclass
class Health:
    started_at: datetime = field(default_factory=utcnow)
    shutting_down: bool = False
    pollers: dict[str, PollerHealth] = field(default_factory=dict)

    def poller(self, name: str) -> PollerHealth:
        return self.pollers.setdefault(name, PollerHealth())

    def poll_succeeded(self, name: str) -> None:
        self.poller(name).last_success_at = utcnow()

    def poll_failed(self, name: str, error: str) -> None:
        state = self.poller(name)
        state.last_error, state.last_error_at = error, utcnow()

    def report(self, *, store_ok: bool, details: bool = False) -> dict[str, Any]:
        """What /healthz answers: liveness, readiness and when each poll last succeeded. `details` adds each
        poller's last error, for the admin listener only: an API's message can name records, and the webhook
        port faces Nue."""
        report: dict[str, Any] = {
            "live": True, "ready": self.ready(store_ok), "store": store_ok,
            "last_polls": {name: state.last_success_at.isoformat() if state.last_success_at else None
                           for name, state in self.pollers.items()}}
        if details:
            report["started_at"] = self.started_at.isoformat()
            report["shutting_down"] = self.shutting_down
            report["pollers"] = {name: state.as_dict() for name, state in self.pollers.items()}
        return report

    def ready(self, store_ok: bool) -> bool:
        return store_ok and not self.shutting_down
