"""The values that go into and come out of the store. Plain frozen dataclasses, no database types.

Timestamps are aware UTC datetimes; payloads are JSON-compatible mappings (Decimal and datetime values
are written as strings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from revdaemon.domain.synced import SyncedRecord
from revdaemon.store.states import EventStatus, IntentStatus

JsonObject = Mapping[str, Any]
__all__ = ["SyncedRecord"]  # lives in the pure core (flows read it); stored and returned here


def utcnow() -> datetime:
    return datetime.now(UTC)


Clock = Callable[[], datetime]  # the store's notion of now; tests pass a fake one


# --- inbox ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """A trigger's notification, before it is stored. `key` is unique across the inbox."""

    source: str  # one of flows/sources.py
    key: str
    type: str
    payload: JsonObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("source", "key", "type"):
            if not getattr(self, name):
                raise ValueError(f"NewEvent.{name} must not be empty")


@dataclass(frozen=True, kw_only=True)
class Event:
    id: int
    source: str
    key: str
    type: str
    payload: JsonObject
    status: EventStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    claimed_by: str | None
    claimed_until: datetime | None
    received_at: datetime
    updated_at: datetime
    mapping_version: int | None = None  # the mapping version it was first planned with (None: not planned yet)


@dataclass(frozen=True, kw_only=True)
class CursorUpdate:
    """A poll cursor to advance in the same transaction as the events its page produced."""

    name: str
    value: str


@dataclass(frozen=True, kw_only=True)
class Cursor:
    name: str
    value: str
    updated_at: datetime


# --- id links ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Link:
    """One record known on both sides: `object_type` is the pairing, e.g. "account" for Account<->Customer."""

    object_type: str
    nue_id: str
    salesforce_id: str


# --- idempotency ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewIntent:
    key: str  # derived by the flow from (flow, event key, target); never invented by the executor
    system: str
    operation: str
    target: str
    request: JsonObject = field(default_factory=dict)
    event_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class WriteIntent:
    key: str
    system: str
    operation: str
    target: str
    request: JsonObject
    event_id: int | None
    status: IntentStatus
    result: JsonObject | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    ever_sent: bool = False  # it may have reached the API once: set when first marked sent, never cleared
    settle_after: datetime | None = None  # an unknown outcome: not looked up (nor sent again) before this
    epoch: int | None = None  # the leadership epoch that last recorded or sent it (None: before fencing, or a test)


# --- conflicts and dead letters ---------------------------------------------------------------------


class ConflictStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Resolution(StrEnum):
    TAKE_NUE = "nue"
    TAKE_SALESFORCE = "salesforce"
    SKIP = "skip"


@dataclass(frozen=True, kw_only=True)
class NewConflict:
    flow: str
    record_ref: str
    reason: str
    nue_values: JsonObject = field(default_factory=dict)
    salesforce_values: JsonObject = field(default_factory=dict)
    synced_values: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ConflictRecord:
    id: int
    event_id: int | None
    flow: str
    record_ref: str
    reason: str
    nue_values: JsonObject
    salesforce_values: JsonObject
    synced_values: JsonObject
    status: ConflictStatus
    resolution: Resolution | None
    resolved_by: str | None
    comment: str | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class NewDeadLetter:
    system: str
    operation: str
    error: str  # the API's own message
    error_code: str | None = None
    status: int | None = None
    record_ref: str | None = None
    request: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    id: int
    event_id: int | None
    system: str
    operation: str
    error: str
    error_code: str | None
    status: int | None
    record_ref: str | None
    request: JsonObject
    created_at: datetime
    replayed_at: datetime | None


# --- audit ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewAuditEntry:
    """One external write as it was sent and answered."""

    system: str
    operation: str
    target: str
    outcome: str  # "ok", "rejected", "error"
    idem_key: str | None = None
    event_id: int | None = None
    record_ref: str | None = None
    status: int | None = None
    detail: JsonObject = field(default_factory=dict)
    mapping_version: int | None = None
    # Field values now on the target record (a confirmed Salesforce write): remembered as "last synced" so a
    # later hand edit in Salesforce is told apart from a value revdaemon wrote.
    synced_fields: JsonObject = field(default_factory=dict)



@dataclass(frozen=True, kw_only=True)
class Settlement:
    """A write's answer, kept with the other writes of its API call in one transaction: its audit entry (which
    moves the record's last synced values) and its intent, confirmed or failed."""

    entry: NewAuditEntry  # its idem_key names the intent
    confirmed: bool
    result: JsonObject = field(default_factory=dict)
    error: str | None = None  # a failure's message
    settle_for: timedelta | None = None  # a failure of unknown outcome: not looked up before this has passed

@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    id: int
    at: datetime
    system: str
    operation: str
    target: str
    outcome: str
    idem_key: str | None
    event_id: int | None
    record_ref: str | None
    status: int | None
    detail: JsonObject
    mapping_version: int | None


@dataclass(frozen=True, kw_only=True)
class MinuteCount:
    minute: datetime  # the start of the minute, UTC
    count: int


# --- mapping versions -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MappingVersion:
    """One distinct mapping (what config.yaml says the flows write), stored the first time it is loaded."""

    version: int  # assigned by the store, in order: 1, 2, 3...
    content_hash: str  # sha256 of `text`; one version per distinct text
    text: str  # the canonical text (engine/mappings.py)
    created_at: datetime


# --- replicas ---------------------------------------------------------------------------------------


REPLICA_FORGOTTEN_AFTER = timedelta(days=7)  # a replica silent this long is dropped from the list (a renamed box)


@dataclass(frozen=True, kw_only=True)
class ReplicaBeat:
    """A running daemon process saying it is alive; the store stamps the time it arrived."""

    replica_id: str  # stable for the process's life, unique across the boxes sharing the store
    host: str
    pid: int
    started_at: datetime
    is_leader: bool  # it holds the leadership (Store.try_lead) as of this beat


@dataclass(frozen=True, kw_only=True)
class Replica:
    """A daemon process as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    started_at: datetime
    last_heartbeat: datetime
    is_leader: bool


@dataclass(frozen=True, kw_only=True)
class Leadership:
    """Who is the active replica: the one whose workers, executor and scheduler run. The store increments `epoch`
    each time a replica takes leadership; a state change that leads to an external write names the epoch it was
    decided under and is refused (Fenced) once another has begun."""

    epoch: int
    replica_id: str
    since: datetime  # when it was taken, by the store's clock (on PostgreSQL the database's)


# --- status -----------------------------------------------------------------------------------------


# --- shadow mode ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewShadowEntry:
    """What processing an event would have done in live mode, recorded instead of doing it (engine/shadow.py):
    one planned write (`outcome` "write", with its field diff), or the event's conflict, error or nothing."""

    event_id: int | None
    event_key: str
    flow: str
    outcome: str  # "write" | "conflict" | "error" | "nothing"
    system: str | None = None  # of a write: "salesforce" | "nue"
    action: str | None = None  # "create", "update", "activate", ...
    target: str | None = None  # "Account 001...", "Order for opportunity 006..."
    idem_key: str | None = None  # a write's key: recorded once, as live mode sends it once
    changes: tuple[Mapping[str, Any], ...] = ()  # {field, current, planned, changes}
    warnings: tuple[str, ...] = ()  # why Salesforce would refuse it, as describe shows
    flags: tuple[str, ...] = ()  # what a person should look at before going live
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ShadowEntry(NewShadowEntry):
    id: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ShadowPromotion:
    """When shadow mode ended: from then on the daemon writes, and deals won before `go_live` are history."""

    at: datetime
    go_live: date
    actor: str


@dataclass(frozen=True, kw_only=True)
class StoreSummary:
    queue_depths: Mapping[EventStatus, int]
    cursors: tuple[Cursor, ...]
    open_conflicts: int
    dead_letters: int  # not yet replayed
    oldest_due_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class StoreFootprint:
    """How much the store holds, for `status` and retention (store/retention.py)."""

    size_bytes: int  # on disk: SQLite's file with its WAL; PostgreSQL's tables with their indexes and TOAST
    free_bytes: int | None  # SQLite: free pages inside the file, reused before it grows (None: not known)
    oldest_event_at: datetime | None  # the first event kept (every event's key is kept: see retention.py)
    oldest_audit_at: datetime | None
    payloads_pruned_before: datetime | None  # done events finished before this have lost their payloads
