"""Fault injection: latency, 503s, UNABLE_TO_LOCK_ROW on writes and dropped connections.

Random faults draw from one `random.Random(seed)`, and only when their rate is non-zero, so a given seed
and request sequence always fails the same requests. The `*_next` counters fail exactly the next N.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

from revdaemon.sandbox.salesforce.errors import SfError
from revdaemon.sandbox.salesforce.settings import FaultSettings

UNAVAILABLE = SfError(503, "SERVER_UNAVAILABLE", "Server unavailable, please try again later.")  # §2 503
LOCK_ROW_MESSAGE = "unable to obtain exclusive access to this record"  # §2.2


class Faults:
    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self.configure(settings)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = dataclasses.replace(settings)
            self._rng = random.Random(settings.seed)

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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings)
