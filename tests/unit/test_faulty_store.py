"""The fault-injecting store wrapper (tests/faulty_store.py) does what the fault state machine relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from revdaemon.errors import StoreBusy, StoreUnavailable
from revdaemon.store import open_store
from revdaemon.store.records import NewEvent
from tests.faulty_store import Crash, Fault, FaultKind, FaultyStore

pytestmark = pytest.mark.anyio


def event(key: str) -> NewEvent:
    return NewEvent(source="nue_webhook", key=key, type="order.activated", payload={})


class TestFaultyStore:
    async def test_a_kill_before_a_call_leaves_nothing_of_it(self, tmp_path: Path) -> None:
        """Killed as the call begins: nothing is stored, and every later call finds the process dead."""
        faulty = FaultyStore(await open_store(tmp_path / "db.sqlite3"))
        assert faulty.arm(Fault(FaultKind.CRASH_BEFORE), in_calls=2) == 2
        await faulty.store.add_events([event("a")])
        with pytest.raises(Crash):
            await faulty.store.add_events([event("b")])
        with pytest.raises(Crash):
            await faulty.store.queue_depths()
        await faulty.close()
        reopened = await open_store(tmp_path / "db.sqlite3")
        assert [e.key for e in await reopened.list_events()] == ["a"]
        await reopened.close()

    async def test_a_kill_after_a_call_keeps_what_it_committed(self, tmp_path: Path) -> None:
        """Killed once the call has committed: the next process finds its work done."""
        faulty = FaultyStore(await open_store(tmp_path / "db.sqlite3"))
        faulty.arm(Fault(FaultKind.CRASH_AFTER), in_calls=1)
        with pytest.raises(Crash):
            await faulty.store.add_events([event("a")])
        assert faulty.fired == ["call 1 (add_events): killed after"]
        await faulty.close()
        reopened = await open_store(tmp_path / "db.sqlite3")
        assert [e.key for e in await reopened.list_events()] == ["a"]
        await reopened.close()

    async def test_an_error_changes_nothing_and_the_store_goes_on(self, tmp_path: Path) -> None:
        """The store's own error, of the kind asked for, at that call only; the calls after it work."""
        faulty = FaultyStore(await open_store(tmp_path / "db.sqlite3"))
        faulty.arm(Fault(FaultKind.ERROR, StoreBusy), in_calls=1)
        faulty.arm(Fault(FaultKind.ERROR), in_calls=2)
        with pytest.raises(StoreBusy):
            await faulty.store.add_events([event("a")])
        with pytest.raises(StoreUnavailable):
            await faulty.store.add_events([event("a")])
        assert await faulty.store.add_events([event("a")]) == [True]
        assert faulty.calls == 3 and faulty.armed == 0
        await faulty.close()

    async def test_the_observer_sees_each_answer(self, tmp_path: Path) -> None:
        """The observer gets each method's name and result, after it returned."""
        seen: list[tuple[str, object]] = []
        faulty = FaultyStore(await open_store(tmp_path / "db.sqlite3"), observer=lambda n, r: seen.append((n, r)))
        await faulty.store.add_events([event("a")])
        assert seen == [("add_events", [True])]
        await faulty.close()
