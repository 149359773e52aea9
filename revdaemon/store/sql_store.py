"""The store: one implementation of `Store` (base.py) over SQLite and PostgreSQL alike.

Every public method is one transaction of its dialect (dialect.py says where the databases differ). The SQL here
is written once, with named parameters, in the syntax both share (sql.py compiles it for each driver); time is
always the store's (`tx.now()`), never formatted here; a fenced change takes `tx.now(epoch)` as its first step.
What SQLite gets from its one writer, PostgreSQL gets from row locks (`FOR UPDATE`, dropped on SQLite) and
unique indexes (`ON CONFLICT`): a duplicate event, intent or link is skipped; one open conflict per record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from revdaemon.domain.record_names import RecordName
from revdaemon.errors import ClaimLost, LinkConflict, RecordNotFound, StoreError
from revdaemon.store import rows as to_record
from revdaemon.store.dialect import Dialect, Row, Tx, check_fence
from revdaemon.store.encoding import contains_pattern, dumps, loads, ts_text
from revdaemon.store.records import (
    REPLICA_FORGOTTEN_AFTER,
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
from revdaemon.store.retention import (
    KEPT_OPERATIONS_SQL,
    TOMBSTONE_TEXT,
    Position,
    PruneStep,
    Target,
    intent_may_go,
    pass_start,
    payload_may_go,
)
from revdaemon.store.states import EventStatus, IntentStatus, check_event_move, check_intent_move
from revdaemon.store.write_health import PROBE as WRITE_PROBE
from revdaemon.store.write_health import WriteHealth

# Of each claim, the events most recently due: real time goes ahead of a backlog by one claim at most, and the
# oldest still get most of every claim. (A claim of fewer than 5 is the oldest alone.)
NEWEST_SHARE_DIVISOR = 5


def newest_in_claim(limit: int) -> int:
    return limit // NEWEST_SHARE_DIVISOR


ENTITY_VERSION_ROWS = 100  # rows per INSERT when a step's entity versions are raised

PAYLOADS_PRUNED_BEFORE = "payloads_pruned_before"  # store_meta: where the last complete pass over events ended
PruneBatch = tuple[int, int, Position | None]  # rows read, rows pruned, the last row read


class SqlStore:
    """`Store` on a dialect. Made by `open_store` (store/__init__.py)."""

    def __init__(self, db: Dialect) -> None:
        self._db = db
        self._when = db.when
        self._writes = WriteHealth()

    @property
    def read_only(self) -> bool:
        return self._db.read_only

    @asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[Tx]:
        with self._writes.noting(write and not self.read_only):
            async with self._db.transaction(write=write) as tx:
                yield tx

    async def record_created_on(self) -> None:
        """Only the first open of a store records its day (the go-live date); called on each writable open."""
        async with self._tx() as tx:
            await tx.execute("""INSERT INTO store_meta (name, value) VALUES ('created_on', :day)
                                ON CONFLICT (name) DO NOTHING""", day=(await tx.now()).date().isoformat())

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        return await self._db.schema_version()

    async def ping(self) -> bool:
        try:
            async with self._tx(write=False) as tx:
                await tx.fetchval("SELECT 1 FROM cursors LIMIT 1")
                writable = await self._db.accepts_writes(tx)
            if writable and self._writes.failure is not None and not self.read_only:
                async with self._tx() as tx:
                    await tx.execute(WRITE_PROBE)
        except StoreError:
            return False
        return writable or self.read_only

    async def created_on(self) -> date:
        async with self._tx(write=False) as tx:
            value = await _meta(self._db, tx, "created_on")
            today = (await tx.now()).date()
        return date.fromisoformat(value) if value else today

    # --- inbox ----------------------------------------------------------------------------------

    async def add_events(
        self, events: Sequence[NewEvent], cursor: CursorUpdate | None = None
    ) -> list[bool]:
        if not events and cursor is None:
            return []

        async def body() -> set[str]:
            async with self._tx() as tx:
                now = await tx.now()
                stored = await self._db.insert_events(tx, events, now) if events else set()
                if cursor is not None:
                    await _upsert_cursor(tx, cursor, now)
                return stored

        stored = await self._db.retrying(body)
        inserted: list[bool] = []
        for event in events:
            # A key stored by this call counts as new once; a second copy in the same call is a duplicate.
            inserted.append(event.key in stored)
            stored.discard(event.key)
        return inserted

    async def claim_events(self, *, worker: str, limit: int, lease: timedelta,
                           mapping_version: int | None = None, epoch: int | None = None) -> list[Event]:
        async with self._tx() as tx:
            now = await tx.now(epoch)
            rows = await self._db.claim(tx, worker=worker, limit=limit, newest=newest_in_claim(limit),
                                        until=now + lease, now=now, mapping_version=mapping_version, epoch=epoch)
        return [self._event(row) for row in rows]

    async def release_claims(self, worker: str, *, epoch: int | None = None) -> int:
        async with self._tx() as tx:
            return await tx.execute(
                """UPDATE inbox_events SET status = 'received', claimed_by = NULL, claimed_until = NULL,
                       next_attempt_at = :now, updated_at = :now
                   WHERE status = 'claimed' AND claimed_by = :worker""", now=await tx.now(epoch), worker=worker)

    async def complete_event(self, event_id: int, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> None:
        async with self._tx() as tx:
            await _move_event(tx, event_id, EventStatus.DONE, await tx.now(epoch), clear_error=True,
                              claimed_by=claimed_by)

    async def complete_events(self, event_ids: Sequence[int], *, claimed_by: str,
                              epoch: int | None = None) -> list[int]:
        if not event_ids:
            return []
        check_event_move(EventStatus.CLAIMED, EventStatus.DONE)
        async with self._tx() as tx:
            rows = await tx.fetch(
                """UPDATE inbox_events SET status = 'done', last_error = NULL, claimed_by = NULL,
                       claimed_until = NULL, updated_at = :now
                   WHERE id IN :ids AND status = 'claimed' AND claimed_by = :worker
                   RETURNING id""", now=await tx.now(epoch), ids=sorted(set(event_ids)), worker=claimed_by)
        held = {row["id"] for row in rows}
        return [i for i in event_ids if i not in held]

    async def retry_event(self, event_id: int, *, error: str, next_attempt_at: datetime,
                          claimed_by: str | None = None, reset_attempts: bool = False,
                          refund_attempt: bool = False, epoch: int | None = None) -> None:
        async with self._tx() as tx:
            await _move_event(tx, event_id, EventStatus.RECEIVED, await tx.now(epoch), error=error,
                              next_attempt_at=next_attempt_at, claimed_by=claimed_by, reset_attempts=reset_attempts,
                              refund_attempt=refund_attempt)

    async def dead_letter_event(self, event_id: int, letter: NewDeadLetter, *, claimed_by: str | None = None,
                                epoch: int | None = None) -> int:
        async with self._tx() as tx:
            now = await tx.now(epoch)
            await _move_event(tx, event_id, EventStatus.DEAD, now, error=letter.error, claimed_by=claimed_by)
            # Dead is terminal until a person replays it: a later event about the same record (its own echo,
            # say the sync status "Error" written there) joins the open letter instead of making another.
            if letter.record_ref is not None:
                open_id = await tx.fetchval(
                    "SELECT id FROM dead_letters WHERE record_ref = :ref AND replayed_at IS NULL ORDER BY id LIMIT 1",
                    ref=letter.record_ref)
                if open_id is not None:
                    return int(open_id)
            letter_id = await tx.fetchval(
                """INSERT INTO dead_letters
                       (event_id, system, operation, error, error_code, status, record_ref, request, created_at)
                   VALUES (:event_id, :system, :operation, :error, :code, :status, :ref, :request, :now)
                   RETURNING id""",
                event_id=event_id, system=letter.system, operation=letter.operation, error=letter.error,
                code=letter.error_code, status=letter.status, ref=letter.record_ref, request=dumps(letter.request),
                now=now)
        return int(letter_id)

    async def conflict_event(self, event_id: int, conflict: NewConflict, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> int:
        async with self._tx() as tx:
            now = await tx.now(epoch)
            await _move_event(tx, event_id, EventStatus.CONFLICT, now, error=conflict.reason, claimed_by=claimed_by)
            # One open conflict per record and flow (a unique index): a later event about it joins the open one,
            # whose values become the latest seen, and waits for the same decision.
            conflict_id = await tx.fetchval(
                """INSERT INTO conflicts (event_id, flow, record_ref, reason, nue_values, salesforce_values,
                       synced_values, created_at)
                   VALUES (:event_id, :flow, :ref, :reason, :nue, :salesforce, :synced, :now)
                   ON CONFLICT (flow, record_ref) WHERE status = 'open' DO UPDATE
                   SET reason = excluded.reason, nue_values = excluded.nue_values,
                       salesforce_values = excluded.salesforce_values, synced_values = excluded.synced_values
                   RETURNING id""",
                event_id=event_id, flow=conflict.flow, ref=conflict.record_ref, reason=conflict.reason,
                nue=dumps(conflict.nue_values), salesforce=dumps(conflict.salesforce_values),
                synced=dumps(conflict.synced_values), now=now)
            await tx.execute("UPDATE inbox_events SET conflict_id = :conflict_id WHERE id = :event_id",
                             conflict_id=conflict_id, event_id=event_id)
        return int(conflict_id)

    async def get_event(self, event_id: int) -> Event | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM inbox_events WHERE id = :id", id=event_id)
        return self._event(row) if row else None

    async def search_events(self, text: str, *, limit: int = 50) -> list[Event]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(
                f"""SELECT * FROM inbox_events WHERE {_any_contains("event_key", "payload")}
                    ORDER BY id DESC LIMIT :limit""", pattern=contains_pattern(text), limit=limit)
        return [self._event(row) for row in rows]

    async def finished_per_minute(self, since: datetime) -> list[MinuteCount]:
        async with self._tx(write=False) as tx:
            return await self._db.finished_per_minute(tx, since)

    async def find_event(self, key: str) -> Event | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM inbox_events WHERE event_key = :key", key=key)
        return self._event(row) if row else None

    async def list_events(self, *, status: EventStatus | None = None, limit: int = 50) -> list[Event]:
        where = "" if status is None else "WHERE status = :status"
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM inbox_events {where} ORDER BY id DESC LIMIT :limit",
                                  limit=limit, **({} if status is None else {"status": status.value}))
        return [self._event(row) for row in rows]

    async def queue_depths(self) -> dict[EventStatus, int]:
        async with self._tx(write=False) as tx:
            return await _queue_depths(tx)

    # --- cursors --------------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> Cursor | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM cursors WHERE name = :name", name=name)
        return to_record.cursor(row, self._when) if row else None

    async def set_cursor(self, update: CursorUpdate) -> None:
        async with self._tx() as tx:
            await _upsert_cursor(tx, update, await tx.now())

    async def list_cursors(self) -> list[Cursor]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT * FROM cursors ORDER BY name")
        return [to_record.cursor(row, self._when) for row in rows]

    # --- id links -------------------------------------------------------------------------------

    async def put_link(self, link: Link) -> None:
        async with self._tx() as tx:
            # Insert first: a pairing another transaction is inserting at the same moment is waited for, then seen.
            await tx.execute(
                """INSERT INTO id_links (object_type, nue_id, salesforce_id, created_at)
                   VALUES (:object_type, :nue_id, :salesforce_id, :now)
                   ON CONFLICT DO NOTHING""",
                object_type=link.object_type, nue_id=link.nue_id, salesforce_id=link.salesforce_id,
                now=await tx.now())
            rows = await tx.fetch(
                """SELECT nue_id, salesforce_id FROM id_links
                   WHERE object_type = :object_type AND (nue_id = :nue_id OR salesforce_id = :salesforce_id)""",
                object_type=link.object_type, nue_id=link.nue_id, salesforce_id=link.salesforce_id)
            for row in rows:
                if (row["nue_id"], row["salesforce_id"]) != (link.nue_id, link.salesforce_id):
                    raise LinkConflict(
                        f"{link.object_type}: Nue {row['nue_id']} is linked to Salesforce {row['salesforce_id']}, "
                        f"not the pair Nue {link.nue_id} / Salesforce {link.salesforce_id}"
                    )

    async def find_link(
        self, object_type: str, *, nue_id: str | None = None, salesforce_id: str | None = None
    ) -> Link | None:
        if (nue_id is None) == (salesforce_id is None):
            raise ValueError("find_link takes exactly one of nue_id and salesforce_id")
        column, value = ("nue_id", nue_id) if nue_id is not None else ("salesforce_id", salesforce_id)
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow(f"SELECT * FROM id_links WHERE object_type = :object_type AND {column} = :id",
                                    object_type=object_type, id=value)
        return to_record.link(row) if row else None

    async def find_links(self, object_type: str, *, nue_ids: Sequence[str] = (),
                         salesforce_ids: Sequence[str] = ()) -> list[Link]:
        if not nue_ids and not salesforce_ids:
            return []
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(
                """SELECT * FROM id_links WHERE object_type = :object_type
                       AND (nue_id IN :nue_ids OR salesforce_id IN :salesforce_ids)
                   ORDER BY nue_id""",
                object_type=object_type, nue_ids=sorted(set(nue_ids)), salesforce_ids=sorted(set(salesforce_ids)))
        return [to_record.link(row) for row in rows]

    async def links_of(self, record_id: str) -> list[Link]:
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(
                "SELECT * FROM id_links WHERE nue_id = :id OR salesforce_id = :id ORDER BY object_type", id=record_id)
        return [to_record.link(row) for row in rows]

    # --- shadow mode ----------------------------------------------------------------------------

    async def record_shadow(self, entries: Sequence[NewShadowEntry]) -> int:
        if not entries:
            return 0
        async with self._tx() as tx:
            now = await tx.now()
            kept = 0
            for entry in entries:
                kept += await tx.execute(
                    """INSERT INTO shadow_plans (at, event_id, event_key, flow, outcome, system, action, target,
                                                 idem_key, changes, warnings, flags, note)
                       VALUES (:now, :event_id, :event_key, :flow, :outcome, :system, :action, :target, :idem_key,
                               :changes, :warnings, :flags, :note)
                       ON CONFLICT DO NOTHING""",
                    now=now, event_id=entry.event_id, event_key=entry.event_key, flow=entry.flow,
                    outcome=entry.outcome, system=entry.system, action=entry.action, target=entry.target,
                    idem_key=entry.idem_key, changes=dumps(list(entry.changes)), warnings=dumps(list(entry.warnings)),
                    flags=dumps(list(entry.flags)), note=entry.note)
        return kept

    async def list_shadow(self, *, since: datetime | None = None, limit: int = 100_000) -> list[ShadowEntry]:
        where = "" if since is None else "WHERE at >= :since"
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM shadow_plans {where} ORDER BY at, id LIMIT :limit", limit=limit,
                                  **({} if since is None else {"since": since}))
        return [to_record.shadow_entry(row, self._when) for row in rows]

    async def promote_shadow(self, *, actor: str, go_live: date | None = None) -> ShadowPromotion:
        async with self._tx() as tx:
            now = await tx.now()
            if await _meta(self._db, tx, SHADOW_PROMOTED_AT) is None:
                await _set_meta(tx, SHADOW_PROMOTED_AT, ts_text(now))
                await _set_meta(tx, SHADOW_PROMOTED_BY, actor)
                await _set_meta(tx, GO_LIVE, (go_live or now.date()).isoformat())
            return await _promotion(self._db, tx)  # type: ignore[return-value]  # set just now, or before

    async def shadow_promotion(self) -> ShadowPromotion | None:
        async with self._tx(write=False) as tx:
            return await _promotion(self._db, tx)

    async def go_live(self) -> date:
        async with self._tx(write=False) as tx:
            value = await _meta(self._db, tx, GO_LIVE)
        return date.fromisoformat(value) if value else await self.created_on()

    # --- names beside ids -----------------------------------------------------------------------

    async def remember_names(self, names: Sequence[RecordName]) -> None:
        if not names:
            return
        latest = {(n.record_id, n.system): n for n in names}
        async with self._tx() as tx:
            now = await tx.now()
            # In key order, so two workers naming the same records lock them in one order and cannot deadlock.
            await tx.execute_many(
                """INSERT INTO record_names (system, record_id, object, name, number, updated_at)
                   VALUES (:system, :record_id, :object, :name, :number, :now)
                   ON CONFLICT (record_id, system) DO UPDATE SET object = excluded.object, name = excluded.name,
                       number = excluded.number, updated_at = excluded.updated_at""",
                [{"system": n.system, "record_id": n.record_id, "object": n.object, "name": n.name,
                  "number": n.number, "now": now} for _, n in sorted(latest.items())])

    async def names_of(self, record_ids: Sequence[str]) -> list[RecordName]:
        if not record_ids:
            return []
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT * FROM record_names WHERE record_id IN :ids ORDER BY record_id, system",
                                  ids=list(dict.fromkeys(record_ids)))
        return [_record_name(row) for row in rows]

    async def find_names(self, text: str, *, limit: int = 20) -> list[RecordName]:
        if not text.strip():
            return []
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(
                f"""SELECT * FROM record_names WHERE {_any_contains("name", "number")}
                    ORDER BY updated_at DESC, record_id LIMIT :limit""",
                pattern=contains_pattern(text.strip()), limit=limit)
        return [_record_name(row) for row in rows]

    # --- last synced values ---------------------------------------------------------------------

    async def get_synced(self, record_refs: Sequence[str]) -> dict[str, SyncedRecord]:
        if not record_refs:
            return {}
        values: dict[str, dict[str, object]] = {}
        declined: dict[str, dict[str, object]] = {}
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT * FROM synced_values WHERE record_ref IN :refs",
                                  refs=list(dict.fromkeys(record_refs)))
        for row in rows:
            values.setdefault(row["record_ref"], {})[row["field"]] = loads(row["value"])
            if row["declined"] is not None:
                declined.setdefault(row["record_ref"], {})[row["field"]] = loads(row["declined"])
        return {ref: SyncedRecord(values=fields, declined=declined.get(ref, {})) for ref, fields in values.items()}

    # --- idempotency ----------------------------------------------------------------------------

    async def record_intent(self, intent: NewIntent, *, epoch: int | None = None) -> WriteIntent:
        async with self._tx() as tx:
            await tx.execute(
                """INSERT INTO write_intents
                       (idem_key, system, operation, target, request, event_id, status, created_at, updated_at,
                        epoch)
                   VALUES (:key, :system, :operation, :target, :request, :event_id, 'recorded', :now, :now, :epoch)
                   ON CONFLICT (idem_key) DO NOTHING""",
                now=await tx.now(epoch), key=intent.key, system=intent.system, operation=intent.operation,
                target=intent.target, request=dumps(intent.request), event_id=intent.event_id, epoch=epoch)
            row = await tx.fetchrow("SELECT * FROM write_intents WHERE idem_key = :key", key=intent.key)
        assert row is not None  # inserted or already there, inside this transaction
        return self._intent(row)

    async def record_intents(self, intents: Sequence[NewIntent], *, epoch: int | None = None) -> list[WriteIntent]:
        if not intents:
            return []
        async with self._tx() as tx:
            now = await tx.now(epoch)
            # In key order: two transactions recording overlapping keys take their rows in one order.
            await tx.execute_many(
                """INSERT INTO write_intents
                       (idem_key, system, operation, target, request, event_id, status, created_at, updated_at,
                        epoch)
                   VALUES (:key, :system, :operation, :target, :request, :event_id, 'recorded', :now, :now, :epoch)
                   ON CONFLICT (idem_key) DO NOTHING""",
                [{"key": i.key, "system": i.system, "operation": i.operation, "target": i.target,
                  "request": dumps(i.request), "event_id": i.event_id, "now": now, "epoch": epoch}
                 for i in sorted({i.key: i for i in intents}.values(), key=lambda i: i.key)])
            rows = await tx.fetch("SELECT * FROM write_intents WHERE idem_key IN :keys",
                                  keys=sorted({i.key for i in intents}))
        by_key = {row["idem_key"]: self._intent(row) for row in rows}
        return [by_key[i.key] for i in intents]  # inserted or already there, inside this transaction

    async def settle_writes(self, settlements: Sequence[Settlement], *, epoch: int | None = None) -> None:
        if not settlements:
            return
        if any(settled.entry.idem_key is None for settled in settlements):
            raise ValueError("a settlement's audit entry names its intent by idem_key")
        async with self._tx() as tx:
            now = await tx.now(epoch)
            # Synced values in record order, then intents in key order: one lock order for every transaction. Each
            # kind of row in one statement for the whole call (a round trip to the store's thread each).
            await _insert_audits(tx, [settled.entry for settled in sorted(
                settlements, key=lambda s: (s.entry.record_ref or "", s.entry.idem_key or ""))], now)
            await _settle_intents(tx, sorted(settlements, key=lambda s: s.entry.idem_key or ""), now)

    async def begin_send(self, keys: Sequence[str], *, epoch: int | None = None) -> None:
        if not keys:
            return
        unique = sorted(set(keys))
        async with self._tx() as tx:
            now = await tx.now(epoch)
            # Rows locked in key order: two transactions marking overlapping keys cannot deadlock.
            rows = await tx.fetch("""SELECT idem_key, status FROM write_intents WHERE idem_key IN :keys
                                     ORDER BY idem_key FOR UPDATE""", keys=unique)
            statuses = {row["idem_key"]: IntentStatus(row["status"]) for row in rows}
            for key in unique:
                if key not in statuses:
                    raise RecordNotFound(f"no write intent {key!r}")
                check_intent_move(statuses[key], IntentStatus.SENT)
            await tx.execute(
                """UPDATE write_intents SET status = 'sent', ever_sent = true, error = NULL, updated_at = :now,
                       epoch = :epoch
                   WHERE idem_key IN :keys""", keys=unique, now=now, epoch=epoch)

    async def confirm_intent(self, key: str, result: dict[str, object], *, epoch: int | None = None) -> None:
        async with self._tx() as tx:
            await _move_intent(tx, key, IntentStatus.CONFIRMED, await tx.now(epoch), result=result)

    async def fail_intent(self, key: str, error: str, *, settle_for: timedelta | None = None,
                          epoch: int | None = None) -> None:
        async with self._tx() as tx:
            now = await tx.now(epoch)
            await _move_intent(tx, key, IntentStatus.FAILED, now, error=error,
                               settle_after=now + settle_for if settle_for is not None else None)

    async def reopen_intent(self, key: str, *, epoch: int | None = None) -> None:
        async with self._tx() as tx:
            await _move_intent(tx, key, IntentStatus.RECORDED, await tx.now(epoch))

    async def get_intent(self, key: str) -> WriteIntent | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM write_intents WHERE idem_key = :key", key=key)
        return self._intent(row) if row else None

    async def list_intents(self, *, event_ids: Sequence[int] = (), mentioning: str | None = None,
                           limit: int = 100) -> list[WriteIntent]:
        conditions: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if event_ids:
            conditions.append("event_id IN :event_ids")
            params["event_ids"] = sorted(set(event_ids))
        if mentioning:
            conditions.append(_any_contains("target", "request", "idem_key"))
            params["pattern"] = contains_pattern(mentioning)
        if not conditions:
            return []
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"""SELECT * FROM write_intents WHERE {' OR '.join(conditions)}
                                       ORDER BY created_at DESC LIMIT :limit""", **params)
        return [self._intent(row) for row in rows]

    # --- ordering -------------------------------------------------------------------------------

    async def get_entity_version(self, entity: str) -> str | None:
        return (await self.get_entity_versions([entity])).get(entity)

    async def get_entity_versions(self, entities: Sequence[str]) -> dict[str, str]:
        if not entities:
            return {}
        async with self._tx(write=False) as tx:
            rows = await tx.fetch("SELECT entity, version FROM entity_versions WHERE entity IN :entities",
                                  entities=sorted(set(entities)))
        return {row["entity"]: str(row["version"]) for row in rows}

    async def raise_entity_version(self, entity: str, version: str) -> bool:
        return entity in await self.raise_entity_versions({entity: version})

    async def raise_entity_versions(self, versions: Mapping[str, str]) -> set[str]:
        if not versions:
            return set()
        raised: set[str] = set()
        ordered = sorted(versions)  # in entity order: one lock order for every transaction
        async with self._tx() as tx:
            now = await tx.now()
            for start in range(0, len(ordered), ENTITY_VERSION_ROWS):
                # Many rows a statement (a round trip each): RETURNING names the rows inserted or raised, not
                # those the WHERE kept. Text compared byte by byte on both (PostgreSQL: the column collates as "C").
                chunk = ordered[start:start + ENTITY_VERSION_ROWS]
                rows = ", ".join(f"(:e{i}, :v{i}, :now)" for i in range(len(chunk)))
                params = {f"e{i}": entity for i, entity in enumerate(chunk)}
                params.update({f"v{i}": versions[entity] for i, entity in enumerate(chunk)})
                found = await tx.fetch(
                    f"""INSERT INTO entity_versions (entity, version, updated_at) VALUES {rows}
                        ON CONFLICT (entity) DO UPDATE SET version = excluded.version,
                            updated_at = excluded.updated_at
                        WHERE excluded.version > entity_versions.version
                        RETURNING entity""", now=now, **params)
                raised.update(str(row["entity"]) for row in found)
        return raised

    # --- conflicts ------------------------------------------------------------------------------

    async def list_conflicts(
        self, *, status: ConflictStatus | None = ConflictStatus.OPEN, limit: int = 50
    ) -> list[ConflictRecord]:
        where = "" if status is None else "WHERE status = :status"
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM conflicts {where} ORDER BY id DESC LIMIT :limit",
                                  limit=limit, **({} if status is None else {"status": status.value}))
        return [self._conflict(row) for row in rows]

    async def get_conflict(self, conflict_id: int) -> ConflictRecord | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM conflicts WHERE id = :id", id=conflict_id)
        return self._conflict(row) if row else None

    async def resolve_conflict(
        self, conflict_id: int, *, resolution: Resolution, actor: str, comment: str | None = None
    ) -> ConflictRecord:
        async with self._tx() as tx:
            now = await tx.now()
            row = await tx.fetchrow("SELECT * FROM conflicts WHERE id = :id FOR UPDATE", id=conflict_id)
            if row is None:
                raise RecordNotFound(f"no conflict {conflict_id}")
            if row["status"] != ConflictStatus.OPEN.value:
                raise StoreError(f"conflict {conflict_id} is already resolved ({row['resolution']})")
            updated = await tx.fetchrow(
                """UPDATE conflicts SET status = 'resolved', resolution = :resolution, resolved_by = :actor,
                       comment = :comment, resolved_at = :now WHERE id = :id RETURNING *""",
                resolution=resolution.value, actor=actor, comment=comment, now=now, id=conflict_id)
            shown = loads(row["salesforce_values"]) or {}
            if resolution is not Resolution.SKIP and shown and str(row["record_ref"]).startswith("salesforce:"):
                declined = loads(row["nue_values"]) if resolution is Resolution.TAKE_SALESFORCE else None
                await _remember_synced(tx, row["record_ref"], shown, now, declined=declined or {})
            waiting = await tx.fetch(
                """SELECT id FROM inbox_events WHERE status = 'conflict' AND (conflict_id = :id OR id = :event_id)
                   ORDER BY id""", id=conflict_id, event_id=row["event_id"])
            # Every event waiting on this conflict takes the same decision.
            target = EventStatus.RECEIVED if resolution is Resolution.TAKE_NUE else EventStatus.DONE
            for event_row in waiting:
                await _move_event(tx, event_row["id"], target, now, reset_attempts=True, next_attempt_at=now)
        assert updated is not None
        return self._conflict(updated)

    # --- dead letters ---------------------------------------------------------------------------

    async def list_dead_letters(self, *, include_replayed: bool = False, limit: int = 50,
                                error_code: str | None = None) -> list[DeadLetter]:
        clauses = ([] if include_replayed else ["replayed_at IS NULL"]) + \
            (["error_code = :code"] if error_code is not None else [])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params: dict[str, Any] = {"limit": limit, **({"code": error_code} if error_code is not None else {})}
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM dead_letters {where} ORDER BY id DESC LIMIT :limit", **params)
        return [self._dead_letter(row) for row in rows]

    async def dead_letter_codes(self, *, include_replayed: bool = False) -> list[tuple[str | None, int]]:
        where = "" if include_replayed else "WHERE replayed_at IS NULL"
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT error_code, count(*) AS n FROM dead_letters {where} GROUP BY error_code")
        counted = [(row["error_code"], int(row["n"])) for row in rows]
        return sorted(counted, key=lambda c: (-c[1], c[0] or ""))

    async def open_dead_letter(self, record_ref: str) -> DeadLetter | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow(
                "SELECT * FROM dead_letters WHERE record_ref = :ref AND replayed_at IS NULL ORDER BY id LIMIT 1",
                ref=record_ref)
        return self._dead_letter(row) if row else None

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM dead_letters WHERE id = :id", id=letter_id)
        return self._dead_letter(row) if row else None

    async def replay_dead_letter(self, letter_id: int, *, remap: bool = False) -> Event:
        async with self._tx() as tx:
            now = await tx.now()
            row = await tx.fetchrow("SELECT * FROM dead_letters WHERE id = :id FOR UPDATE", id=letter_id)
            if row is None:
                raise RecordNotFound(f"no dead letter {letter_id}")
            if row["replayed_at"] is not None:
                replayed = self._when(row["replayed_at"])
                raise StoreError(f"dead letter {letter_id} was already replayed at "
                                 f"{replayed.isoformat() if replayed else '?'}")
            if row["event_id"] is None:
                raise StoreError(f"dead letter {letter_id} has no inbox event to replay")
            await _move_event(tx, row["event_id"], EventStatus.RECEIVED, now, reset_attempts=True,
                              next_attempt_at=now)
            await tx.execute("UPDATE dead_letters SET replayed_at = :now WHERE id = :id", now=now, id=letter_id)
            if remap:
                await tx.execute("UPDATE inbox_events SET mapping_version = NULL WHERE id = :id", id=row["event_id"])
            event_row = await tx.fetchrow("SELECT * FROM inbox_events WHERE id = :id", id=row["event_id"])
        assert event_row is not None
        return self._event(event_row)

    # --- mapping versions -----------------------------------------------------------------------

    async def register_mapping(self, text: str, content_hash: str) -> MappingVersion:
        find = "SELECT * FROM mapping_versions WHERE content_hash = :hash"
        async with self._tx() as tx:
            row = await tx.fetchrow(find, hash=content_hash)
            if row is None:
                # Numbered 1, 2, 3 with no gaps (a sequence would skip a number on every lost race): two writers
                # registering at once take turns, and the second finds the first's row.
                await self._db.lock_for_numbering(tx, "mapping_versions")
                row = await tx.fetchrow(find, hash=content_hash)
            if row is None:
                row = await tx.fetchrow(
                    """INSERT INTO mapping_versions (version, content_hash, text, created_at)
                       VALUES ((SELECT coalesce(max(version), 0) + 1 FROM mapping_versions), :hash, :text, :now)
                       RETURNING *""", hash=content_hash, text=text, now=await tx.now())
        assert row is not None
        return self._mapping(row)

    async def find_mapping(self, content_hash: str) -> MappingVersion | None:
        rows = await self._mapping_rows("WHERE content_hash = :hash", hash=content_hash)
        return self._mapping(rows[0]) if rows else None

    async def get_mapping(self, version: int) -> MappingVersion | None:
        rows = await self._mapping_rows("WHERE version = :version", version=version)
        return self._mapping(rows[0]) if rows else None

    async def list_mappings(self) -> list[MappingVersion]:
        return [self._mapping(row) for row in await self._mapping_rows("ORDER BY version")]

    async def _mapping_rows(self, where: str, **params: Any) -> list[Row]:
        async with self._tx(write=False) as tx:
            if not await self._db.has_table(tx, "mapping_versions"):
                return []
            return await tx.fetch(f"SELECT * FROM mapping_versions {where}", **params)

    # --- audit ----------------------------------------------------------------------------------

    async def record_write(self, entry: NewAuditEntry) -> int:
        async with self._tx() as tx:
            return await _insert_audit(tx, entry, await tx.now())

    async def list_writes(self, *, record_ref: str | None = None, event_id: int | None = None,
                          mentioning: str | None = None, limit: int = 50) -> list[AuditEntry]:
        conditions: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if mentioning:
            conditions.append(_any_contains("record_ref", "target", "detail"))
            params["pattern"] = contains_pattern(mentioning)
        if record_ref is not None:
            conditions.append("record_ref = :ref")
            params["ref"] = record_ref
        if event_id is not None:
            conditions.append("event_id = :event_id")
            params["event_id"] = event_id
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._tx(write=False) as tx:
            rows = await tx.fetch(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT :limit", **params)
        return [to_record.audit(row, self._when) for row in rows]

    async def backup(self, destination: Path) -> None:
        await self._db.backup(destination)

    # --- replicas -------------------------------------------------------------------------------

    async def heartbeat(self, replica: ReplicaBeat) -> None:
        async with self._tx() as tx:
            now = await tx.now()
            await tx.execute(
                """INSERT INTO replicas (replica_id, host, pid, started_at, last_heartbeat, is_leader)
                   VALUES (:id, :host, :pid, :started_at, :now, :is_leader)
                   ON CONFLICT (replica_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
                       is_leader = excluded.is_leader""",
                id=replica.replica_id, host=replica.host, pid=replica.pid, started_at=replica.started_at, now=now,
                is_leader=replica.is_leader)
            await tx.execute("DELETE FROM replicas WHERE last_heartbeat < :forgotten_before",
                             forgotten_before=now - REPLICA_FORGOTTEN_AFTER)

    async def try_lead(self, replica_id: str) -> Leadership | None:
        return await self._db.try_lead(replica_id)

    async def leadership(self) -> Leadership | None:
        async with self._tx(write=False) as tx:
            if not await self._db.has_table(tx, "leadership"):
                return None
            return to_record.leadership(await tx.fetchrow("SELECT * FROM leadership"), self._when)

    async def check_epoch(self, epoch: int) -> None:
        async with self._tx(write=False) as tx:
            row = await tx.fetchrow("SELECT * FROM leadership")
        check_fence(epoch, row, self._when)

    async def list_replicas(self) -> list[Replica]:
        async with self._tx(write=False) as tx:
            if not await self._db.has_table(tx, "replicas"):
                return []
            rows = await tx.fetch("SELECT * FROM replicas ORDER BY replica_id")
        return [to_record.replica(row, self._when) for row in rows]

    # --- status ---------------------------------------------------------------------------------

    async def summary(self) -> StoreSummary:
        async with self._tx(write=False) as tx:
            depths = await _queue_depths(tx)
            cursors = tuple(to_record.cursor(row, self._when)
                            for row in await tx.fetch("SELECT * FROM cursors ORDER BY name"))
            conflicts = await tx.fetchval("SELECT count(*) FROM conflicts WHERE status = 'open'")
            letters = await tx.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            oldest = await tx.fetchval("SELECT min(next_attempt_at) FROM inbox_events WHERE status = 'received'")
        return StoreSummary(queue_depths=depths, cursors=cursors, open_conflicts=int(conflicts or 0),
                            dead_letters=int(letters or 0), oldest_due_at=self._when(oldest))

    # --- retention (store/retention.py) ----------------------------------------------------------

    async def prune(self, step: PruneStep) -> PruneStep:
        if step.target is None:
            return step
        async with self._tx(write=not step.dry_run) as tx:
            if step.target is Target.EVENT_PAYLOADS:
                read, pruned, last = await self._prune_payloads(tx, step)
            elif step.target is Target.WRITE_INTENTS:
                read, pruned, last = await self._prune_intents(tx, step)
            else:
                read, pruned, last = await self._prune_audit(tx, step)
        return step.after_batch(read=read, pruned=pruned, last=last)

    async def _prune_payloads(self, tx: Tx, step: PruneStep) -> PruneBatch:
        """Done events finished before the cutoff, in finishing order: each payload still kept becomes the
        tombstone. The event's row, key and times stay (retention.py says why)."""
        recorded = await _meta(self._db, tx, PAYLOADS_PRUNED_BEFORE)
        done_before = datetime.fromisoformat(recorded) if recorded else None
        start = step.after or pass_start(Target.EVENT_PAYLOADS, done_before)
        # Whole rows: SQLite writes the pruned ones again from them (dialect.tombstone_payloads).
        rows = await tx.fetch(
            """SELECT * FROM inbox_events
               WHERE status = 'done' AND updated_at < :cutoff AND updated_at >= :start
                 AND (updated_at > :start OR id > :key)
               ORDER BY updated_at, id LIMIT :batch""",
            cutoff=step.cutoff, start=start.at, key=start.key, batch=step.batch)
        going = [row for row in rows if row["payload"] != TOMBSTONE_TEXT and payload_may_go(EventStatus(row["status"]))]
        pruned = len(going)
        if going and not step.dry_run:
            pruned = await self._db.tombstone_payloads(tx, going, TOMBSTONE_TEXT)
        if len(rows) < step.batch and not step.dry_run:
            # The pass is complete: every event finished before the cutoff has lost its payload.
            await _set_meta(tx, PAYLOADS_PRUNED_BEFORE, ts_text(max(step.cutoff, done_before or step.cutoff)))
        return len(rows), pruned, self._position(rows, "updated_at", "id")

    async def _prune_intents(self, tx: Tx, step: PruneStep) -> PruneBatch:
        """Settled intents last changed before the cutoff, oldest first, read through the index that leaves out the
        write kinds always kept; those the rules let go are deleted."""
        start = step.after or pass_start(Target.WRITE_INTENTS, None)
        rows = await tx.fetch(
            f"""SELECT i.idem_key, i.status, i.operation, i.updated_at, e.status AS event_status
                FROM write_intents AS i LEFT JOIN inbox_events AS e ON e.id = i.event_id
                WHERE i.operation NOT IN {KEPT_OPERATIONS_SQL} AND i.updated_at < :cutoff
                  AND i.updated_at >= :start AND (i.updated_at > :start OR i.idem_key > :key)
                ORDER BY i.updated_at, i.idem_key LIMIT :batch""",
            cutoff=step.cutoff, start=start.at, key=start.key, batch=step.batch)
        keys = [row["idem_key"] for row in rows if intent_may_go(
            IntentStatus(row["status"]), row["operation"],
            EventStatus(row["event_status"]) if row["event_status"] is not None else None)]
        pruned = len(keys)
        if keys and not step.dry_run:
            # The state is checked again in the DELETE: one may have been reopened since it was read.
            pruned = await tx.execute(
                """DELETE FROM write_intents WHERE idem_key IN :keys AND status IN ('confirmed', 'failed')
                   AND updated_at < :cutoff""", keys=keys, cutoff=step.cutoff)
        return len(rows), pruned, self._position(rows, "updated_at", "idem_key")

    async def _prune_audit(self, tx: Tx, step: PruneStep) -> PruneBatch:
        """Audit entries recorded before the cutoff, oldest first: all of them go."""
        start = step.after or pass_start(Target.AUDIT_ENTRIES, None)
        rows = await tx.fetch(
            """SELECT id, at FROM audit_log WHERE at < :cutoff AND at >= :start AND (at > :start OR id > :key)
               ORDER BY at, id LIMIT :batch""", cutoff=step.cutoff, start=start.at, key=start.key, batch=step.batch)
        pruned = len(rows)
        if rows and not step.dry_run:
            pruned = await tx.execute("DELETE FROM audit_log WHERE id IN :ids", ids=[row["id"] for row in rows])
        return len(rows), pruned, self._position(rows, "at", "id")

    def _position(self, rows: Sequence[Row], at: str, key: str) -> Position | None:
        if not rows:
            return None
        when = self._when(rows[-1][at])
        assert when is not None
        return Position(when, rows[-1][key])

    async def footprint(self) -> StoreFootprint:
        async with self._tx(write=False) as tx:
            size, free = await self._db.size_on_disk(tx)
            # The first id is the first event stored: no index on received_at is needed.
            oldest_event = await tx.fetchval("SELECT received_at FROM inbox_events ORDER BY id LIMIT 1")
            oldest_audit = await tx.fetchval("SELECT min(at) FROM audit_log")
            pruned_before = await _meta(self._db, tx, PAYLOADS_PRUNED_BEFORE)
        return StoreFootprint(size_bytes=size, free_bytes=free, oldest_event_at=self._when(oldest_event),
                              oldest_audit_at=self._when(oldest_audit),
                              payloads_pruned_before=datetime.fromisoformat(pruned_before) if pruned_before else None)

    async def reclaim_space(self) -> None:
        if self.read_only:
            raise StoreError("the store is open read-only: it cannot be vacuumed")
        with self._writes.noting(True):
            await self._db.reclaim_space()

    # --- row -> record ----------------------------------------------------------------------------

    def _event(self, row: Row) -> Event:
        return to_record.event(row, self._when)

    def _intent(self, row: Row) -> WriteIntent:
        return to_record.intent(row, self._when)

    def _conflict(self, row: Row) -> ConflictRecord:
        return to_record.conflict(row, self._when)

    def _dead_letter(self, row: Row) -> DeadLetter:
        return to_record.dead_letter(row, self._when)

    def _mapping(self, row: Row) -> MappingVersion:
        return to_record.mapping(row, self._when)


# --- statements shared by several methods -----------------------------------------------------------


def _record_name(row: Row) -> RecordName:
    return RecordName(system=row["system"], object=row["object"], record_id=row["record_id"], name=row["name"],
                      number=row["number"])


def _any_contains(*columns: str) -> str:
    """Any of `columns` contains :pattern (encoding.contains_pattern), ignoring case as SQLite's LIKE does."""
    return "(" + " OR ".join(f"{column} ILIKE :pattern ESCAPE '\\'" for column in columns) + ")"


async def _meta(db: Dialect, tx: Tx, name: str) -> str | None:
    if not await db.has_table(tx, "store_meta"):
        return None
    value = await tx.fetchval("SELECT value FROM store_meta WHERE name = :name", name=name)
    return str(value) if value is not None else None


SHADOW_PROMOTED_AT = "shadow_promoted_at"
SHADOW_PROMOTED_BY = "shadow_promoted_by"
GO_LIVE = "go_live"


async def _promotion(db: Dialect, tx: Tx) -> ShadowPromotion | None:
    at = await _meta(db, tx, SHADOW_PROMOTED_AT)
    if at is None:
        return None
    go_live = await _meta(db, tx, GO_LIVE) or at[:10]
    return ShadowPromotion(at=datetime.fromisoformat(at), go_live=date.fromisoformat(go_live),
                           actor=await _meta(db, tx, SHADOW_PROMOTED_BY) or "?")


async def _set_meta(tx: Tx, name: str, value: str) -> None:
    await tx.execute("""INSERT INTO store_meta (name, value) VALUES (:name, :value)
                        ON CONFLICT (name) DO UPDATE SET value = excluded.value""", name=name, value=value)


async def _queue_depths(tx: Tx) -> dict[EventStatus, int]:
    rows = await tx.fetch("SELECT status, count(*) AS n FROM inbox_events GROUP BY status")
    depths = dict.fromkeys(EventStatus, 0)
    for row in rows:
        depths[EventStatus(row["status"])] = row["n"]
    return depths


async def _upsert_cursor(tx: Tx, update: CursorUpdate, now: datetime) -> None:
    await tx.execute(
        """INSERT INTO cursors (name, value, updated_at) VALUES (:name, :value, :now)
           ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
        name=update.name, value=update.value, now=now)


_INSERT_AUDIT = """INSERT INTO audit_log (at, system, operation, target, outcome, idem_key, event_id,
                      record_ref, status, detail, mapping_version)
                  VALUES (:now, :system, :operation, :target, :outcome, :key, :event_id, :ref, :status, :detail,
                          :mapping_version)"""
_UPSERT_SYNCED = """INSERT INTO synced_values (record_ref, field, value, declined, updated_at)
                    VALUES (:ref, :field, :value, :declined, :now)
                    ON CONFLICT (record_ref, field) DO UPDATE SET value = excluded.value, declined = excluded.declined,
                        updated_at = excluded.updated_at"""


def _audit_row(entry: NewAuditEntry, now: datetime) -> dict[str, Any]:
    return {"now": now, "system": entry.system, "operation": entry.operation, "target": entry.target,
            "outcome": entry.outcome, "key": entry.idem_key, "event_id": entry.event_id, "ref": entry.record_ref,
            "status": entry.status, "detail": dumps(entry.detail), "mapping_version": entry.mapping_version}


def _synced_rows(record_ref: str, fields: Mapping[str, Any], now: datetime,
                 declined: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A record's synced values in field order, so two transactions writing the same record's fields lock them in
    one order and cannot deadlock."""
    declined = declined or {}
    return [{"ref": record_ref, "field": name, "value": dumps(fields[name]),
             "declined": dumps(declined[name]) if name in declined else None, "now": now}
            for name in sorted(fields)]


def _synced_by(entry: NewAuditEntry) -> bool:
    """A confirmed write's fields become its record's last synced values."""
    return entry.outcome == "ok" and bool(entry.record_ref) and bool(entry.synced_fields)


async def _insert_audit(tx: Tx, entry: NewAuditEntry, now: datetime) -> int:
    """One audit entry, and the synced values it sets."""
    entry_id = await tx.fetchval(f"{_INSERT_AUDIT} RETURNING id", **_audit_row(entry, now))
    if _synced_by(entry):
        assert entry.record_ref is not None
        await _remember_synced(tx, entry.record_ref, entry.synced_fields, now)
    return int(entry_id)


async def _insert_audits(tx: Tx, entries: Sequence[NewAuditEntry], now: datetime) -> None:
    """Audit entries in this order, as `_insert_audit` each, in one statement; then the synced values they set,
    in the entries' order, in one more."""
    await tx.execute_many(_INSERT_AUDIT, [_audit_row(e, now) for e in entries])
    synced = [row for e in entries if _synced_by(e) and e.record_ref is not None
              for row in _synced_rows(e.record_ref, e.synced_fields, now)]
    if synced:
        await tx.execute_many(_UPSERT_SYNCED, synced)


async def _settle_intents(tx: Tx, settlements: Sequence[Settlement], now: datetime) -> None:
    """Each settlement's intent confirmed or failed (as `_move_intent`), read and written in key order."""
    keys = sorted({s.entry.idem_key for s in settlements if s.entry.idem_key is not None})
    rows = await tx.fetch("SELECT idem_key, status FROM write_intents WHERE idem_key IN :keys ORDER BY idem_key "
                          "FOR UPDATE", keys=keys)
    status = {row["idem_key"]: IntentStatus(row["status"]) for row in rows}
    updates = []
    for settled in settlements:
        key = settled.entry.idem_key
        if key not in status:
            raise RecordNotFound(f"no write intent {key!r}")
        target = IntentStatus.CONFIRMED if settled.confirmed else IntentStatus.FAILED
        check_intent_move(status[key], target)
        status[key] = target
        updates.append({"key": key, "status": target.value, "now": now,
                        "result": dumps(dict(settled.result)) if settled.confirmed else None,
                        "error": None if settled.confirmed else settled.error,
                        "settle_after": now + settled.settle_for if not settled.confirmed and settled.settle_for
                        else None})
    await tx.execute_many(
        """UPDATE write_intents SET status = :status, result = coalesce(:result, result), error = :error,
               updated_at = :now, settle_after = :settle_after
           WHERE idem_key = :key""", updates)


async def _remember_synced(tx: Tx, record_ref: str, fields: Mapping[str, Any], now: datetime, *,
                           declined: Mapping[str, Any] | None = None) -> None:
    """A write or a person's decision sets the field's baseline; a declined Nue value is kept only with the
    decision that declined it (a later write clears it)."""
    await tx.execute_many(_UPSERT_SYNCED, _synced_rows(record_ref, fields, now, declined))


_REFUND = ", attempts = GREATEST(attempts - 1, 0)"  # the claim counted an attempt that was no try


async def _move_event(
    tx: Tx,
    event_id: int,
    target: EventStatus,
    now: datetime,
    *,
    error: str | None = None,
    clear_error: bool = False,
    next_attempt_at: datetime | None = None,
    reset_attempts: bool = False,
    refund_attempt: bool = False,
    claimed_by: str | None = None,
) -> None:
    # FOR UPDATE: a claim made at this moment waits for this move, or this move sees it.
    row = await tx.fetchrow(
        "SELECT status, last_error, claimed_by FROM inbox_events WHERE id = :id FOR UPDATE", id=event_id)
    if row is None:
        raise RecordNotFound(f"no inbox event {event_id}")
    if claimed_by is not None and (row["status"] != EventStatus.CLAIMED.value or row["claimed_by"] != claimed_by):
        raise ClaimLost(f"inbox event {event_id} is no longer claimed by {claimed_by} "
                        f"(now {row['status']}, {row['claimed_by'] or 'unclaimed'})")
    check_event_move(EventStatus(row["status"]), target)
    last_error = None if clear_error else (error if error is not None else row["last_error"])
    attempts = ", attempts = 0" if reset_attempts else (_REFUND if refund_attempt else "")
    due = ", next_attempt_at = :due" if next_attempt_at is not None else ""
    await tx.execute(
        f"""UPDATE inbox_events
            SET status = :status, last_error = :error, claimed_by = NULL, claimed_until = NULL,
                updated_at = :now{due}{attempts}
            WHERE id = :id""",
        status=target.value, error=last_error, now=now, id=event_id,
        **({"due": next_attempt_at} if next_attempt_at is not None else {}))


async def _move_intent(
    tx: Tx,
    key: str,
    target: IntentStatus,
    now: datetime,
    *,
    result: dict[str, object] | None = None,
    error: str | None = None,
    settle_after: datetime | None = None,
) -> None:
    row = await tx.fetchrow("SELECT status FROM write_intents WHERE idem_key = :key FOR UPDATE", key=key)
    if row is None:
        raise RecordNotFound(f"no write intent {key!r}")
    check_intent_move(IntentStatus(row["status"]), target)
    # `settle_after` is set by a failure of unknown outcome, cleared by any other settling, and kept through a
    # reopen (the executor looks up before sending again). `ever_sent` is begin_send's.
    settle = ", settle_after = :settle_after" if target in (IntentStatus.CONFIRMED, IntentStatus.FAILED) else ""
    await tx.execute(
        f"""UPDATE write_intents SET status = :status, result = coalesce(:result, result), error = :error,
                updated_at = :now{settle}
            WHERE idem_key = :key""",
        status=target.value, result=dumps(result) if result is not None else None, error=error, now=now, key=key,
        **({"settle_after": settle_after} if settle else {}))
