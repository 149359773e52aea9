"""The outcome of the store's last write, for readiness.

A full disk (or a read-only file, or a corrupt page) fails every write while reads still succeed, so a read
alone would call such a store ready. The store notes each write transaction's outcome here; its `ping`
answers from the last one, and after a failure probes with a small write so that readiness flips back as
soon as writes succeed again, busy or idle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from revdaemon.errors import StoreUnavailable

# A write that changes no value but still goes through the journal and the disk.
PROBE = "UPDATE store_meta SET value = value WHERE name = 'created_on'"


class WriteHealth:
    def __init__(self) -> None:
        self.failure: str | None = None  # the last write's error; None once a write succeeded

    @contextmanager
    def noting(self, write: bool) -> Iterator[None]:
        """Around one transaction: a write's outcome is remembered; a read's is not (reads still work)."""
        try:
            yield
        except StoreUnavailable as exc:  # not StoreBusy (another process held a lock) nor a logic refusal
            if write:
                self.failure = str(exc)
            raise
        if write:
            self.failure = None
