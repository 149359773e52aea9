"""Retention: what the store forgets after `store.retention_days`, and why everything else is kept.

The rules, in one place (both backends apply exactly these; tests/unit/test_store_retention.py shows it on both).
"Older" means last changed before the cutoff, now - retention_days.

Pruned, in batches (`Store.prune`):
- The PAYLOAD of a done event, replaced by TOMBSTONE. Done is terminal (store/states.py), so the event is never
  planned again and its payload is only history. Its age counts from when it was finished (`updated_at`).
- Audit entries (`audit_log`), by `at`: the history of writes and operators' actions.
- Settled write intents (confirmed, or failed) of idempotent writes whose event is done (or who have none):
  sending such a write again is harmless by the executor's own rule (an idempotent kind is simply sent again).

Kept, whatever their age, and why:
- The ROW AND KEY of every event. `add_events` deduplicates by key: a webhook Nue delivers again, a poll
  re-reading an old page, the daily sweep or a backfill over old records find the key and add nothing. Without
  it a months-old notification would be planned again. (This is why the events table still grows, by about
  a key, three timestamps and their indexes per event: see bench/retention.py.)
- Events that are not done: received or claimed (work to do), dead (a person may replay it: its payload is what
  is planned again) and conflict (a person decides; taking Nue plans it again).
- The intents of writes that are not idempotent (KEPT_OPERATIONS: the creates without an external id and the
  activation). Their key is the one record that the create was made: a later plan of the same key (a Task a
  person has since deleted, an order Nue's search does not find) is skipped because the confirmed intent is
  there, and a create of unknown outcome is looked up, not repeated.
- Intents that are not settled (recorded, sent: their outcome is being found out) and intents of events that
  are not done (a replay or a conflict's decision plans the event again and must find what it already wrote).
- Id links: the pairing every create looks up first. Open conflicts and unreplayed dead letters (a person has
  yet to act), and the resolved and replayed ones (few, and what the console shows of past decisions).
- Synced values (the baseline that tells a hand edit from revdaemon's own value: without it every field would
  look edited) and entity versions (the newest state applied: without it an older state could overwrite a
  newer one). Both hold one row per record or field, not per event, so they do not grow with traffic.
- Cursors, mapping versions (events are pinned to them), replicas and the store's own facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from revdaemon.store.states import EventStatus, IntentStatus

TOMBSTONE: Mapping[str, object] = {"pruned": True}  # the payload a done event keeps once pruned
TOMBSTONE_TEXT = '{"pruned":true}'  # TOMBSTONE as the store writes it (encoding.dumps)

# The write kinds (executor.ROUTES, named as intents store them) that must not be sent twice: their confirmed
# intents are the record that the write was made. tests/unit/test_store_retention.py keeps this equal to the
# executor's table, and to the list in the write_intents_prunable index of both schemas.
KEPT_OPERATIONS = frozenset({"SfCreate", "NueCreateCustomer", "NueCreateOrder", "NueActivateOrder"})
KEPT_OPERATIONS_SQL = "(" + ", ".join(f"'{name}'" for name in sorted(KEPT_OPERATIONS)) + ")"

# Rows read (and at most pruned) per transaction: on SQLite a batch of payloads rewrites its rows and their index
# entries; 250 of them take about 5 ms of the one writer in a store of a month's million events (bench/retention.py).
DEFAULT_BATCH = 250
# A pass over done events starts this far before where the last complete pass ended: finishing an event stamps
# it with the finishing replica's clock, and replicas' clocks may differ by a little (they are kept in NTP sync).
# Each hour of overlap is read again every night: bench/retention.py showed a day of it doubling the pass.
PAYLOAD_PASS_OVERLAP = timedelta(hours=1)
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


class Target(StrEnum):
    """What one pass prunes, in the order a run takes them."""

    EVENT_PAYLOADS = "event_payloads"
    WRITE_INTENTS = "write_intents"
    AUDIT_ENTRIES = "audit_entries"


ORDER = (Target.EVENT_PAYLOADS, Target.WRITE_INTENTS, Target.AUDIT_ENTRIES)


def cutoff_of(now: datetime, retention_days: int) -> datetime | None:
    """Rows last changed before this are pruned; None: keep everything (retention_days 0)."""
    return now - timedelta(days=retention_days) if retention_days > 0 else None


def payload_may_go(status: EventStatus) -> bool:
    return status is EventStatus.DONE


def intent_may_go(status: IntentStatus, operation: str, event_status: EventStatus | None) -> bool:
    """An intent older than the cutoff may go when it is settled, its write idempotent and its event done (or
    it has none). `event_status` None: the intent names no event."""
    settled = status in (IntentStatus.CONFIRMED, IntentStatus.FAILED)
    return settled and operation not in KEPT_OPERATIONS and (event_status is None or event_status is EventStatus.DONE)


@dataclass(frozen=True)
class Position:
    """Where a pass is in its table: the last row read, by (time, key), the order the pass reads in."""

    at: datetime
    key: int | str


def pass_start(target: Target, payloads_pruned_before: datetime | None) -> Position:
    """Where a pass begins. Over done events: just before where the last complete pass ended (`payloads_pruned_
    before`: every event finished before it has lost its payload already, and done is terminal), so the payloads
    pruned long ago are not read again every night. Intents and audit entries: at the beginning (what a pass
    prunes is gone, and the index of intents leaves out those always kept)."""
    if target is Target.EVENT_PAYLOADS and payloads_pruned_before is not None:
        return Position(payloads_pruned_before - PAYLOAD_PASS_OVERLAP, 0)
    return Position(_BEGINNING, "" if target is Target.WRITE_INTENTS else 0)


@dataclass(frozen=True, kw_only=True)
class PruneStep:
    """A prune run as a value: the store carries out one batch of it per call (`Store.prune`) and returns the
    next step; the run is over when `finished`. `pruned` counts per target what was pruned (in a dry run: what
    would be)."""

    cutoff: datetime
    batch: int = DEFAULT_BATCH
    dry_run: bool = False
    target: Target | None = ORDER[0]  # None: finished
    after: Position | None = None  # None: the target's pass has not begun
    pruned: Mapping[Target, int] = field(default_factory=lambda: dict.fromkeys(ORDER, 0))
    batches: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("a prune batch reads at least one row")
        if self.cutoff.tzinfo is None:
            raise ValueError("the cutoff must be an aware datetime")

    @property
    def finished(self) -> bool:
        return self.target is None

    def after_batch(self, *, read: int, pruned: int, last: Position | None) -> PruneStep:
        """The step after a batch that read `read` rows of the target (up to `batch`), the last at `last`, and
        pruned `pruned` of them. A batch shorter than `batch` was the target's last: the next target begins."""
        assert self.target is not None, "a finished run has no next batch"
        counts = {**self.pruned, self.target: self.pruned[self.target] + pruned}
        if read < self.batch:
            following = ORDER.index(self.target) + 1
            target = ORDER[following] if following < len(ORDER) else None
            return replace(self, target=target, after=None, pruned=counts, batches=self.batches + 1)
        return replace(self, after=last, pruned=counts, batches=self.batches + 1)
