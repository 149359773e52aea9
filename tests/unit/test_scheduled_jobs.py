from __future__ import annotations

from pathlib import Path

import pytest

from revdaemon.engine.supervisor import _enqueue_daily
from revdaemon.engine.worker import Doorbell
from revdaemon.store import open_store
from revdaemon.store.states import EventStatus

pytestmark = pytest.mark.anyio


async def test_a_daily_job_is_one_event_per_day(tmp_path: Path) -> None:
    """The cron job enqueues one event keyed by the day; a repeated or coalesced run adds nothing."""
    store = await open_store(tmp_path / "db.sqlite3")
    try:
        job = _enqueue_daily(store, Doorbell(), "schedule.reconciliation")
        await job()
        await job()
        [event] = await store.list_events(status=EventStatus.RECEIVED)
        assert event.type == "schedule.reconciliation" and event.source == "schedule"
        assert event.key.startswith("schedule.reconciliation:20")
    finally:
        await store.close()
