"""API request accounting: the daily allocation (§3.1), the Sforce-Limit-Info header (§3.2) and an optional
per-second cap.

The daily counter is a plain counter (reset by `reset()` or an admin call), not a trailing 24 h window.
Per-second cap: real Salesforce has no per-second cap; its nearest limit is the concurrent long-running
request limit, reported as REQUEST_LIMIT_EXCEEDED (§3.4), and the errorcodes page ties that code to 403. So a
request over the cap gets 403 REQUEST_LIMIT_EXCEEDED with the concurrent-requests message, and does not count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from revdaemon.sandbox.salesforce.errors import LIMIT_EXCEEDED_MESSAGE, SfError

CONCURRENT_MESSAGE = "ConcurrentRequests (Concurrent API Requests) Limit exceeded."  # §3.4


class ApiUsage:
    def __init__(self, daily_limit: int, per_second_cap: int | None, clock: Callable[[], float]) -> None:
        self.daily_limit = daily_limit
        self.per_second_cap = per_second_cap
        self.clock = clock
        self.used = 0
        self._second = -1
        self._in_second = 0
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Counts one API request, or raises 403 REQUEST_LIMIT_EXCEEDED."""
        with self._lock:
            if self.per_second_cap is not None:
                second = int(self.clock())
                if second != self._second:
                    self._second, self._in_second = second, 0
                if self._in_second >= self.per_second_cap:
                    raise SfError(403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT_MESSAGE)
                self._in_second += 1
            if self.used >= self.daily_limit:
                raise SfError(403, "REQUEST_LIMIT_EXCEEDED", LIMIT_EXCEEDED_MESSAGE)
            self.used += 1

    def set_daily_limit(self, limit: int) -> None:
        """A new daily allocation (an org of another edition or with more licences); the counter stays."""
        if limit < 1:
            raise ValueError("the daily limit must be at least 1")
        with self._lock:
            self.daily_limit = limit

    def set_per_second_cap(self, cap: int | None) -> None:
        """A new cap (None: none), counted from the next request on."""
        if cap is not None and cap < 1:
            raise ValueError("per_second_cap must be at least 1, or null for no cap")
        with self._lock:
            self.per_second_cap = cap
            self._second, self._in_second = -1, 0

    def header(self) -> str:
        return f"api-usage={self.used}/{self.daily_limit}"

    def reset(self, used: int = 0) -> None:
        with self._lock:
            self.used = used
            self._second, self._in_second = -1, 0
