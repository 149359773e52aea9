"""Fault injection: latency, 503s, UNABLE_TO_LOCK_ROW on writes and dropped connections, all before the
request is handled; and, after it is applied, a lost or late answer (lost_answers.py).

Random faults draw from one `random.Random(seed)`, and only when their rate is non-zero, so a given seed
and request sequence always fails the same requests. The `*_next` counters fail exactly the next N.

The after-apply faults model the caveat that a timed-out or failed request may still have been applied
[assumed: salesforce-api.md records no Salesforce statement of it; it holds for any HTTP API, since the
server commits before its answer travels]. They draw from their own generator (seeded from `seed`), so
turning them on does not shift which requests the faults above hit, and they count what fired (`fired`).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

from revdaemon.sandbox import lost_answers
from revdaemon.sandbox.salesforce.errors import SfError
from revdaemon.sandbox.salesforce.settings import FaultSettings

UNAVAILABLE = SfError(503, "SERVER_UNAVAILABLE", "Server unavailable, please try again later.")  # §2 503
LOCK_ROW_MESSAGE = "unable to obtain exclusive access to this record"  # §2.2
# Salesforce's reads are GETs; these would only read if POSTed (they answer 405), so never lose a write.
READ_ONLY_POSTS = ("/query", "/query/*", "/queryAll", "/queryAll/*")
APPLIED = (  # (kind, counter, rate) in draw order
    (lost_answers.DROP, "applied_drop_next", "applied_drop_rate"),
    (lost_answers.ERROR_503, "applied_503_next", "applied_503_rate"),
    (lost_answers.ERROR_504, "applied_504_next", "applied_504_rate"),
    (lost_answers.SLOW, "applied_slow_next", "applied_slow_rate"),
)


class Faults:
    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self.fired = lost_answers.FiredCounts()
        self.configure(settings)

    def configure(self, settings: FaultSettings) -> None:
        settings = dataclasses.replace(settings, applied_paths=tuple(settings.applied_paths))
        rates = [(kind, float(getattr(settings, rate))) for kind, _, rate in APPLIED]
        if any(not 0.0 <= rate <= 1.0 for _, rate in rates) or sum(rate for _, rate in rates) > 1.0:
            raise ValueError("the applied_*_rate settings are probabilities summing to at most 1")
        target = lost_answers.Target(settings.applied_writes_only, lost_answers.parse_patterns(settings.applied_paths),
                                     READ_ONLY_POSTS)
        with self._lock:
            self.settings = settings
            self._rng = random.Random(settings.seed)
            self._applied_rng = random.Random(f"applied-{settings.seed}")
            self._applied_rates = [(kind, rate) for kind, rate in rates if rate]
            self._target = target
            self._arm()

    def _arm(self) -> None:
        s = self.settings
        self.applied_armed = bool(self._applied_rates) or any(getattr(s, counter) > 0 for _, counter, _ in APPLIED)

    def update(self, **changes: Any) -> FaultSettings:
        known = {f.name for f in dataclasses.fields(FaultSettings)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        self.configure(dataclasses.replace(self.settings, **changes))
        return self.settings

    def _roll(self, counter: str, rate: float) -> bool:
        with self._lock:
            left = getattr(self.settings, counter)
            if left > 0:
                setattr(self.settings, counter, left - 1)
                return True
            return rate > 0 and self._rng.random() < rate

    @property
    def latency_seconds(self) -> float:
        return self.settings.latency_ms / 1000

    def drop(self) -> bool:
        return self._roll("drop_next", self.settings.drop_rate)

    def unavailable(self) -> bool:
        return self._roll("unavailable_next", self.settings.unavailable_rate)

    def lock_row(self) -> bool:
        return self._roll("lock_row_next", self.settings.lock_row_rate)

    # ---- after the request is applied (lost_answers.Policy) ------------------------------------------------

    @property
    def applied_slow_seconds(self) -> float:
        return float(self.settings.applied_slow_seconds)

    def applied_targets(self, method: str, path: str) -> bool:
        return self._target.matches(method, path)

    def draw_applied(self) -> str | None:
        with self._lock:
            kind = self._draw_applied()
            if kind is not None:
                self.fired.add(kind)
            return kind

    def _draw_applied(self) -> str | None:
        for kind, counter, _ in APPLIED:
            left = getattr(self.settings, counter)
            if left > 0:
                setattr(self.settings, counter, left - 1)
                self._arm()
                return kind
        if not self._applied_rates:
            return None
        return lost_answers.draw_kind(self._applied_rng.random(), self._applied_rates)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)
