"""Retention (store/retention.py): what a prune forgets and what it keeps, on both backends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from revdaemon.engine.executor import ROUTES
from revdaemon.engine.prune import nightly_prune, prune_store
from revdaemon.store import Store, open_store
from revdaemon.store.encoding import dumps
from revdaemon.store.migrations import MIGRATIONS
from revdaemon.store.records import (
    ConflictStatus,
    CursorUpdate,
    Link,
    NewAuditEntry,
    NewConflict,
    NewDeadLetter,
    NewEvent,
    NewIntent,
)
from revdaemon.store.retention import (
    KEPT_OPERATIONS,
    KEPT_OPERATIONS_SQL,
    ORDER,
    TOMBSTONE,
    TOMBSTONE_TEXT,
    PruneStep,
    Target,
    cutoff_of,
    intent_may_go,
)
from revdaemon.store.states import EventStatus, IntentStatus
from tests.unit.conftest import FakeClock

pytestmark = pytest.mark.anyio

LEASE = timedelta(minutes=5)
RETENTION = timedelta(days=90)


def event(key: str) -> NewEvent:
    return NewEvent(source="nue_webhook", key=key, type="order.activated", payload={"data": {"id": key}})


async def finished(store: Store, key: str) -> int:
    """A new event, claimed and done; its id."""
    await store.add_events([event(key)])
    [claimed] = await store.claim_events(worker="w", limit=1, lease=LEASE)
    await store.complete_event(claimed.id, claimed_by="w")
    return claimed.id


async def intent(store: Store, key: str, operation: str, event_id: int | None, *,
                 status: IntentStatus = IntentStatus.CONFIRMED) -> None:
    await store.record_intent(NewIntent(key=key, system="salesforce", operation=operation, target=f"Account:{key}",
                                        event_id=event_id))
    if status is IntentStatus.RECORDED:
        return
    await store.begin_send([key])
    if status is IntentStatus.CONFIRMED:
        await store.confirm_intent(key, {"id": key})
    elif status is IntentStatus.FAILED:
        await store.fail_intent(key, "refused")


async def audit(store: Store, name: str) -> None:
    await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                           outcome="ok", record_ref=f"salesforce:Account:{name}",
                                           synced_fields={"Name": name}))


async def prune(store: Store, now: datetime, **options: object) -> PruneStep:
    return await prune_store(store, now - RETENTION, pause=0, **options)  # type: ignore[arg-type]


class TestRules:
    def test_the_tombstone_is_stored_as_its_text(self) -> None:
        """The tombstone's stored text is what the backends compare payloads with."""
        assert dumps(TOMBSTONE) == TOMBSTONE_TEXT

    def test_kept_operations_are_the_executors_writes_that_are_not_idempotent(self) -> None:
        """The intents kept for ever are exactly those of the write kinds the executor never sends twice."""
        assert {kind.__name__ for kind, route in ROUTES.items() if not route.idempotent} == KEPT_OPERATIONS

    def test_both_schemas_leave_the_kept_operations_out_of_the_intents_index(self) -> None:
        """The partial index lists the same operations as the rules, so the queries' condition matches it."""
        for scripts in ([m.sqlite for m in MIGRATIONS], [m.postgres for m in MIGRATIONS]):
            index = next(script for script in scripts if script and "write_intents_prunable" in script)
            assert f"WHERE operation NOT IN {KEPT_OPERATIONS_SQL};" in index

    @pytest.mark.parametrize(("status", "operation", "event_status", "goes"), [
        (IntentStatus.CONFIRMED, "SfUpdate", EventStatus.DONE, True),
        (IntentStatus.FAILED, "SfUpsert", EventStatus.DONE, True),
        (IntentStatus.CONFIRMED, "SfDelete", None, True),
        (IntentStatus.CONFIRMED, "SfCreate", EventStatus.DONE, False),
        (IntentStatus.CONFIRMED, "NueCreateOrder", None, False),
        (IntentStatus.CONFIRMED, "SfUpdate", EventStatus.DEAD, False),
        (IntentStatus.CONFIRMED, "SfUpdate", EventStatus.CONFLICT, False),
        (IntentStatus.FAILED, "SfUpdate", EventStatus.RECEIVED, False),
        (IntentStatus.SENT, "SfUpdate", EventStatus.DONE, False),
        (IntentStatus.RECORDED, "SfUpdate", None, False),
    ])
    def test_which_intents_may_go(self, status: IntentStatus, operation: str, event_status: EventStatus | None,
                                  goes: bool) -> None:
        """Settled, idempotent, and its event done (or none): only then does an old intent go."""
        assert intent_may_go(status, operation, event_status) is goes

    def test_zero_days_keeps_everything(self) -> None:
        """retention_days 0 has no cutoff; any other number is that many days back."""
        now = datetime(2026, 5, 1, tzinfo=UTC)
        assert cutoff_of(now, 0) is None
        assert cutoff_of(now, 90) == now - timedelta(days=90)

    def test_a_run_takes_each_target_in_turn_and_a_short_batch_ends_one(self) -> None:
        """Full batches stay on their target; a short one moves to the next; after the last, the run is over."""
        step = PruneStep(cutoff=datetime(2026, 1, 1, tzinfo=UTC), batch=2)
        seen = []
        for read in (2, 1, 0, 2, 2, 0):
            seen.append(step.target)
            step = step.after_batch(read=read, pruned=read, last=None)
        assert seen == [ORDER[0], ORDER[0], ORDER[1], ORDER[2], ORDER[2], ORDER[2]]
        assert step.finished and step.batches == 6
        assert step.pruned == {Target.EVENT_PAYLOADS: 3, Target.WRITE_INTENTS: 0, Target.AUDIT_ENTRIES: 4}

    def test_a_batch_reads_at_least_one_row(self) -> None:
        with pytest.raises(ValueError, match="at least one row"):
            PruneStep(cutoff=datetime(2026, 1, 1, tzinfo=UTC), batch=0)


@dataclass
class Built:
    """The ids of rows of every kind, made before (old) and after (new) the cutoff."""

    old_done: int
    old_dead: int
    old_conflict: int
    old_waiting: int
    received_old_done_new: int
    new_done: int
    letter: int
    conflict: int


async def build(store: Store, clock: FakeClock) -> Built:
    """Rows of every kind 100 days ago, then rows of every kind now."""
    old_done = await finished(store, "old-done")
    await store.add_events([event("old-dead"), event("old-conflict"), event("old-waiting"), event("old-then-new")])
    dead, conflicted, waiting, later = await store.claim_events(worker="w", limit=4, lease=LEASE)
    letter = await store.dead_letter_event(dead.id, NewDeadLetter(system="salesforce", operation="SfUpdate",
                                                                  error="refused", record_ref="salesforce:A:1"))
    conflict = await store.conflict_event(conflicted.id, NewConflict(flow="subscription_status",
                                                                     record_ref="salesforce:A:2", reason="edited"))
    await store.retry_event(waiting.id, error="timed out", next_attempt_at=clock.now + timedelta(days=200),
                            claimed_by="w")
    await store.retry_event(later.id, error="timed out", next_attempt_at=clock.now + timedelta(days=95),
                            claimed_by="w")
    await store.put_link(Link(object_type="account", nue_id="c-1", salesforce_id="001A"))
    await store.set_cursor(CursorUpdate(name="nue:Order", value="2026-01-01T00:00:00Z"))
    await store.raise_entity_version("subscription:s-1", "2026-01-01T00:00:00.000000Z")
    await audit(store, "old")
    # Intents: those that may go, then those that must stay.
    await intent(store, "old:update", "SfUpdate", old_done)
    await intent(store, "old:upsert-failed", "SfUpsert", old_done, status=IntentStatus.FAILED)
    await intent(store, "old:no-event", "SfUpdate", None)
    await intent(store, "old:task", "SfCreate", old_done)
    await intent(store, "old:customer", "NueCreateCustomer", old_done)
    await intent(store, "old:order", "NueCreateOrder", None)
    await intent(store, "old:activation", "NueActivateOrder", old_done)
    await intent(store, "old:of-dead", "SfUpdate", dead.id)
    await intent(store, "old:of-conflict", "SfUpdate", conflicted.id)
    await intent(store, "old:of-waiting", "SfUpdate", waiting.id, status=IntentStatus.FAILED)
    await intent(store, "old:sent", "SfUpdate", old_done, status=IntentStatus.SENT)
    await intent(store, "old:recorded", "SfUpdate", old_done, status=IntentStatus.RECORDED)

    clock.advance(days=95)
    [again] = await store.claim_events(worker="w", limit=1, lease=LEASE)
    assert again.id == later.id
    await store.complete_event(later.id, claimed_by="w")  # received 95 days ago, finished now
    clock.advance(days=5)
    new_done = await finished(store, "new-done")
    await audit(store, "new")
    await intent(store, "new:update", "SfUpdate", new_done)
    return Built(old_done=old_done, old_dead=dead.id, old_conflict=conflicted.id, old_waiting=waiting.id,
                 received_old_done_new=later.id, new_done=new_done, letter=letter, conflict=conflict)


class TestWhatIsPruned:
    async def test_old_rows_of_every_kind_pruned_or_kept_by_the_rules(self, store: Store, clock: FakeClock) -> None:
        """Of rows 100 days old: a done event's payload, audit entries and settled idempotent intents of done events
        go; every event row and key, events not done, non-idempotent and unsettled intents, links, conflicts, dead
        letters, cursors, entity versions and synced values stay; and nothing newer than 90 days is touched."""
        built = await build(store, clock)
        step = await prune(store, clock.now)
        assert step.finished
        assert step.pruned == {Target.EVENT_PAYLOADS: 1, Target.WRITE_INTENTS: 3, Target.AUDIT_ENTRIES: 1}

        old_done = await store.get_event(built.old_done)
        assert old_done is not None and old_done.payload == TOMBSTONE and old_done.status is EventStatus.DONE
        assert (await store.find_event("old-done")) == old_done  # row, key and times kept
        for event_id, key in ((built.old_dead, "old-dead"), (built.old_conflict, "old-conflict"),
                              (built.old_waiting, "old-waiting"), (built.received_old_done_new, "old-then-new"),
                              (built.new_done, "new-done")):
            kept = await store.get_event(event_id)
            assert kept is not None and kept.payload == {"data": {"id": key}}, key

        gone = {"old:update", "old:upsert-failed", "old:no-event"}
        kept_keys = {"old:task", "old:customer", "old:order", "old:activation", "old:of-dead", "old:of-conflict",
                     "old:of-waiting", "old:sent", "old:recorded", "new:update"}
        for key in gone:
            assert await store.get_intent(key) is None, key
        for key in kept_keys:
            assert await store.get_intent(key) is not None, key

        assert [w.record_ref for w in await store.list_writes()] == ["salesforce:Account:new"]
        assert (await store.get_synced(["salesforce:Account:old"]))["salesforce:Account:old"].values == {"Name": "old"}
        assert await store.find_link("account", nue_id="c-1") is not None
        assert await store.get_cursor("nue:Order") is not None
        assert await store.get_entity_version("subscription:s-1") is not None
        assert [c.id for c in await store.list_conflicts(status=ConflictStatus.OPEN)] == [built.conflict]
        assert [d.id for d in await store.list_dead_letters()] == [built.letter]

    async def test_a_dry_run_counts_the_same_and_changes_nothing(self, store: Store, clock: FakeClock) -> None:
        """A dry run finds what the real run then prunes, and leaves every row as it was."""
        built = await build(store, clock)
        dry = await prune(store, clock.now, dry_run=True)
        assert (await store.get_event(built.old_done)).payload != TOMBSTONE  # type: ignore[union-attr]
        assert await store.get_intent("old:update") is not None and len(await store.list_writes()) == 2
        assert (await store.footprint()).payloads_pruned_before is None
        real = await prune(store, clock.now)
        assert dry.pruned == real.pruned

    async def test_a_second_run_prunes_nothing_more(self, store: Store, clock: FakeClock) -> None:
        """Pruning is idempotent: the next run finds nothing left to prune."""
        await build(store, clock)
        await prune(store, clock.now)
        again = await prune(store, clock.now)
        assert again.pruned == dict.fromkeys(ORDER, 0)

    async def test_age_counts_from_when_an_event_was_finished(self, store: Store, clock: FakeClock) -> None:
        """An event received long ago but finished lately keeps its payload until it has been done that long."""
        built = await build(store, clock)
        clock.advance(days=80)
        await prune(store, clock.now)
        assert (await store.get_event(built.received_old_done_new)).payload != TOMBSTONE  # type: ignore[union-attr]
        clock.advance(days=20)
        await prune(store, clock.now)
        assert (await store.get_event(built.received_old_done_new)).payload == TOMBSTONE  # type: ignore[union-attr]

    async def test_a_replayed_dead_letter_is_planned_with_its_payload_and_its_writes(
            self, store: Store, clock: FakeClock) -> None:
        """An event dead for months keeps its payload and its confirmed writes, so a replay has both."""
        built = await build(store, clock)
        await prune(store, clock.now)
        replayed = await store.replay_dead_letter(built.letter)
        assert replayed.payload == {"data": {"id": "old-dead"}}
        assert (await store.get_intent("old:of-dead")).status is IntentStatus.CONFIRMED  # type: ignore[union-attr]

    async def test_where_the_last_complete_pass_ended_is_kept(self, store: Store, clock: FakeClock) -> None:
        """A complete pass records its cutoff, so the next begins there (less an hour), not at the first event."""
        await build(store, clock)
        step = await prune(store, clock.now)
        assert (await store.footprint()).payloads_pruned_before == step.cutoff
        await prune(store, clock.now - timedelta(days=30))  # an earlier cutoff never moves it back
        assert (await store.footprint()).payloads_pruned_before == step.cutoff


    async def test_the_next_pass_does_not_read_payloads_pruned_before(self, store: Store, clock: FakeClock) -> None:
        """Payloads pruned on one night are not read again the next: that pass reads nothing older than the
        last one's cutoff (less an hour), so its cost follows a day's events, not the store's age."""
        await store.add_events([event(f"e{i}") for i in range(30)])
        claimed = await store.claim_events(worker="w", limit=30, lease=LEASE)
        await store.complete_events([e.id for e in claimed], claimed_by="w")
        clock.advance(days=100)
        first = await prune(store, clock.now, batch=10)
        clock.advance(days=1)
        second = await prune(store, clock.now, batch=10)
        assert first.pruned[Target.EVENT_PAYLOADS] == 30 and first.batches == 4 + 1 + 1
        assert second.pruned[Target.EVENT_PAYLOADS] == 0 and second.batches == 1 + 1 + 1


class TestDedupeAfterPruning:
    async def test_a_redelivered_old_webhook_is_still_a_duplicate(self, store: Store, clock: FakeClock) -> None:
        """A notification finished 100 days ago and delivered again after the prune adds nothing and is not
        planned again: its key outlived its payload."""
        first = await finished(store, "nue:evt-0001")
        clock.advance(days=100)
        await prune(store, clock.now)
        assert (await store.get_event(first)).payload == TOMBSTONE  # type: ignore[union-attr]
        assert await store.add_events([event("nue:evt-0001"), event("nue:evt-0002")]) == [False, True]
        claimed = await store.claim_events(worker="w", limit=10, lease=LEASE)
        assert [e.key for e in claimed] == ["nue:evt-0002"]


class TestBatches:
    async def test_each_batch_reads_at_most_its_size(self, store: Store, clock: FakeClock) -> None:
        """25 old payloads in batches of 10 take three batches for the events (and one for each other table)."""
        await store.add_events([event(f"e{i}") for i in range(25)])
        claimed = await store.claim_events(worker="w", limit=25, lease=LEASE)
        await store.complete_events([e.id for e in claimed], claimed_by="w")
        clock.advance(days=100)
        seen: list[PruneStep] = []
        step = await prune(store, clock.now, batch=10, on_batch=seen.append)
        assert step.pruned[Target.EVENT_PAYLOADS] == 25
        assert [s.pruned[Target.EVENT_PAYLOADS] for s in seen[:3]] == [10, 20, 25]
        assert step.batches == 5

    async def test_a_worker_claims_while_a_prune_runs(self, store: Store, clock: FakeClock) -> None:
        """A worker's claim made during a long prune is served between two batches, not after the run: when it
        returns, most of the 400 old payloads are still to be pruned (one transaction for all would have pruned
        them all before the claim got in)."""
        await store.add_events([event(f"e{i}") for i in range(400)])
        claimed = await store.claim_events(worker="w", limit=400, lease=LEASE)
        await store.complete_events([e.id for e in claimed], claimed_by="w")
        clock.advance(days=100)
        await store.add_events([event("due-now")])
        first_batch = anyio.Event()
        pruned_so_far = 0
        pruned_at_claim: list[int] = []

        def note(step: PruneStep) -> None:
            nonlocal pruned_so_far
            pruned_so_far = step.pruned[Target.EVENT_PAYLOADS]
            first_batch.set()

        async def worker() -> None:
            await first_batch.wait()
            got = await store.claim_events(worker="w2", limit=10, lease=LEASE)
            assert [e.key for e in got] == ["due-now"]
            pruned_at_claim.append(pruned_so_far)

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            step = await prune_store(store, clock.now - RETENTION, batch=20, on_batch=note)
        assert step.pruned[Target.EVENT_PAYLOADS] == 400 and step.batches == 20 + 1 + 2  # the last reads none
        [when] = pruned_at_claim
        assert when < 200, f"the claim got in only after {when} of the 400 payloads were pruned"


class TestJob:
    async def test_the_job_stops_when_this_replica_no_longer_leads(self, store: Store, clock: FakeClock) -> None:
        """A replica that does not lead prunes nothing; the leader prunes what is older than retention_days."""
        first = await finished(store, "old")
        clock.advance(days=100)
        await nightly_prune(store, 90, leading=lambda: False, clock=clock)()
        assert (await store.get_event(first)).payload != TOMBSTONE  # type: ignore[union-attr]
        await nightly_prune(store, 90, leading=lambda: True, clock=clock)()
        assert (await store.get_event(first)).payload == TOMBSTONE  # type: ignore[union-attr]


class TestFootprint:
    async def test_size_and_oldest_rows(self, store: Store, clock: FakeClock) -> None:
        """The footprint has a size on disk, the first event kept and the oldest audit entry."""
        empty = await store.footprint()
        assert empty.size_bytes > 0 and empty.oldest_event_at is None and empty.oldest_audit_at is None
        await finished(store, "first")
        await audit(store, "a")
        clock.advance(days=1)
        await finished(store, "second")
        footprint = await store.footprint()
        assert footprint.oldest_event_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert footprint.oldest_audit_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert footprint.payloads_pruned_before is None

    async def test_reclaiming_space_keeps_every_row(self, store: Store, clock: FakeClock) -> None:
        """After a prune, reclaiming the space (VACUUM) leaves the rows as they were."""
        await store.add_events([NewEvent(source="nue_webhook", key=f"e{i}", type="t", payload={"pad": "x" * 2000})
                                for i in range(200)])
        claimed = await store.claim_events(worker="w", limit=200, lease=LEASE)
        await store.complete_events([e.id for e in claimed], claimed_by="w")
        clock.advance(days=100)
        await prune(store, clock.now)
        await store.reclaim_space()
        assert (await store.queue_depths())[EventStatus.DONE] == 200
        assert (await store.find_event("e7")).payload == TOMBSTONE  # type: ignore[union-attr]

    async def test_pruned_payloads_free_whole_pages_of_a_sqlite_file(self, tmp_path: Path, clock: FakeClock) -> None:
        """On SQLite the pruned rows are packed into fewer pages and the rest are freed for new rows to reuse (an
        UPDATE would leave each page as large as it was); the file itself keeps its size until a VACUUM."""
        store = await open_store(tmp_path / "db.sqlite3", clock=clock)
        try:
            await store.add_events([NewEvent(source="nue_poll", key=f"e{i}", type="t", payload={"pad": "x" * 1500})
                                    for i in range(400)])
            claimed = await store.claim_events(worker="w", limit=400, lease=LEASE)
            await store.complete_events([e.id for e in claimed], claimed_by="w")
            clock.advance(days=100)
            before = await store.footprint()
            await prune(store, clock.now)
            after = await store.footprint()
            assert before.free_bytes is not None and after.free_bytes is not None
            assert after.free_bytes - before.free_bytes > 400 * 1500 / 2  # most of the payloads, as whole pages
            await store.reclaim_space()
            assert (await store.footprint()).size_bytes < before.size_bytes / 2
        finally:
            await store.close()
