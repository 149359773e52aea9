from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from revdaemon.domain.record_names import RecordName
from revdaemon.errors import Fenced, IllegalTransition, LinkConflict, RecordNotFound, SchemaTooNew, StoreError
from revdaemon.store import Store, open_store
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION
from revdaemon.store.records import (
    ConflictStatus,
    CursorUpdate,
    Link,
    NewAuditEntry,
    NewConflict,
    NewDeadLetter,
    NewEvent,
    NewIntent,
    NewShadowEntry,
    ReplicaBeat,
    Resolution,
    Settlement,
)
from revdaemon.store.states import EventStatus, IntentStatus
from tests.unit.conftest import FakeClock

pytestmark = pytest.mark.anyio

LEASE = timedelta(minutes=5)


def event(key: str, type_: str = "order.activated") -> NewEvent:
    return NewEvent(source="nue_webhook", key=key, type=type_, payload={"id": key})


async def claim_one(store: Store) -> int:
    [claimed] = await store.claim_events(worker="w1", limit=1, lease=LEASE)
    return claimed.id


class TestMigrations:
    async def test_empty_database_is_migrated_to_current(self, tmp_path: Path) -> None:
        """Opening a new file creates every table and sets the schema version."""
        path = tmp_path / "db.sqlite3"
        store = await open_store(path)
        assert await store.schema_version() == SCHEMA_VERSION
        await store.close()
        with sqlite3.connect(path) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert {"inbox_events", "cursors", "id_links", "write_intents", "conflicts", "dead_letters",
                "audit_log"} <= tables
        assert journal == "wal"

    async def test_reopening_is_idempotent_and_keeps_data(self, tmp_path: Path) -> None:
        """A second open applies nothing and loses nothing."""
        path = tmp_path / "db.sqlite3"
        store = await open_store(path)
        await store.add_events([event("e1")])
        await store.close()
        store = await open_store(path)
        assert await store.schema_version() == SCHEMA_VERSION
        assert (await store.find_event("e1")) is not None
        await store.close()

    async def test_older_schema_is_upgraded_in_place(self, tmp_path: Path) -> None:
        """A database at version 1 gains the later tables and keeps its rows."""
        path = tmp_path / "db.sqlite3"
        with sqlite3.connect(path) as conn:
            conn.executescript(MIGRATIONS[0].sqlite or "")
            conn.execute("INSERT INTO cursors (name, value, updated_at) VALUES ('c', 'v', '2026-01-01')")
            conn.execute("PRAGMA user_version = 1")
        store = await open_store(path)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
            assert (await store.get_cursor("c")).value == "v"  # type: ignore[union-attr]
            assert await store.raise_entity_version("e", "1")
        finally:
            await store.close()

    async def test_intents_of_schema_5_are_kept_through_every_migration(self, tmp_path: Path) -> None:
        """Migrations 6-9 keep the stored intents (the owner columns come and go); a read-only open before them
        reads them."""
        path = tmp_path / "db.sqlite3"
        with sqlite3.connect(path) as conn:
            for migration in MIGRATIONS[:5]:
                conn.executescript(migration.sqlite or "")
            conn.execute("""INSERT INTO write_intents (idem_key, system, operation, target, request, status,
                            created_at, updated_at) VALUES ('k', 's', 'o', 't', '{}', 'sent', '2026-01-01',
                            '2026-01-01')""")
            conn.execute("PRAGMA user_version = 5")
        reader = await open_store(path, read_only=True)
        try:
            old = await reader.get_intent("k")
            assert old is not None and old.status is IntentStatus.SENT and old.epoch is None
        finally:
            await reader.close()
        store = await open_store(path)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
            # migration 7: an intent stored as sent may have reached the API
            kept = await store.get_intent("k")
            assert kept is not None and kept.ever_sent and kept.epoch is None
            with sqlite3.connect(path) as conn:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(write_intents)")}
            assert "owner" not in columns and "owned_until" not in columns and "epoch" in columns
            assert await store.leadership() is None  # migration 9: nobody has led yet
        finally:
            await store.close()

    async def test_a_store_of_schema_6_was_created_on_its_first_event(self, tmp_path: Path) -> None:
        """Migration 7 dates an existing store by its first event, not by the upgrade; a read-only open before
        it answers today."""
        path = tmp_path / "db.sqlite3"
        with sqlite3.connect(path) as conn:
            for migration in MIGRATIONS[:6]:
                conn.executescript(migration.sqlite or "")
            for key, at in (("b", "2025-03-04T10:00:00.000000+00:00"), ("a", "2025-02-03T10:00:00.000000+00:00")):
                conn.execute("""INSERT INTO inbox_events (source, event_key, type, payload, next_attempt_at,
                                received_at, updated_at) VALUES ('s', ?, 't', '{}', ?, ?, ?)""", (key, at, at, at))
            conn.execute("PRAGMA user_version = 6")
        clock = FakeClock()
        reader = await open_store(path, read_only=True, clock=clock)
        try:
            assert await reader.created_on() == date(2026, 1, 1)
        finally:
            await reader.close()
        store = await open_store(path, clock=clock)
        try:
            assert await store.created_on() == date(2025, 2, 3)
        finally:
            await store.close()

    async def test_newer_database_is_refused(self, tmp_path: Path) -> None:
        """A database written by a newer revdaemon is refused untouched."""
        path = tmp_path / "db.sqlite3"
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(SchemaTooNew, match="newer than this revdaemon"):
            await open_store(path)
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 0


class TestCreatedOn:
    async def test_the_day_of_the_first_open_never_moves(self, store_target: Path | str, clock: FakeClock) -> None:
        """A new store records the day it is first opened; later opens, days on, keep it."""
        store = await open_store(store_target, clock=clock)
        try:
            assert await store.created_on() == date(2026, 1, 1)
        finally:
            await store.close()
        clock.advance(days=40)
        store = await open_store(store_target, clock=clock)
        try:
            assert await store.created_on() == date(2026, 1, 1)
        finally:
            await store.close()


class TestInbox:
    async def test_duplicate_key_stores_nothing_new(self, store: Store) -> None:
        """The second copy of an event is reported as not new and not stored."""
        assert await store.add_events([event("e1"), event("e2")]) == [True, True]
        assert await store.add_events([event("e1"), event("e3")]) == [False, True]
        depths = await store.queue_depths()
        assert depths[EventStatus.RECEIVED] == 3

    async def test_cursor_advances_with_its_events(self, store: Store) -> None:
        """A poll page's events and its cursor are committed together."""
        await store.add_events([event("p1")], cursor=CursorUpdate(name="sf:Opportunity", value="2026-01-01T00:00:00Z"))
        cursor = await store.get_cursor("sf:Opportunity")
        assert cursor is not None and cursor.value == "2026-01-01T00:00:00Z"
        assert (await store.find_event("p1")) is not None

    async def test_failed_batch_stores_neither_events_nor_cursor(self, store: Store) -> None:
        """If any part of the write fails, the cursor stays where it was."""
        await store.set_cursor(CursorUpdate(name="c", value="old"))

        class Unserialisable:
            pass

        bad = NewEvent(source="s", key="bad", type="t", payload={"x": Unserialisable()})
        with pytest.raises(TypeError):
            await store.add_events([event("ok"), bad], cursor=CursorUpdate(name="c", value="new"))
        assert (await store.get_cursor("c")).value == "old"  # type: ignore[union-attr]
        assert await store.find_event("ok") is None

    async def test_claim_complete(self, store: Store) -> None:
        """A claimed event is not claimed again and is done once completed."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        assert await store.claim_events(worker="w2", limit=10, lease=LEASE) == []
        await store.complete_event(event_id)
        done = await store.get_event(event_id)
        assert done is not None and done.status is EventStatus.DONE and done.attempts == 1

    async def test_retry_waits_until_due(self, store: Store, clock: FakeClock) -> None:
        """A retried event is not claimable before its next attempt time."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        due = clock.now + timedelta(seconds=30)
        await store.retry_event(event_id, error="503 SERVER_UNAVAILABLE", next_attempt_at=due)
        assert await store.claim_events(worker="w", limit=1, lease=LEASE) == []
        clock.advance(seconds=31)
        [again] = await store.claim_events(worker="w", limit=1, lease=LEASE)
        assert again.id == event_id and again.attempts == 2 and again.last_error == "503 SERVER_UNAVAILABLE"

    async def test_a_wait_to_settle_gives_back_its_attempt_only(self, store: Store, clock: FakeClock) -> None:
        """refund_attempt returns the attempt this claim counted and keeps the failures before it."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        await store.retry_event(event_id, error="read timeout (it may have been applied)", next_attempt_at=clock.now)
        [again] = await store.claim_events(worker="w", limit=1, lease=LEASE)
        assert again.attempts == 2
        await store.retry_event(event_id, error="settling", next_attempt_at=clock.now, refund_attempt=True)
        [third] = await store.claim_events(worker="w", limit=1, lease=LEASE)
        assert third.attempts == 2  # 2 - 1 refunded + 1 for this claim

    async def test_release_claims_on_a_clean_stop(self, store: Store) -> None:
        """A stopping worker's claims are due again at once, for any worker."""
        await store.add_events([event("e1"), event("e2")])
        await store.claim_events(worker="stopping", limit=2, lease=LEASE)
        assert await store.release_claims("other") == 0
        assert await store.release_claims("stopping") == 2
        assert len(await store.claim_events(worker="next", limit=5, lease=LEASE)) == 2

    async def test_expired_lease_is_taken_over(self, store: Store, clock: FakeClock) -> None:
        """A crashed worker's claim becomes claimable once its lease runs out."""
        await store.add_events([event("e1")])
        await store.claim_events(worker="dead-worker", limit=1, lease=LEASE)
        clock.advance(minutes=6)
        [taken] = await store.claim_events(worker="survivor", limit=1, lease=LEASE)
        assert taken.claimed_by == "survivor"

    async def test_a_worker_whose_claim_was_taken_over_settles_nothing(self, store: Store, clock: FakeClock) -> None:
        """After a lease runs out and another worker claims the event, the first worker's moves are refused."""
        from revdaemon.errors import ClaimLost

        await store.add_events([event("e1")])
        [stale] = await store.claim_events(worker="slow", limit=1, lease=LEASE)
        clock.advance(minutes=6)
        await store.claim_events(worker="survivor", limit=1, lease=LEASE)
        with pytest.raises(ClaimLost):
            await store.retry_event(stale.id, error="late", next_attempt_at=clock.now, claimed_by="slow")
        with pytest.raises(ClaimLost):
            await store.complete_event(stale.id, claimed_by="slow")
        await store.complete_event(stale.id, claimed_by="survivor")
        assert (await store.get_event(stale.id)).status is EventStatus.DONE  # type: ignore[union-attr]

    async def test_claims_oldest_first(self, store: Store, clock: FakeClock) -> None:
        """Events are claimed in the order they became due."""
        await store.add_events([event("a")])
        clock.advance(seconds=1)
        await store.add_events([event("b")])
        claimed = await store.claim_events(worker="w", limit=2, lease=LEASE)
        assert [e.key for e in claimed] == ["a", "b"]

    async def test_a_claim_takes_the_newest_fifth_and_the_oldest_for_the_rest(self, store: Store,
                                                                               clock: FakeClock) -> None:
        """Behind a backlog, what just came in goes in the next claim (real time ahead of a burst); the oldest
        still fill most of every claim, and the events come back in the order they became due."""
        for n in range(30):
            await store.add_events([event(f"old-{n:02d}")])
            clock.advance(seconds=1)
        await store.add_events([event("just-in")])
        claimed = await store.claim_events(worker="w", limit=10, lease=LEASE)
        assert [e.key for e in claimed] == [*(f"old-{n:02d}" for n in range(8)), "old-29", "just-in"]
        rest = await store.claim_events(worker="w", limit=100, lease=LEASE)
        assert [e.key for e in rest] == [f"old-{n:02d}" for n in range(8, 29)]  # every one once, none passed over

    async def test_illegal_move_raises_and_changes_nothing(self, store: Store) -> None:
        """Completing an event that was never claimed is refused."""
        await store.add_events([event("e1")])
        stored = await store.find_event("e1")
        assert stored is not None
        with pytest.raises(IllegalTransition):
            await store.complete_event(stored.id)
        after = await store.get_event(stored.id)
        assert after is not None and after.status is EventStatus.RECEIVED

    async def test_unknown_event(self, store: Store) -> None:
        """Moving an event that does not exist names it."""
        with pytest.raises(RecordNotFound, match="42"):
            await store.complete_event(42)


class TestDeadLettersAndConflicts:
    async def test_dead_letter_and_replay(self, store: Store) -> None:
        """A rejected event keeps the API's error and can be replayed once."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        letter_id = await store.dead_letter_event(event_id, NewDeadLetter(
            system="salesforce", operation="create Account", error="Required fields are missing: [Name]",
            error_code="REQUIRED_FIELD_MISSING", status=400, record_ref="nue:customer:c1", request={"Name": None},
        ))
        [letter] = await store.list_dead_letters()
        assert letter.id == letter_id and letter.error_code == "REQUIRED_FIELD_MISSING"
        assert (await store.summary()).dead_letters == 1
        replayed = await store.replay_dead_letter(letter_id)
        assert replayed.status is EventStatus.RECEIVED and replayed.attempts == 0
        assert await store.list_dead_letters() == []
        with pytest.raises(StoreError, match="already replayed"):
            await store.replay_dead_letter(letter_id)

    async def test_letters_by_error_code(self, store: Store) -> None:
        """Letters filter by their error code, and the codes present count the open letters (None: no code)."""
        await store.add_events([event(f"e{i}") for i in range(4)])
        codes = ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "REQUIRED_FIELD_MISSING",
                 "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", None]
        ids = [await store.dead_letter_event(await claim_one(store), NewDeadLetter(
            system="salesforce", operation="upsert", error="refused", error_code=code, record_ref=f"r{i}"))
            for i, code in enumerate(codes)]
        picklist = await store.list_dead_letters(error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
        assert [d.id for d in picklist] == [ids[2], ids[0]]
        assert await store.dead_letter_codes() == [("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", 2), (None, 1),
                                                   ("REQUIRED_FIELD_MISSING", 1)]
        await store.replay_dead_letter(ids[0])
        assert [d.id for d in await store.list_dead_letters(error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")] \
            == [ids[2]]
        assert [d.id for d in await store.list_dead_letters(error_code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                                            include_replayed=True)] == [ids[2], ids[0]]
        assert ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", 2) in await store.dead_letter_codes(include_replayed=True)

    async def test_a_later_failure_about_a_dead_record_joins_its_letter(self, store: Store) -> None:
        """Dead is terminal until replayed: a second event about the same record dies into the open letter (no
        second one); after the replay, a new failure makes a new letter."""
        def letter(error: str) -> NewDeadLetter:
            return NewDeadLetter(system="nue", operation="create order", error=error,
                                 record_ref="nue:Order:006000000000001AAA")

        await store.add_events([event("e1"), event("e2"), event("e3")])
        first = await store.dead_letter_event(await claim_one(store), letter("discount over 100%"))
        opened = await store.open_dead_letter("nue:Order:006000000000001AAA")
        assert opened is not None and opened.id == first
        second_event = await claim_one(store)
        assert await store.dead_letter_event(second_event, letter("discount over 100%")) == first
        assert [d.id for d in await store.list_dead_letters()] == [first]
        dead = await store.get_event(second_event)
        assert dead is not None and dead.status is EventStatus.DEAD
        await store.replay_dead_letter(first)
        assert await store.open_dead_letter("nue:Order:006000000000001AAA") is None
        third = await store.dead_letter_event(await claim_one(store), letter("discount over 100%"))
        assert third != first

    async def test_conflict_take_nue_requeues_and_accepts_what_salesforce_showed(self, store: Store) -> None:
        """Take Nue: the event goes back to the inbox, and the Salesforce values the person saw become the
        baseline, so the flow no longer reads them as a hand edit and writes Nue's state."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        conflict_id = await store.conflict_event(event_id, NewConflict(
            flow="subscription_status", record_ref="salesforce:Account:001x", reason="edited by hand",
            nue_values={"MRR__c": "100"}, salesforce_values={"MRR__c": "120"}, synced_values={"MRR__c": "90"},
        ))
        assert (await store.get_event(event_id)).status is EventStatus.CONFLICT  # type: ignore[union-attr]
        resolved = await store.resolve_conflict(conflict_id, resolution=Resolution.TAKE_NUE,
                                                actor="ops@example", comment="Nue is right")
        assert resolved.status is ConflictStatus.RESOLVED and resolved.resolved_by == "ops@example"
        assert resolved.comment == "Nue is right" and resolved.resolution is Resolution.TAKE_NUE
        assert (await store.get_event(event_id)).status is EventStatus.RECEIVED  # type: ignore[union-attr]
        [synced] = (await store.get_synced(["salesforce:Account:001x"])).values()
        assert synced.values == {"MRR__c": "120"} and synced.declined == {}
        assert await store.list_conflicts() == []
        with pytest.raises(StoreError, match="already resolved"):
            await store.resolve_conflict(conflict_id, resolution=Resolution.SKIP, actor="x")

    async def test_events_about_one_record_share_its_open_conflict(self, store: Store) -> None:
        """A second event about a record with an open conflict joins it (showing the latest values); the
        decision then applies to both."""
        await store.add_events([event("e1"), event("e2"), event("e3")])
        first, second, other = await store.claim_events(worker="w", limit=3, lease=timedelta(minutes=1))
        ref = "salesforce:Account:001z"
        one = await store.conflict_event(first.id, NewConflict(flow="subscription_status", record_ref=ref,
                                                               reason="edited", nue_values={"MRR__c": "1"}))
        two = await store.conflict_event(second.id, NewConflict(flow="subscription_status", record_ref=ref,
                                                                reason="edited again", nue_values={"MRR__c": "2"}))
        three = await store.conflict_event(other.id, NewConflict(flow="onboarding", record_ref=ref, reason="x"))
        assert one == two != three
        shown = await store.get_conflict(one)
        assert shown is not None and shown.reason == "edited again" and shown.nue_values == {"MRR__c": "2"}
        await store.resolve_conflict(one, resolution=Resolution.TAKE_NUE, actor="ops")
        for event_id, status in ((first.id, EventStatus.RECEIVED), (second.id, EventStatus.RECEIVED),
                                 (other.id, EventStatus.CONFLICT)):
            assert (await store.get_event(event_id)).status is status  # type: ignore[union-attr]

    async def test_conflict_take_salesforce_finishes_the_event(self, store: Store) -> None:
        """Take Salesforce: nothing is written anywhere; its values are the accepted baseline."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        conflict_id = await store.conflict_event(event_id, NewConflict(
            flow="subscription_status", record_ref="salesforce:Account:001y", reason="edited by hand",
            nue_values={"MRR__c": "100"}, salesforce_values={"MRR__c": "120"}))
        await store.resolve_conflict(conflict_id, resolution=Resolution.TAKE_SALESFORCE, actor="ops")
        assert (await store.get_event(event_id)).status is EventStatus.DONE  # type: ignore[union-attr]
        [synced] = (await store.get_synced(["salesforce:Account:001y"])).values()
        assert synced.values == {"MRR__c": "120"} and synced.declined == {"MRR__c": "100"}

    async def test_conflict_skip_closes_event(self, store: Store) -> None:
        """Skipping a conflict finishes its event without another attempt."""
        await store.add_events([event("e1")])
        event_id = await claim_one(store)
        conflict_id = await store.conflict_event(event_id, NewConflict(flow="f", record_ref="r", reason="why"))
        await store.resolve_conflict(conflict_id, resolution=Resolution.SKIP, actor="ops")
        assert (await store.get_event(event_id)).status is EventStatus.DONE  # type: ignore[union-attr]


class TestConsoleQueries:
    async def test_synced_values_follow_confirmed_writes_only(self, store: Store) -> None:
        """A confirmed write's fields become the record's last synced values; a rejected one's do not."""
        ref = "salesforce:Account:001A"
        await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                               outcome="ok", record_ref=ref, synced_fields={"MRR__c": "10.00"}))
        await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                               outcome="rejected", record_ref=ref, synced_fields={"MRR__c": "99"}))
        await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                               outcome="ok", record_ref=ref,
                                               synced_fields={"Status__c": "Active", "MRR__c": "12.50"}))
        synced = await store.get_synced([ref, "salesforce:Account:none"])
        assert list(synced) == [ref] and synced[ref].values == {"MRR__c": "12.50", "Status__c": "Active"}

    async def test_search_finds_events_writes_and_intents_by_any_id(self, store: Store) -> None:
        """The record timeline's searches: by key or payload text, with LIKE's wildcards taken literally."""
        await store.add_events([NewEvent(source="nue_webhook", key="nue:a", type="subscription.updated",
                                         payload={"data": {"customerId": "CUST_1"}}),
                                NewEvent(source="nue_webhook", key="nue:b", type="subscription.updated",
                                         payload={"data": {"customerId": "CUSTX1"}})])
        assert [e.key for e in await store.search_events("CUST_1")] == ["nue:a"]  # "_" is not a wildcard
        assert [e.key for e in await store.search_events("CUST")] == ["nue:b", "nue:a"]  # newest first
        await store.record_intent(NewIntent(key="flow:account:001Q", system="salesforce", operation="update",
                                            target="Account/001Q", request={"MRR__c": 1}))
        assert [i.key for i in await store.list_intents(mentioning="001Q")] == ["flow:account:001Q"]
        assert await store.list_intents() == []
        await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                               outcome="ok", record_ref="salesforce:Account:001Q"))
        assert len(await store.list_writes(mentioning="001Q")) == 1
        assert await store.list_writes(mentioning="001Z") == []
        await store.put_link(Link(object_type="account", nue_id="CUST_1", salesforce_id="001Q"))
        assert await store.links_of("001Q") == await store.links_of("CUST_1") != []

    async def test_finished_per_minute_counts_done_events(self, store: Store) -> None:
        await store.add_events([event("e1"), event("e2"), event("e3")])
        for _ in range(2):
            await store.complete_event(await claim_one(store))
        counts = await store.finished_per_minute(datetime(2000, 1, 1, tzinfo=UTC))
        assert sum(c.count for c in counts) == 2 and all(c.minute.second == 0 for c in counts)


class TestLinksIntentsAudit:
    async def test_links_both_ways_and_refuses_a_second_partner(self, store: Store) -> None:
        """A link is found from either side; re-linking one side elsewhere raises."""
        link = Link(object_type="account", nue_id="c-1", salesforce_id="001A")
        await store.put_link(link)
        await store.put_link(link)  # the same pair again is fine
        assert await store.find_link("account", nue_id="c-1") == link
        assert await store.find_link("account", salesforce_id="001A") == link
        assert await store.find_link("order", nue_id="c-1") is None
        with pytest.raises(LinkConflict):
            await store.put_link(Link(object_type="account", nue_id="c-2", salesforce_id="001A"))

    async def test_links_of_many_ids_in_one_read(self, store: Store) -> None:
        """A claim's links are read at once, by Nue ids or by Salesforce ids, of one object type only."""
        first, second = (Link(object_type="account", nue_id=f"c-{n}", salesforce_id=f"001{n}") for n in (1, 2))
        for link in (first, second, Link(object_type="order", nue_id="c-1", salesforce_id="801A")):
            await store.put_link(link)
        assert await store.find_links("account", nue_ids=["c-2", "c-1", "c-9"]) == [first, second]
        assert await store.find_links("account", salesforce_ids=["0012"]) == [second]
        assert await store.find_links("account", nue_ids=["c-1"], salesforce_ids=["0012"]) == [first, second]
        assert await store.find_links("account") == []
        assert await store.find_links("account", salesforce_ids=["801A"]) == []

    async def test_intent_lifecycle(self, store: Store) -> None:
        """An intent is recorded once, then sent, then confirmed with its result."""
        new = NewIntent(key="closed_won:006x:order", system="nue", operation="create_order", target="Order",
                        request={"name": "x"})
        first = await store.record_intent(new)
        again = await store.record_intent(new)
        assert first.status is again.status is IntentStatus.RECORDED
        await store.begin_send([new.key])
        await store.confirm_intent(new.key, {"id": "o-1"})
        stored = await store.get_intent(new.key)
        assert stored is not None and stored.status is IntentStatus.CONFIRMED and stored.result == {"id": "o-1"}
        with pytest.raises(IllegalTransition):
            await store.fail_intent(new.key, "too late")

    async def test_audit_log(self, store: Store) -> None:
        """External writes are listed newest first and filtered by record."""
        await store.record_write(NewAuditEntry(system="salesforce", operation="update", target="Account",
                                               outcome="ok", record_ref="001A", status=204, mapping_version=1))
        await store.record_write(NewAuditEntry(system="nue", operation="create", target="Order", outcome="ok",
                                               record_ref="o-1", status=200))
        assert [w.record_ref for w in await store.list_writes()] == ["o-1", "001A"]
        [only] = await store.list_writes(record_ref="001A")
        assert only.mapping_version == 1 and only.status == 204


class TestConcurrency:
    async def test_two_tasks_never_claim_the_same_event(self, store: Store) -> None:
        """Concurrent claimers split the inbox with no event claimed twice."""
        await store.add_events([event(f"e{i}") for i in range(60)])
        claimed: dict[str, list[int]] = {"a": [], "b": []}

        async def worker(name: str) -> None:
            while batch := await store.claim_events(worker=name, limit=3, lease=LEASE):
                claimed[name].extend(e.id for e in batch)
                for e in batch:
                    await store.complete_event(e.id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "a")
            tg.start_soon(worker, "b")
        everything = claimed["a"] + claimed["b"]
        assert len(everything) == len(set(everything)) == 60
        assert (await store.queue_depths())[EventStatus.DONE] == 60

    async def test_concurrent_writers_on_one_store(self, store: Store) -> None:
        """Two tasks adding overlapping events end with each key stored once."""
        results: list[list[bool]] = []

        async def writer(offset: int) -> None:
            for i in range(20):
                results.append(await store.add_events([event(f"k{(i + offset) % 30}")]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, 0)
            tg.start_soon(writer, 10)
        assert sum(flag for batch in results for flag in batch) == 30
        assert (await store.queue_depths())[EventStatus.RECEIVED] == 30

    async def test_two_connections_share_the_file(self, store_target: Path | str) -> None:
        """A second process's store (the CLI) sees what the daemon's wrote and can write too."""
        daemon, cli = await open_store(store_target), await open_store(store_target)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.add_events, [event(f"d{i}") for i in range(50)])
                tg.start_soon(cli.add_events, [event(f"c{i}") for i in range(50)])
            summary = await cli.summary()
            assert summary.queue_depths[EventStatus.RECEIVED] == 100
        finally:
            await daemon.close()
            await cli.close()


class TestOrderingAndReopen:
    async def test_entity_version_only_moves_forward(self, store: Store) -> None:
        """An older version is not recorded over a newer one."""
        assert await store.get_entity_version("nue:customer:c1") is None
        assert await store.raise_entity_version("nue:customer:c1", "2026-01-02T00:00:00Z")
        assert not await store.raise_entity_version("nue:customer:c1", "2026-01-01T00:00:00Z")
        assert await store.get_entity_version("nue:customer:c1") == "2026-01-02T00:00:00Z"
        assert await store.raise_entity_version("nue:customer:c1", "2026-01-03T00:00:00Z")

    async def test_many_entity_versions_raise_in_one_go(self, store: Store) -> None:
        """A step's versions (more than one statement's rows): each new or newer one is raised and named, an
        older or equal one is kept and not named."""
        await store.raise_entity_versions({"e-000": "5", "e-001": "5", "e-002": "5"})
        wanted = {f"e-{n:03d}": "6" for n in range(250)} | {"e-001": "4", "e-002": "5"}
        raised = await store.raise_entity_versions(wanted)
        assert raised == {f"e-{n:03d}" for n in range(250)} - {"e-001", "e-002"}
        assert await store.get_entity_versions(["e-000", "e-001", "e-002", "e-249"]) == {
            "e-000": "6", "e-001": "5", "e-002": "5", "e-249": "6"}

    async def test_failed_intent_can_be_reopened(self, store: Store) -> None:
        """A failed write is attempted again from recorded; a confirmed one cannot be."""
        await store.record_intent(NewIntent(key="k", system="salesforce", operation="update", target="Account"))
        await store.fail_intent("k", "UNABLE_TO_LOCK_ROW")
        await store.reopen_intent("k")
        assert (await store.get_intent("k")).status is IntentStatus.RECORDED  # type: ignore[union-attr]
        await store.confirm_intent("k", {})
        with pytest.raises(IllegalTransition):
            await store.reopen_intent("k")

    async def test_ever_sent_survives_a_reopen(self, store: Store, clock: FakeClock) -> None:
        """Once marked sent, an intent stays `ever_sent` through failure and reopening (a crash between reopen and
        send must still look it up); an unknown outcome's settle time is kept until it settles otherwise."""
        await store.record_intent(NewIntent(key="k", system="nue", operation="NueCreateOrder", target="Order:o"))
        assert not (await store.get_intent("k")).ever_sent  # type: ignore[union-attr]
        await store.begin_send(["k"])
        until = clock.now + timedelta(minutes=3)
        await store.fail_intent("k", "read timeout", settle_for=timedelta(minutes=3))
        failed = await store.get_intent("k")
        assert failed is not None and failed.ever_sent and failed.settle_after == until
        await store.reopen_intent("k")
        reopened = await store.get_intent("k")
        assert reopened is not None and reopened.status is IntentStatus.RECORDED
        assert reopened.ever_sent and reopened.settle_after == until
        await store.confirm_intent("k", {"id": "o-1"})
        done = await store.get_intent("k")
        assert done is not None and done.ever_sent and done.settle_after is None


def intent(key: str = "k") -> NewIntent:
    return NewIntent(key=key, system="salesforce", operation="update", target="Account", request={"Id": "001A"})


class TestSending:
    async def test_begin_send_marks_a_chunk_sent_and_may_send_again(self, store: Store, clock: FakeClock) -> None:
        """One step marks every write of a call sent (ever_sent, the time); an intent left sent is sent again,
        stamped anew; a confirmed one or an unknown key is refused and nothing changes."""
        for key in ("a", "b"):
            await store.record_intent(intent(key))
        await store.begin_send(["a", "b", "a"])
        first = await store.get_intent("a")
        assert first is not None and first.status is IntentStatus.SENT and first.ever_sent
        clock.advance(seconds=30)
        await store.begin_send(["a"])  # a crash left it sent: it is sent again, from now
        again = await store.get_intent("a")
        assert again is not None and again.updated_at == first.updated_at + timedelta(seconds=30)
        await store.confirm_intent("b", {"id": "1"})
        with pytest.raises(IllegalTransition):
            await store.begin_send(["a", "b"])
        with pytest.raises(RecordNotFound):
            await store.begin_send(["a", "never-recorded"])
        assert (await store.get_intent("a")).updated_at == again.updated_at  # type: ignore[union-attr]


async def lead(store: Store, replica_id: str = "box-a") -> int:
    taken = await store.try_lead(replica_id)
    assert taken is not None
    return taken.epoch


class TestFencing:
    """Every step towards an external write names the leadership epoch it was decided under; once another replica
    (or, on one box, another process) has taken leadership, the step changes nothing and raises Fenced."""

    async def test_a_current_epoch_is_let_through(self, store: Store) -> None:
        epoch = await lead(store)
        await store.add_events([event("e1")])
        [claimed] = await store.claim_events(worker="w", limit=5, lease=LEASE, epoch=epoch)
        await store.record_intent(intent("k"), epoch=epoch)
        await store.begin_send(["k"], epoch=epoch)
        await store.confirm_intent("k", {"id": "1"}, epoch=epoch)
        assert await store.complete_events([claimed.id], claimed_by="w", epoch=epoch) == []
        await store.check_epoch(epoch)
        stored = await store.get_intent("k")
        assert stored is not None and stored.epoch == epoch

    async def test_every_fenced_step_of_an_old_epoch_changes_nothing(self, store_target: Path | str,
                                                                     clock: FakeClock) -> None:
        """A second store takes leadership over the first (on SQLite: a second process on the file); every fenced
        call of the first's epoch is refused and leaves the store as it was."""
        old, new = await open_store(store_target, clock=clock), await open_store(store_target, clock=clock)
        try:
            stale = await lead(old, "box-a")
            await old.add_events([event("e1"), event("e2")])
            [held, other] = await old.claim_events(worker="w", limit=5, lease=LEASE, epoch=stale)
            for key in ("recorded", "sent", "failed"):
                await old.record_intent(intent(key), epoch=stale)
            await old.begin_send(["sent", "failed"], epoch=stale)
            await old.fail_intent("failed", "timeout", epoch=stale)
            await force_lead(new, "box-b")
            before = await snapshot(new)
            letter = NewDeadLetter(system="nue", operation="x", error="e")
            conflict = NewConflict(flow="f", record_ref="r", reason="x")
            refused = [
                old.claim_events(worker="w", limit=5, lease=LEASE, epoch=stale),
                old.release_claims("w", epoch=stale),
                old.complete_event(held.id, claimed_by="w", epoch=stale),
                old.complete_events([held.id, other.id], claimed_by="w", epoch=stale),
                old.retry_event(held.id, error="x", next_attempt_at=clock.now, claimed_by="w", epoch=stale),
                old.dead_letter_event(held.id, letter, claimed_by="w", epoch=stale),
                old.conflict_event(held.id, conflict, claimed_by="w", epoch=stale),
                old.record_intent(intent("new"), epoch=stale),
                old.begin_send(["recorded", "sent"], epoch=stale),
                old.confirm_intent("sent", {"id": "1"}, epoch=stale),
                old.fail_intent("sent", "x", settle_for=LEASE, epoch=stale),
                old.reopen_intent("failed", epoch=stale),
                old.check_epoch(stale),
            ]
            for call in refused:
                with pytest.raises(Fenced, match=f"epoch {stale} is over"):
                    await call
            assert await snapshot(new) == before
        finally:
            await old.close()
            await new.close()

    async def test_claims_of_an_older_epoch_are_taken_over_at_once(self, store_target: Path | str,
                                                                   clock: FakeClock) -> None:
        """The new leader takes the dead leader's claims without waiting out their lease; a claim of its own epoch
        (another of its workers) keeps its lease."""
        old, new = await open_store(store_target, clock=clock), await open_store(store_target, clock=clock)
        try:
            stale = await lead(old, "box-a")
            await old.add_events([event("e1"), event("e2")])
            [orphan] = await old.claim_events(worker="box-a/worker-1", limit=1, lease=LEASE, epoch=stale)
            current = await force_lead(new, "box-b")
            taken, fresh = await new.claim_events(worker="box-b/worker-1", limit=5, lease=LEASE, epoch=current)
            assert taken.id == orphan.id and taken.claimed_by == "box-b/worker-1" and taken.attempts == 2
            assert fresh.key == "e2"
            assert await new.claim_events(worker="box-b/worker-2", limit=5, lease=LEASE, epoch=current) == []
        finally:
            await old.close()
            await new.close()

    async def test_taking_leadership_raises_the_epoch_once_per_taking(self, store: Store, clock: FakeClock) -> None:
        """The first try_lead takes a new epoch with the store's time; later ones keep it; leadership() shows it."""
        assert await store.leadership() is None
        first = await store.try_lead("box-a")
        assert first is not None and first.epoch >= 1 and first.replica_id == "box-a" and first.since == clock.now
        clock.advance(seconds=5)
        assert await store.try_lead("box-a") == first
        assert await store.leadership() == first


class TestPostgresTakeover:
    async def test_a_takeover_waits_for_a_fenced_step_in_progress(self, pg_url: str) -> None:
        """The old leader's fenced transaction holds the leadership row shared: the new leader's epoch update waits
        until it commits (so the new leader reads what it wrote), and no fenced step of the old epoch passes after."""
        import asyncpg

        from revdaemon.store.postgres import FENCE

        old, new = await open_store(pg_url), await open_store(pg_url)
        in_flight = await asyncpg.connect(pg_url)
        try:
            stale = await lead(old, "box-a")
            transaction = in_flight.transaction()
            await transaction.start()
            await in_flight.fetchrow(FENCE)  # the old leader, half-way through a fenced step
            taken: list[int] = []

            async def take_over() -> None:
                taken.append(await force_lead(new, "box-b"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(take_over)
                await anyio.sleep(0.5)
                assert taken == []  # waiting on the share lock
                await transaction.commit()
            assert taken == [stale + 1]
            with pytest.raises(Fenced):
                await old.record_intent(intent("late"), epoch=stale)
        finally:
            await in_flight.close()
            await old.close()
            await new.close()


async def force_lead(store: Store, replica_id: str) -> int:
    """Leadership for `store` while another store of the same database holds it: on SQLite the later process takes
    it; on PostgreSQL the holder's lock session must end first, so it is ended as the server ends a silent one."""
    taken = await store.try_lead(replica_id)
    if taken is None:
        import asyncpg

        url = store._db._url  # type: ignore[attr-defined]  # PostgreSQL's only
        admin = await asyncpg.connect(url)
        try:
            await admin.fetchval("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'revdaemon leader %' AND datname = current_database()")
        finally:
            await admin.close()
        taken = await store.try_lead(replica_id)
    assert taken is not None
    return taken.epoch


async def snapshot(store: Store) -> tuple[object, ...]:
    """What the fenced calls could change: every event and intent as stored, and the letters and conflicts."""
    events = sorted(await store.list_events(limit=100), key=lambda e: e.id)
    intents = sorted(await store.list_intents(mentioning="Account", limit=100), key=lambda i: i.key)
    return (events, intents, await store.list_dead_letters(), await store.list_conflicts())


class TestFailures:
    async def test_a_failed_commit_leaves_no_transaction_open(self, store_target: Path | str) -> None:
        """After a write fails inside its transaction, the next operations still work."""
        store = await open_store(store_target)
        try:
            with pytest.raises(StoreError):
                # A dead letter for an event that does not exist fails inside the transaction.
                await store.dead_letter_event(999, NewDeadLetter(system="s", operation="o", error="e"))
            assert await store.add_events([event("after")]) == [True]
        finally:
            await store.close()

    async def test_not_a_database_is_a_store_error(self, tmp_path: Path) -> None:
        """A file that is not a state database is refused with the store's own error, not sqlite3's."""
        from revdaemon.errors import StoreUnavailable

        path = tmp_path / "db.sqlite3"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreUnavailable):
            await open_store(path)

    async def test_read_only_open_refuses_a_missing_file_and_creates_nothing(self, tmp_path: Path) -> None:
        """`status` on a fresh box reports no database and leaves the directory untouched."""
        from revdaemon.errors import StoreMissing

        with pytest.raises(StoreMissing):
            await open_store(tmp_path / "state" / "db.sqlite3", read_only=True)
        assert not (tmp_path / "state").exists()

    async def test_two_stores_migrating_a_new_file_at_once(self, store_target: Path | str) -> None:
        """Two processes (replicas) opening the same new database both end at the current schema."""
        stores: list[Store] = []

        async def opener() -> None:
            stores.append(await open_store(store_target))

        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            tg.start_soon(opener)
        try:
            current = SCHEMA_VERSION
            assert [await s.schema_version() for s in stores] == [current, current]
        finally:
            for s in stores:
                await s.close()


class TestBatchCompletion:
    async def test_complete_many_skips_lost_claims(self, store: Store, clock: FakeClock) -> None:
        """Events still held are finished together; one taken over by another worker is left alone."""
        await store.add_events([event("a"), event("b")])
        held = await store.claim_events(worker="w1", limit=2, lease=LEASE)
        clock.advance(minutes=6)
        [taken] = await store.claim_events(worker="w2", limit=1, lease=LEASE)
        lost = await store.complete_events([e.id for e in held], claimed_by="w1")
        assert lost == [taken.id]
        assert (await store.get_event(taken.id)).status is EventStatus.CLAIMED  # type: ignore[union-attr]
        depths = await store.queue_depths()
        assert depths[EventStatus.DONE] == 1


class TestTwoStoresOnOneDatabase:
    """Two daemon processes (replicas) sharing one store, each with its own connections."""

    async def test_concurrent_claims_never_take_the_same_event(self, store_target: Path | str,
                                                               clock: FakeClock) -> None:
        """Claimers on two stores split the inbox (PostgreSQL: FOR UPDATE SKIP LOCKED); no event is taken twice."""
        one, two = await open_store(store_target, clock=clock), await open_store(store_target, clock=clock)
        try:
            await one.add_events([event(f"e{i}") for i in range(80)])
            claimed: dict[str, list[int]] = {}

            async def worker(store: Store, name: str) -> None:
                claimed[name] = []
                while batch := await store.claim_events(worker=name, limit=4, lease=LEASE):
                    claimed[name].extend(e.id for e in batch)
                    assert await store.complete_events([e.id for e in batch], claimed_by=name) == []

            async with anyio.create_task_group() as tg:
                for index, store in enumerate((one, two, one, two)):
                    tg.start_soon(worker, store, f"replica{index % 2}-w{index}")
            everything = [i for ids in claimed.values() for i in ids]
            assert len(everything) == len(set(everything)) == 80
            assert (await two.queue_depths())[EventStatus.DONE] == 80
        finally:
            await one.close()
            await two.close()

    async def test_the_survivor_takes_over_an_expired_lease(self, store_target: Path | str, clock: FakeClock) -> None:
        """A claim held by a replica that died is claimable by the other once its lease ran out, not before; the
        dead replica's late settlement is refused."""
        dying, survivor = await open_store(store_target, clock=clock), await open_store(store_target, clock=clock)
        try:
            await dying.add_events([event("e1")])
            [held] = await dying.claim_events(worker="dying", limit=5, lease=LEASE)
            assert await survivor.claim_events(worker="survivor", limit=5, lease=LEASE) == []
            clock.advance(minutes=6)
            [taken] = await survivor.claim_events(worker="survivor", limit=5, lease=LEASE)
            assert taken.id == held.id and taken.claimed_by == "survivor" and taken.attempts == 2
            from revdaemon.errors import ClaimLost

            with pytest.raises(ClaimLost):
                await dying.complete_event(held.id, claimed_by="dying")
            await survivor.complete_event(taken.id, claimed_by="survivor")
        finally:
            await dying.close()
            await survivor.close()

    async def test_a_webhook_reaching_both_replicas_is_stored_once(self, store_target: Path | str) -> None:
        """The inbox's unique key makes the second copy a no-op, whichever replica it reached."""
        one, two = await open_store(store_target), await open_store(store_target)
        try:
            results: list[list[bool]] = []

            async def deliver(store: Store) -> None:
                for i in range(20):
                    results.append(await store.add_events([event(f"k{i}"), event(f"k{i + 1}")]))

            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver, one)
                tg.start_soon(deliver, two)
            assert sum(flag for batch in results for flag in batch) == 21
        finally:
            await one.close()
            await two.close()


def beat(replica_id: str, *, leader: bool = False, pid: int = 4242) -> ReplicaBeat:
    return ReplicaBeat(replica_id=replica_id, host=f"box-{replica_id}", pid=pid,
                       started_at=datetime(2026, 1, 1, 11, 0, tzinfo=UTC), is_leader=leader)


class TestReplicas:
    async def test_heartbeats_are_listed_with_their_time(self, store: Store, clock: FakeClock) -> None:
        """A heartbeat inserts or updates its replica, stamped with the store's clock."""
        assert await store.list_replicas() == []
        await store.heartbeat(beat("b"))
        await store.heartbeat(beat("a", leader=True))
        clock.advance(seconds=10)
        await store.heartbeat(beat("b", leader=True, pid=99))
        a, b = await store.list_replicas()
        assert (a.id, a.host, a.pid, a.is_leader) == ("a", "box-a", 4242, True)
        assert a.last_heartbeat == clock.now - timedelta(seconds=10)
        assert (b.id, b.pid, b.is_leader, b.last_heartbeat) == ("b", 99, True, clock.now)
        assert b.started_at == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)

    async def test_a_replica_silent_for_a_week_is_forgotten(self, store: Store, clock: FakeClock) -> None:
        await store.heartbeat(beat("renamed"))
        clock.advance(days=6)
        await store.heartbeat(beat("a"))
        assert [r.id for r in await store.list_replicas()] == ["a", "renamed"]
        clock.advance(days=1, seconds=1)
        await store.heartbeat(beat("a"))
        assert [r.id for r in await store.list_replicas()] == ["a"]

    async def test_one_sqlite_process_leads_until_another_takes_the_file(self, tmp_path: Path) -> None:
        """The daemon on one box leads from its first try; a second process on the same file (a mistake) takes a
        new epoch, and the first stays on standby for the rest of its run instead of taking it back."""
        first, second = await open_store(tmp_path / "db.sqlite3"), await open_store(tmp_path / "db.sqlite3")
        try:
            taken = await first.try_lead("r1")
            assert taken is not None and await first.try_lead("r1") == taken
            later = await second.try_lead("r2")
            assert later is not None and later.epoch == taken.epoch + 1
            assert await first.try_lead("r1") is None and await first.try_lead("r1") is None
            assert await second.try_lead("r2") == later
        finally:
            await first.close()
            await second.close()

    async def test_only_one_postgres_replica_leads_until_it_closes(self, pg_url: str) -> None:
        """The leader lock is held by one store; closing it (its session ends) lets the other lead."""
        first, second = await open_store(pg_url), await open_store(pg_url)
        try:
            taken = await first.try_lead("first")
            assert taken is not None
            assert await second.try_lead("second") is None
            assert await first.try_lead("first") == taken  # still leading
            assert await second.try_lead("second") is None
            await first.close()
            after = await second.try_lead("second")
            assert after is not None and after.epoch == taken.epoch + 1 and after.replica_id == "second"
        finally:
            await first.close()
            await second.close()

    async def test_a_leader_whose_connection_died_loses_and_regains_leadership(self, pg_url: str) -> None:
        """When the leader's session is killed, its next try_lead says False (stop scheduled work), the other
        replica can lead, and a later call reconnects and competes again."""
        import asyncpg

        leader, other = await open_store(pg_url), await open_store(pg_url)
        try:
            assert await leader.try_lead("leader") is not None
            admin = await asyncpg.connect(pg_url)
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                    "WHERE application_name = 'revdaemon leader leader'")
            finally:
                await admin.close()
            assert killed == 1
            assert await leader.try_lead("leader") is None
            assert await other.try_lead("other") is not None
            assert await leader.try_lead("leader") is None  # reconnected; the other holds the lock now
            await other.close()
            assert await leader.try_lead("leader") is not None
        finally:
            await leader.close()
            await other.close()


class TestPostgresSchema:
    async def test_empty_database_is_migrated_and_reopened_unchanged(self, pg_url: str) -> None:
        import asyncpg

        store = await open_store(pg_url)
        await store.add_events([event("e1")])
        await store.close()
        store = await open_store(pg_url)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
            assert (await store.find_event("e1")) is not None
        finally:
            await store.close()
        conn = await asyncpg.connect(pg_url)
        try:
            tables = {row[0] for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        finally:
            await conn.close()
        assert {"inbox_events", "cursors", "id_links", "write_intents", "conflicts", "dead_letters", "audit_log",
                "entity_versions", "synced_values", "mapping_versions", "replicas", "store_meta", "leadership",
                "revdaemon_schema", "record_names", "shadow_plans"} == tables

    async def test_intents_of_schema_1_are_kept_through_every_migration(self, pg_url: str) -> None:
        """Migrations 2-5 keep the stored intents (the owner columns come and go)."""
        import asyncpg

        from revdaemon.store.postgres import VERSION_TABLE

        conn = await asyncpg.connect(pg_url)
        try:
            async with conn.transaction():
                await conn.execute(VERSION_TABLE)
                await conn.execute(MIGRATIONS[4].postgres or "")  # PostgreSQL's first release, its own number 1
                await conn.execute("INSERT INTO revdaemon_schema (version) VALUES (1)")
                await conn.execute("""INSERT INTO write_intents (idem_key, system, operation, target, request,
                                      status, created_at, updated_at)
                                      VALUES ('k', 's', 'o', 't', '{}', 'sent', now(), now())""")
        finally:
            await conn.close()
        store = await open_store(pg_url)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
            old = await store.get_intent("k")
            assert old is not None and old.status is IntentStatus.SENT and old.epoch is None
            assert old.ever_sent  # migration 3: an intent stored as sent may have reached the API
            assert await store.leadership() is None  # migration 5: nobody has led yet
        finally:
            await store.close()

    async def test_newer_database_is_refused_untouched(self, pg_url: str) -> None:
        """A database migrated by a newer revdaemon is refused, read-only or not, and left as it is."""
        import asyncpg

        store = await open_store(pg_url)
        await store.close()
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("UPDATE revdaemon_schema SET version = $1", SCHEMA_VERSION + 1)
            for read_only in (False, True):
                with pytest.raises(SchemaTooNew, match="newer than this revdaemon"):
                    await open_store(pg_url, read_only=read_only)
            assert await conn.fetchval("SELECT version FROM revdaemon_schema") == SCHEMA_VERSION + 1
        finally:
            await conn.close()

    async def test_read_only_refuses_a_database_without_the_schema_and_creates_nothing(self, pg_url: str) -> None:
        import asyncpg

        from revdaemon.errors import StoreMissing

        with pytest.raises(StoreMissing, match="first start"):
            await open_store(pg_url, read_only=True)
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") == 0
        finally:
            await conn.close()

    async def test_read_only_reads_and_refuses_writes(self, pg_url: str) -> None:
        writer = await open_store(pg_url)
        await writer.add_events([event("e1")])
        reader = await open_store(pg_url, read_only=True)
        try:
            assert (await reader.summary()).queue_depths[EventStatus.RECEIVED] == 1
            with pytest.raises(StoreError):
                await reader.add_events([event("e2")])
            assert not await reader.try_lead("cli")
        finally:
            await reader.close()
            await writer.close()

    async def test_errors_never_show_the_password(self, pg_url: str) -> None:
        """A refused login or an unreachable server is the store's own error, naming the database without
        the URL's password."""
        from urllib.parse import urlsplit

        from revdaemon.errors import StoreUnavailable

        parts = urlsplit(pg_url)
        assert parts.password
        wrong = pg_url.replace(f":{parts.password}@", ":not-the-password-Zq9@")
        with pytest.raises(StoreUnavailable) as refused:
            await open_store(wrong)
        assert "not-the-password-Zq9" not in str(refused.value) and "refused the login" in str(refused.value)
        closed_port = pg_url.replace(f":{parts.port}/", ":1/")
        with pytest.raises(StoreUnavailable) as unreachable:
            await open_store(closed_port)
        assert parts.password not in str(unreachable.value)

    async def test_backup_points_to_pg_dump(self, pg_url: str, tmp_path: Path) -> None:
        store = await open_store(pg_url)
        try:
            with pytest.raises(StoreError, match="pg_dump"):
                await store.backup(tmp_path / "copy")
        finally:
            await store.close()
        assert not (tmp_path / "copy").exists()


class TestOpenStoreTargets:
    async def test_sqlite_url_and_text_path_open_the_file(self, tmp_path: Path) -> None:
        """`sqlite:///<path>` and a path given as text open the same SQLite file as the Path does."""
        path = tmp_path / "db.sqlite3"
        store = await open_store(f"sqlite:///{path}")
        await store.add_events([event("e1")])
        await store.close()
        store = await open_store(str(path))
        try:
            assert (await store.find_event("e1")) is not None
        finally:
            await store.close()

    async def test_an_unknown_url_is_refused_without_echoing_it(self) -> None:
        with pytest.raises(StoreError) as refused:
            await open_store("mysql://user:hunter2-secret@db/revdaemon")
        assert "hunter2" not in str(refused.value)


class TestRecordNames:
    async def test_names_are_kept_replaced_and_found_by_name_or_number(self, store: Store, clock: FakeClock) -> None:
        """A later read's name replaces the kept one; an id two systems share keeps one name per system."""
        shared = "001000000000001AAA"
        await store.remember_names([
            RecordName(system="salesforce", object="Account", record_id=shared, name="Acme Corp"),
            RecordName(system="nue", object="Customer", record_id=shared, name="Acme Corp", number="A-0001"),
            RecordName(system="nue", object="Order", record_id="o-1", name=None, number="O-00000300"),
        ])
        clock.advance(seconds=5)
        await store.remember_names([RecordName(system="salesforce", object="Account", record_id=shared,
                                               name="Acme Corporation")])
        names = await store.names_of([shared, "o-1", "unknown"])
        assert {(n.system, n.record_id): n.text for n in names} == {
            ("salesforce", shared): "Acme Corporation", ("nue", shared): "Acme Corp (A-0001)",
            ("nue", "o-1"): "O-00000300"}
        assert [n.system for n in await store.find_names("acme corporation")] == ["salesforce"]
        assert [n.record_id for n in await store.find_names("o-0000030")] == ["o-1"]
        assert await store.find_names("100%") == []  # LIKE's own characters are taken literally
        assert await store.names_of([]) == [] and await store.find_names("  ") == []


class TestShadow:
    async def test_entries_are_kept_once_per_write_and_listed_since(self, store: Store, clock: FakeClock) -> None:
        write = NewShadowEntry(event_id=1, event_key="e1", flow="subscription_status", outcome="write",
                               system="salesforce", action="update", target="Account 001", idem_key="k1",
                               changes=({"field": "MRR__c", "current": 1, "planned": "2.00", "changes": True},),
                               warnings=("no",), flags=("edited by a person",))
        conflict = NewShadowEntry(event_id=2, event_key="e2", flow="quote_sync", outcome="conflict", note="why")
        assert await store.record_shadow([write, conflict]) == 2
        clock.advance(hours=1)
        again = NewShadowEntry(event_id=3, event_key="e3", flow="subscription_status", outcome="write",
                               idem_key="k1")
        assert await store.record_shadow([again, conflict]) == 1  # the same write is kept once; conflicts each
        entries = await store.list_shadow()
        assert [(e.event_key, e.outcome) for e in entries] == [("e1", "write"), ("e2", "conflict"), ("e2", "conflict")]
        assert entries[0].changes[0]["planned"] == "2.00" and entries[0].flags == ("edited by a person",)
        assert [e.event_key for e in await store.list_shadow(since=clock.now)] == ["e2"]

    async def test_promotion_is_recorded_once_and_moves_the_go_live_cut_off(self, store: Store,
                                                                            clock: FakeClock) -> None:
        created = await store.created_on()
        assert await store.shadow_promotion() is None and await store.go_live() == created
        clock.advance(days=9)
        first = await store.promote_shadow(actor="ana")
        assert first.actor == "ana" and first.go_live == clock.now.date() and await store.go_live() == first.go_live
        clock.advance(days=1)
        assert await store.promote_shadow(actor="bo", go_live=date(2030, 1, 1)) == first  # once
        assert await store.shadow_promotion() == first


class TestBatchedBookkeeping:
    async def test_record_intents_keeps_the_given_order_and_existing_ones(self, store: Store) -> None:
        first = await store.record_intent(NewIntent(key="b", system="salesforce", operation="SfUpdate",
                                                    target="Account:1"))
        await store.begin_send(["b"])
        made = await store.record_intents([
            NewIntent(key="c", system="nue", operation="NueCreateOrder", target="Order:o", event_id=None),
            NewIntent(key="b", system="salesforce", operation="SfUpdate", target="Account:1"),
            NewIntent(key="a", system="salesforce", operation="SfUpdate", target="Account:2", request={"x": 1})])
        assert [(i.key, i.status) for i in made] == [("c", IntentStatus.RECORDED), ("b", IntentStatus.SENT),
                                                    ("a", IntentStatus.RECORDED)]
        assert made[1].created_at == first.created_at and made[2].request == {"x": 1}
        assert await store.record_intents([]) == []

    async def test_settle_writes_is_all_or_nothing(self, store: Store) -> None:
        await store.record_intents([NewIntent(key=k, system="salesforce", operation="SfUpdate", target=f"Account:{k}")
                                    for k in ("k1", "k2", "k3")])
        await store.begin_send(["k1", "k2", "k3"])

        def settled(key: str, ok: bool, **more: object) -> Settlement:
            entry = NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account", idem_key=key,
                                  outcome="ok" if ok else "error", record_ref=f"salesforce:Account:{key}",
                                  synced_fields={"MRR__c": "1.00"} if ok else {})
            return Settlement(entry=entry, confirmed=ok, **more)  # type: ignore[arg-type]

        await store.settle_writes([settled("k1", True, result={"id": "001"}),
                                   settled("k2", False, error="timed out", settle_for=timedelta(minutes=2))])
        one, two = await store.get_intent("k1"), await store.get_intent("k2")
        assert one is not None and one.status is IntentStatus.CONFIRMED and one.result == {"id": "001"}
        assert two is not None and two.status is IntentStatus.FAILED and two.settle_after is not None
        assert "salesforce:Account:k1" in await store.get_synced(["salesforce:Account:k1"])
        # A settlement that cannot be kept (its intent is confirmed already) leaves the others unkept too.
        with pytest.raises(IllegalTransition):
            await store.settle_writes([settled("k3", True), settled("k1", True)])
        three = await store.get_intent("k3")
        assert three is not None and three.status is IntentStatus.SENT
        assert [w.idem_key for w in await store.list_writes(limit=10)] == ["k2", "k1"]
