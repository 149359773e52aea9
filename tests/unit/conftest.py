"""The store tests' shared fixtures: a fake clock, and a new store on each backend driven by it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from revdaemon.store import Store, open_store


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_target: Path | str, clock: FakeClock) -> AsyncIterator[Store]:
    """A new store on each backend (tests/conftest.py: store_target): SQLite, then PostgreSQL."""
    opened = await open_store(store_target, clock=clock)
    yield opened
    await opened.close()
