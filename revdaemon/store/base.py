"""The store's typed interface. Backends (SQLite, PostgreSQL) implement exactly this.

Every method is one transaction: it either happens whole or not at all (`reclaim_space` is the database's own
maintenance, outside any). Nothing here names a database.

Fencing. One replica is active at a time: the leader (`try_lead`), holding a leadership epoch that the store
increments each time leadership changes hands. Every state change that leads to an external write (a claim, an
intent, the mark made right before a send, the settling of an intent, an event's outcome) takes `epoch=`, the
epoch its caller decided under: it is checked in the change's own transaction, atomically against a takeover,
and when another replica has taken leadership since, nothing changes and Fenced is raised. `epoch=None` is a
caller outside the replicas' work (an operator's command, a test): not fenced.

Time. Leases, settle times and leadership are judged by the store's clock: on PostgreSQL the database's (one
clock for every box), on SQLite this box's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from revdaemon.domain.record_names import RecordName
from revdaemon.store.records import (
    AuditEntry,
    ConflictRecord,
    ConflictStatus,
    Cursor,
    CursorUpdate,
    DeadLetter,
    Event,
    Leadership,
    Link,
    MappingVersion,
    MinuteCount,
    NewAuditEntry,
    NewConflict,
    NewDeadLetter,
    NewEvent,
    NewIntent,
    NewShadowEntry,
    Replica,
    ReplicaBeat,
    Resolution,
    Settlement,
    ShadowEntry,
    ShadowPromotion,
    StoreFootprint,
    StoreSummary,
    SyncedRecord,
    WriteIntent,
)
from revdaemon.store.retention import PruneStep
from revdaemon.store.states import EventStatus


class Store(Protocol):
    async def close(self) -> None: ...

    async def schema_version(self) -> int:
        """The schema version the database is at (migrations are applied on open)."""
        ...

    async def ping(self) -> bool:
        """True when the store accepts a write (readiness)."""
        ...

    async def created_on(self) -> date:
        """The day this store was created (recorded when it is first opened for writing, or, for a store
        older than the record, the day of its first event); it never moves. Flow 1's go-live cut-off
        defaults to it. A read-only open of a store that has no record yet answers today."""
        ...

    # --- inbox ----------------------------------------------------------------------------------

    async def add_events(
        self, events: Sequence[NewEvent], cursor: CursorUpdate | None = None
    ) -> list[bool]:
        """Store events (a duplicate key is skipped) and advance `cursor`, together. One flag per event:
        True when it was new."""
        ...

    async def claim_events(self, *, worker: str, limit: int, lease: timedelta,
                           mapping_version: int | None = None, epoch: int | None = None) -> list[Event]:
        """Claim due events until now + `lease`: the newest `NEWEST_SHARE` of `limit` and the oldest for the rest, so
        an event that has just come in goes in the next claim however long the backlog behind it (real time ahead of
        a burst), while the oldest are never passed over for long. Also takes over claims whose lease has expired, and
        (with `epoch`) at once every claim made under an older epoch: its leader is gone. With `mapping_version`,
        an event not yet pinned to a mapping version is pinned to that one (it is about to be planned with it); a
        pinned event keeps its own. Fenced."""
        ...

    async def release_claims(self, worker: str, *, epoch: int | None = None) -> int:
        """Give back what `worker` holds (a clean stop): its claimed events are due again at once. Fenced: a
        replica that lost leadership gives back nothing (the new leader takes its claims over anyway)."""
        ...

    # A worker settling an event passes `claimed_by=<its name>`: if the claim was taken over (its lease ran
    # out and another worker claimed it), the move raises ClaimLost and changes nothing. These moves are fenced.

    async def complete_event(self, event_id: int, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> None: ...

    async def complete_events(self, event_ids: Sequence[int], *, claimed_by: str,
                              epoch: int | None = None) -> list[int]:
        """Finish many claimed events in one transaction; returns those whose claim was lost (untouched)."""
        ...

    async def retry_event(self, event_id: int, *, error: str, next_attempt_at: datetime,
                          claimed_by: str | None = None, reset_attempts: bool = False,
                          refund_attempt: bool = False, epoch: int | None = None) -> None:
        """Back to the inbox, due at `next_attempt_at`; `reset_attempts` when the wait was no failure of
        the event's own (its flow was parked); `refund_attempt` gives back the attempt this claim counted (it
        only waited, for a write of unknown outcome to settle), keeping the ones before it."""
        ...

    async def dead_letter_event(self, event_id: int, letter: NewDeadLetter, *, claimed_by: str | None = None,
                                epoch: int | None = None) -> int:
        """Move the event to dead and record why; returns the dead letter's id. Dead is terminal until a person
        replays it: while a letter about the same `record_ref` is open (not replayed), the event joins it and no
        second letter is made."""
        ...

    async def conflict_event(self, event_id: int, conflict: NewConflict, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> int:
        """Park the event as a conflict for a person to decide; returns the conflict's id."""
        ...

    async def get_event(self, event_id: int) -> Event | None: ...

    async def search_events(self, text: str, *, limit: int = 50) -> list[Event]:
        """Events whose key or payload contains `text` (an id or external key), newest first."""
        ...

    async def finished_per_minute(self, since: datetime) -> list[MinuteCount]:
        """Events finished (done) per minute since `since`; minutes with none are left out."""
        ...

    async def find_event(self, key: str) -> Event | None: ...

    async def list_events(self, *, status: EventStatus | None = None, limit: int = 50) -> list[Event]: ...

    async def queue_depths(self) -> dict[EventStatus, int]: ...

    # --- cursors --------------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> Cursor | None: ...

    async def set_cursor(self, update: CursorUpdate) -> None: ...

    async def list_cursors(self) -> list[Cursor]: ...

    # --- id links -------------------------------------------------------------------------------

    async def put_link(self, link: Link) -> None:
        """Record a pairing; raises LinkConflict if either id is already paired with another."""
        ...

    async def find_link(
        self, object_type: str, *, nue_id: str | None = None, salesforce_id: str | None = None
    ) -> Link | None: ...

    async def find_links(self, object_type: str, *, nue_ids: Sequence[str] = (),
                         salesforce_ids: Sequence[str] = ()) -> list[Link]:
        """The pairings of `object_type` whose Nue id is among `nue_ids` or whose Salesforce id is among
        `salesforce_ids` (one read for a claim's ids, where find_link is one each)."""
        ...

    async def links_of(self, record_id: str) -> list[Link]:
        """Every pairing in which `record_id` is the Nue or the Salesforce side."""
        ...

    # --- shadow mode ----------------------------------------------------------------------------

    async def record_shadow(self, entries: Sequence[NewShadowEntry]) -> int:
        """Keep what shadow mode would have done; a write whose idempotency key is already kept is skipped (live
        mode sends it once). Returns how many were kept."""
        ...

    async def list_shadow(self, *, since: datetime | None = None, limit: int = 100_000) -> list[ShadowEntry]:
        """Kept shadow entries, oldest first (those recorded at or after `since`)."""
        ...

    async def promote_shadow(self, *, actor: str, go_live: date | None = None) -> ShadowPromotion:
        """End shadow mode now: recorded once (a second promotion keeps the first); `go_live` (default: today, by
        the store's clock) becomes the go-live cut-off `go_live()` returns."""
        ...

    async def shadow_promotion(self) -> ShadowPromotion | None: ...

    async def go_live(self) -> date:
        """The go-live cut-off: the day shadow mode was promoted (or the day given then), else the day the store
        was created."""
        ...

    # --- names beside ids -----------------------------------------------------------------------

    async def remember_names(self, names: Sequence[RecordName]) -> None:
        """Keep what each record is called (domain.record_names), replacing an older name of it."""
        ...

    async def names_of(self, record_ids: Sequence[str]) -> list[RecordName]:
        """The kept names of these ids (an id Nue and Salesforce both use may have one of each)."""
        ...

    async def find_names(self, text: str, *, limit: int = 20) -> list[RecordName]:
        """Records whose name or number contains `text` (ignoring case), most recently read first."""
        ...

    # --- last synced values ---------------------------------------------------------------------

    async def get_synced(self, record_refs: Sequence[str]) -> dict[str, SyncedRecord]:
        """Per record (those with any), the last value revdaemon wrote or a person accepted for each field."""
        ...

    # --- idempotency ----------------------------------------------------------------------------

    # Intents are fenced: the executor records, marks, settles and reopens them only as the current leader.

    async def record_intent(self, intent: NewIntent, *, epoch: int | None = None) -> WriteIntent:
        """Record the intent before sending; if the key is known, return what is stored instead."""
        ...

    async def record_intents(self, intents: Sequence[NewIntent], *, epoch: int | None = None) -> list[WriteIntent]:
        """`record_intent` for many, in one transaction; the intents in the order given."""
        ...

    async def settle_writes(self, settlements: Sequence[Settlement], *, epoch: int | None = None) -> None:
        """The answers of one API call's writes, in one transaction: each audit entry recorded (and its record's
        synced values moved) and each intent confirmed or failed, all or none."""
        ...

    async def begin_send(self, keys: Sequence[str], *, epoch: int | None = None) -> None:
        """The last step before a call carrying these writes: recorded intents become sent (and `ever_sent`);
        intents already sent (a crash or a fenced leader left them so) are sent again. Each is stamped with the
        epoch and the store's time. Fenced, so that no write leaves a replica that has lost leadership."""
        ...

    async def confirm_intent(self, key: str, result: dict[str, object], *, epoch: int | None = None) -> None: ...

    async def fail_intent(self, key: str, error: str, *, settle_for: timedelta | None = None,
                          epoch: int | None = None) -> None:
        """`settle_for`: the outcome is unknown (the request may have been applied); the write is neither looked
        up nor sent again before its `settle_after`, the store's now + settle_for."""
        ...

    async def reopen_intent(self, key: str, *, epoch: int | None = None) -> None:
        """A failed intent is attempted again (a retry or a replay)."""
        ...

    async def get_intent(self, key: str) -> WriteIntent | None: ...

    async def list_intents(self, *, event_ids: Sequence[int] = (), mentioning: str | None = None,
                           limit: int = 100) -> list[WriteIntent]:
        """Planned writes of these events, or whose target or request contains `mentioning`; newest first."""
        ...

    # --- ordering -------------------------------------------------------------------------------

    async def get_entity_version(self, entity: str) -> str | None: ...

    async def get_entity_versions(self, entities: Sequence[str]) -> dict[str, str]:
        """The applied version of each entity that has one."""
        ...

    async def raise_entity_versions(self, versions: Mapping[str, str]) -> set[str]:
        """`raise_entity_version` for many, in one transaction; the entities raised."""
        ...

    async def raise_entity_version(self, entity: str, version: str) -> bool:
        """Record `version` as applied unless a newer one already is; True if it was recorded. Versions are
        fixed-width UTC timestamps (domain.subscriptions.version_of), compared as text."""
        ...

    # --- conflicts ------------------------------------------------------------------------------

    async def list_conflicts(
        self, *, status: ConflictStatus | None = ConflictStatus.OPEN, limit: int = 50
    ) -> list[ConflictRecord]: ...

    async def get_conflict(self, conflict_id: int) -> ConflictRecord | None: ...

    async def resolve_conflict(
        self, conflict_id: int, *, resolution: Resolution, actor: str, comment: str | None = None
    ) -> ConflictRecord:
        """Close the conflict. Taking either side records the Salesforce values it shows as the agreed
        baseline (a person has seen them, so they no longer count as a hand edit). Take Nue: its event goes
        back to the inbox and its flow writes Nue's current state. Take Salesforce or skip: the event is
        done and nothing is written (revdaemon never writes field values back into Nue); taking Salesforce also
        records the Nue values shown as declined, so the flow leaves those fields until Nue's value changes."""
        ...

    # --- dead letters ---------------------------------------------------------------------------

    async def list_dead_letters(self, *, include_replayed: bool = False, limit: int = 50,
                                error_code: str | None = None) -> list[DeadLetter]:
        """Newest first; with `error_code`, only the letters with that code."""
        ...

    async def dead_letter_codes(self, *, include_replayed: bool = False) -> list[tuple[str | None, int]]:
        """Each error code the letters have (None: no code) with how many have it, the most frequent first."""
        ...

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None: ...

    async def open_dead_letter(self, record_ref: str) -> DeadLetter | None:
        """The letter about `record_ref` not yet replayed, if any (the one a new failure about it joins)."""
        ...

    async def replay_dead_letter(self, letter_id: int, *, remap: bool = False) -> Event:
        """Put the dead letter's event back in the inbox, due now, with its attempts reset. It keeps the
        mapping version it was first planned with, unless `remap`: then its pin is cleared and it is planned
        with the mapping current when it is next claimed."""
        ...

    # --- mapping versions -----------------------------------------------------------------------

    async def register_mapping(self, text: str, content_hash: str) -> MappingVersion:
        """Store a mapping under the next version number, or return the one already stored with this hash."""
        ...

    async def find_mapping(self, content_hash: str) -> MappingVersion | None: ...

    async def get_mapping(self, version: int) -> MappingVersion | None: ...

    async def list_mappings(self) -> list[MappingVersion]:
        """Every stored mapping version, oldest first."""
        ...

    # --- audit ----------------------------------------------------------------------------------

    async def record_write(self, entry: NewAuditEntry) -> int: ...

    async def list_writes(self, *, record_ref: str | None = None, event_id: int | None = None,
                          mentioning: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """Audit entries, newest first; `mentioning` matches the record, target or request text."""
        ...

    async def backup(self, destination: Path) -> None:
        """Write a consistent copy of the whole store to `destination` while it is in use. A backend whose
        database has its own backup tools (PostgreSQL: pg_dump) raises StoreError saying so."""
        ...

    # --- replicas -------------------------------------------------------------------------------

    async def heartbeat(self, replica: ReplicaBeat) -> None:
        """Record that `replica` is alive now (its last heartbeat is the store's clock), and whether it leads;
        replicas silent for REPLICA_FORGOTTEN_AFTER (a box renamed or retired) are forgotten."""
        ...

    async def try_lead(self, replica_id: str) -> Leadership | None:
        """Become (or stay) the active replica, the one whose workers, executor and scheduler run: its leadership
        while this store holds it, None while another replica does. Taking leadership increments the epoch (in
        the same step). Call it again every few seconds: None (or a new epoch) means leadership was lost and the
        leader's work must stop at once. On PostgreSQL leadership is a session advisory lock on a connection of
        its own, lost when that session ends (the process died, or went silent: paused or cut off); on SQLite the
        first process to ask takes it, once per start, and keeps it unless another process on the same file
        takes it after it."""
        ...

    async def leadership(self) -> Leadership | None:
        """The current leadership as the store records it (None before any replica has led). The replica it
        names may have died since: its heartbeat says."""
        ...

    async def check_epoch(self, epoch: int) -> None:
        """Raise Fenced unless `epoch` is the current leadership epoch (a read: the executor's check right before
        a request leaves, when time has passed since the last fenced step)."""
        ...

    async def list_replicas(self) -> list[Replica]:
        """Every replica that has sent a heartbeat, by id."""
        ...

    # --- retention (store/retention.py) ----------------------------------------------------------

    async def prune(self, step: PruneStep) -> PruneStep:
        """One batch of a prune run: at most `step.batch` rows of the step's target read, and those the retention
        rules let go pruned (in a dry run, only counted), in one short transaction. Returns the next step; call
        again until it is finished (engine/prune.py does, pausing between batches so other writers get in)."""
        ...

    async def footprint(self) -> StoreFootprint:
        """The store's size on disk and the oldest rows it keeps."""
        ...

    async def reclaim_space(self) -> None:
        """Give the space pruning freed back to the disk, or make it reusable: SQLite rewrites its file (VACUUM,
        holding the write lock meanwhile); PostgreSQL vacuums the pruned tables (the files keep their size, the
        space is reused)."""
        ...

    # --- status ---------------------------------------------------------------------------------

    async def summary(self) -> StoreSummary: ...
