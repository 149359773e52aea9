"""The SQLite backend of the store: one file, WAL, synchronous=FULL, one connection, one writer at a time.

Theory of operation: aiosqlite runs the connection on its own thread. Every public method takes the
store's lock and runs as one transaction (`BEGIN IMMEDIATE` for writes, so another process sharing the
file waits on the busy timeout instead of failing half-way). The transaction body is shielded from
cancellation: a worker cancelled at shutdown never leaves a transaction open or half-recorded. WAL lets
readers in other processes (the CLI's `status`) run while the daemon writes; synchronous=FULL makes a
commit durable before a webhook is acknowledged.

Fencing on one box: the leadership row is taken once per start (the daemon's first `try_lead`), so a second
daemon started on the same file by mistake takes the epoch and the first one's fenced steps are refused. The
check of the epoch and the change it guards share one `BEGIN IMMEDIATE` transaction, so they are atomic.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from revdaemon.errors import (
    ClaimLost,
    Fenced,
    LinkConflict,
    RecordNotFound,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from revdaemon.store import rows as to_record
from revdaemon.store.encoding import contains_pattern as _contains
from revdaemon.store.encoding import dumps as _dumps
from revdaemon.store.encoding import loads as _loads
from revdaemon.store.encoding import ts_text as _ts
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION
from revdaemon.store.records import (
    REPLICA_FORGOTTEN_AFTER,
    AuditEntry,
    Clock,
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
    Replica,
    ReplicaBeat,
    Resolution,
    StoreFootprint,
    StoreSummary,
    SyncedRecord,
    WriteIntent,
    utcnow,
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

BUSY_TIMEOUT_MS = 5_000
# Autocommit, once per write open: only the first open of a store records its day.
_RECORD_CREATED_ON = "INSERT INTO store_meta (name, value) VALUES ('created_on', ?) ON CONFLICT (name) DO NOTHING"
INSERT_CHUNK = 500  # rows per INSERT: 7 parameters each stays far below SQLite's 32,766-variable limit


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class SqliteStore:
    """`Store` on one SQLite file. Create with `await SqliteStore.open(path)`."""

    def __init__(self, conn: aiosqlite.Connection, clock: Clock, *, read_only: bool = False,
                 path: Path | None = None) -> None:
        self._conn = conn
        self._clock = clock
        self._path = path  # for the file's size (status)
        self._lock = anyio.Lock()
        self._writes = WriteHealth()
        self.read_only = read_only
        self._leadership: Leadership | None = None  # this process's, once taken
        self._led = False  # taken once per start: not again after another process took it

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = utcnow, read_only: bool = False) -> SqliteStore:
        """Open, creating and migrating as needed; `read_only` (for `status` and `check`) creates and
        migrates nothing and refuses a missing file."""
        if read_only and not await anyio.Path(path).exists():
            raise StoreMissing(f"no state database at {path} yet: the daemon creates it on its first start")
        if not read_only:
            try:
                await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"cannot create the state directory {path.parent}: "
                                       f"{exc.strerror or exc} (create it, writable by the daemon's user, or set "
                                       "state_dir)") from exc
        with _translated():
            target = f"file:{path}?mode=ro" if read_only else str(path)
            conn = await aiosqlite.connect(target, isolation_level=None, uri=read_only)
            conn.row_factory = sqlite3.Row
            try:
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if read_only:
                    await _check_version(conn)
                else:
                    await _enable_wal(conn)
                    await conn.execute("PRAGMA synchronous = FULL")
                    await conn.execute("PRAGMA foreign_keys = ON")
                    await _migrate(conn)
                    await conn.execute(_RECORD_CREATED_ON, (clock().date().isoformat(),))
            except BaseException:
                await conn.close()
                raise
        return cls(conn, clock, read_only=read_only, path=path)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._conn.close()

    @asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            with anyio.CancelScope(shield=True), self._writes.noting(write and not self.read_only), _translated():
                await self._conn.execute("BEGIN IMMEDIATE" if write and not self.read_only else "BEGIN")
                try:
                    yield self._conn
                    await self._conn.execute("COMMIT")
                finally:
                    # Whatever failed (the body, or COMMIT itself on SQLITE_BUSY or a full disk), never leave a
                    # transaction open: every later call would fail with "cannot start a transaction".
                    if self._conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            await self._conn.execute("ROLLBACK")

    async def schema_version(self) -> int:
        async with self._tx(write=False) as conn:
            return await _user_version(conn)

    async def ping(self) -> bool:
        try:
            async with self._tx(write=False) as conn:
                await conn.execute("SELECT 1 FROM cursors LIMIT 1")
            if self._writes.failure is not None and not self.read_only:
                async with self._tx() as conn:
                    await conn.execute(WRITE_PROBE)
        except StoreError:
            return False
        return True

    async def created_on(self) -> date:
        async with self._tx(write=False) as conn:
            # A read-only open of a database the daemon has not migrated yet has no store_meta table.
            if await _fetchone(conn, "SELECT 1 FROM sqlite_master WHERE name = 'store_meta'", ()) is None:
                return self._clock().date()
            row = await _fetchone(conn, "SELECT value FROM store_meta WHERE name = 'created_on'", ())
        return date.fromisoformat(row["value"]) if row else self._clock().date()

    # --- inbox ----------------------------------------------------------------------------------

    async def add_events(
        self, events: Sequence[NewEvent], cursor: CursorUpdate | None = None
    ) -> list[bool]:
        now = _ts(self._clock())
        rows = [(e.source, e.key, e.type, _dumps(e.payload), now, now, now) for e in events]
        stored: set[str] = set()
        async with self._tx() as conn:
            # One statement per chunk, not one per event: each statement is a round trip to aiosqlite's
            # thread, and under a webhook burst those round trips, not the fsync, are what cost.
            for start in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[start:start + INSERT_CHUNK]
                values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                returned = await _fetchall(
                    conn,
                    f"""INSERT INTO inbox_events
                            (source, event_key, type, payload, next_attempt_at, received_at, updated_at)
                        VALUES {values}
                        ON CONFLICT (event_key) DO NOTHING
                        RETURNING event_key""",
                    [value for row in chunk for value in row],
                )
                stored.update(row[0] for row in returned)
            if cursor is not None:
                await _upsert_cursor(conn, cursor, now)
        inserted: list[bool] = []
        for event in events:
            # A key stored by this call counts as new once; a second copy in the same call is a duplicate.
            inserted.append(event.key in stored)
            stored.discard(event.key)
        return inserted

    async def claim_events(self, *, worker: str, limit: int, lease: timedelta,
                           mapping_version: int | None = None, epoch: int | None = None) -> list[Event]:
        now = self._clock()
        until = _ts(now + lease)
        async with self._tx() as conn:
            await _fence(conn, epoch)
            rows = await _fetchall(
                conn,
                """SELECT id FROM inbox_events
                   WHERE (status = 'received' AND next_attempt_at <= ?)
                      OR (status = 'claimed' AND (claimed_until <= ? OR coalesce(claim_epoch, 0) < ?))
                   ORDER BY next_attempt_at, id
                   LIMIT ?""",
                (_ts(now), _ts(now), epoch or 0, limit),
            )
            ids = [row["id"] for row in rows]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            await conn.execute(
                f"""UPDATE inbox_events
                    SET status = 'claimed', claimed_by = ?, claimed_until = ?, attempts = attempts + 1,
                        updated_at = ?, mapping_version = coalesce(mapping_version, ?), claim_epoch = ?
                    WHERE id IN ({marks})""",
                (worker, until, _ts(now), mapping_version, epoch, *ids),
            )
            claimed = await _fetchall(
                conn, f"SELECT * FROM inbox_events WHERE id IN ({marks}) ORDER BY next_attempt_at, id", ids
            )
        return [_event(row) for row in claimed]

    async def release_claims(self, worker: str, *, epoch: int | None = None) -> int:
        now = _ts(self._clock())
        async with self._tx() as conn:
            await _fence(conn, epoch)
            result = await conn.execute(
                """UPDATE inbox_events SET status = 'received', claimed_by = NULL, claimed_until = NULL,
                       next_attempt_at = ?, updated_at = ?
                   WHERE status = 'claimed' AND claimed_by = ?""",
                (now, now, worker),
            )
            return result.rowcount

    async def complete_event(self, event_id: int, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_event(conn, event_id, EventStatus.DONE, self._clock(), clear_error=True,
                              claimed_by=claimed_by)

    async def complete_events(self, event_ids: Sequence[int], *, claimed_by: str,
                              epoch: int | None = None) -> list[int]:
        if not event_ids:
            return []
        now = _ts(self._clock())
        async with self._tx() as conn:
            await _fence(conn, epoch)
            marks = ",".join("?" * len(event_ids))
            held = {row["id"] for row in await _fetchall(
                conn, f"SELECT id FROM inbox_events WHERE id IN ({marks}) AND status = 'claimed' AND claimed_by = ?",
                [*event_ids, claimed_by])}
            if held:
                check_event_move(EventStatus.CLAIMED, EventStatus.DONE)
                held_marks = ",".join("?" * len(held))
                await conn.execute(
                    f"""UPDATE inbox_events SET status = 'done', last_error = NULL, claimed_by = NULL,
                            claimed_until = NULL, updated_at = ? WHERE id IN ({held_marks})""",
                    [now, *sorted(held)])
        return [i for i in event_ids if i not in held]

    async def retry_event(self, event_id: int, *, error: str, next_attempt_at: datetime,
                          claimed_by: str | None = None, reset_attempts: bool = False,
                          refund_attempt: bool = False, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_event(conn, event_id, EventStatus.RECEIVED, self._clock(), error=error,
                              next_attempt_at=next_attempt_at, claimed_by=claimed_by, reset_attempts=reset_attempts,
                              refund_attempt=refund_attempt)

    async def dead_letter_event(self, event_id: int, letter: NewDeadLetter, *, claimed_by: str | None = None,
                                epoch: int | None = None) -> int:
        now = self._clock()
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_event(conn, event_id, EventStatus.DEAD, now, error=letter.error, claimed_by=claimed_by)
            # Dead is terminal until a person replays it: a later event about the same record (its own echo,
            # say the sync status "Error" written there) joins the open letter instead of making another.
            if letter.record_ref is not None:
                open_row = await _fetchone(
                    conn, "SELECT id FROM dead_letters WHERE record_ref = ? AND replayed_at IS NULL ORDER BY id "
                          "LIMIT 1", (letter.record_ref,))
                if open_row is not None:
                    return int(open_row["id"])
            result = await conn.execute(
                """INSERT INTO dead_letters
                       (event_id, system, operation, error, error_code, status, record_ref, request, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    event_id, letter.system, letter.operation, letter.error, letter.error_code, letter.status,
                    letter.record_ref, _dumps(letter.request), _ts(now),
                ),
            )
            return _lastrowid(result)

    async def conflict_event(self, event_id: int, conflict: NewConflict, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> int:
        now = self._clock()
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_event(conn, event_id, EventStatus.CONFLICT, now, error=conflict.reason,
                              claimed_by=claimed_by)
            # One open conflict per record and flow: a later event about it joins the open one, whose values
            # become the latest seen, and waits for the same decision.
            open_row = await _fetchone(
                conn, "SELECT id FROM conflicts WHERE status = 'open' AND flow = ? AND record_ref = ? LIMIT 1",
                (conflict.flow, conflict.record_ref))
            if open_row is not None:
                conflict_id = int(open_row["id"])
                await conn.execute(
                    """UPDATE conflicts SET reason = ?, nue_values = ?, salesforce_values = ?, synced_values = ?
                       WHERE id = ?""",
                    (conflict.reason, _dumps(conflict.nue_values), _dumps(conflict.salesforce_values),
                     _dumps(conflict.synced_values), conflict_id))
            else:
                conflict_id = await _insert_conflict(conn, event_id, conflict, now)
            await conn.execute("UPDATE inbox_events SET conflict_id = ? WHERE id = ?", (conflict_id, event_id))
            return conflict_id

    async def get_event(self, event_id: int) -> Event | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM inbox_events WHERE id = ?", (event_id,))
        return _event(row) if row else None

    async def search_events(self, text: str, *, limit: int = 50) -> list[Event]:
        pattern = _contains(text)
        async with self._tx(write=False) as conn:
            rows = await _fetchall(
                conn, """SELECT * FROM inbox_events WHERE event_key LIKE ? ESCAPE '\\' OR payload LIKE ? ESCAPE '\\'
                         ORDER BY id DESC LIMIT ?""", (pattern, pattern, limit))
        return [_event(row) for row in rows]

    async def finished_per_minute(self, since: datetime) -> list[MinuteCount]:
        async with self._tx(write=False) as conn:
            rows = await _fetchall(
                conn, """SELECT substr(updated_at, 1, 16) AS minute, count(*) AS n FROM inbox_events
                         WHERE status = 'done' AND updated_at >= ? GROUP BY minute ORDER BY minute""",
                (_ts(since),))
        return [MinuteCount(minute=datetime.fromisoformat(row["minute"] + ":00+00:00"), count=row["n"])
                for row in rows]

    async def find_event(self, key: str) -> Event | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM inbox_events WHERE event_key = ?", (key,))
        return _event(row) if row else None

    async def list_events(self, *, status: EventStatus | None = None, limit: int = 50) -> list[Event]:
        async with self._tx(write=False) as conn:
            if status is None:
                rows = await _fetchall(conn, "SELECT * FROM inbox_events ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = await _fetchall(
                    conn,
                    "SELECT * FROM inbox_events WHERE status = ? ORDER BY id DESC LIMIT ?",
                    (status.value, limit),
                )
        return [_event(row) for row in rows]

    async def queue_depths(self) -> dict[EventStatus, int]:
        async with self._tx(write=False) as conn:
            return await _queue_depths(conn)

    # --- cursors --------------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> Cursor | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM cursors WHERE name = ?", (name,))
        return _cursor(row) if row else None

    async def set_cursor(self, update: CursorUpdate) -> None:
        async with self._tx() as conn:
            await _upsert_cursor(conn, update, _ts(self._clock()))

    async def list_cursors(self) -> list[Cursor]:
        async with self._tx(write=False) as conn:
            return [_cursor(row) for row in await _fetchall(conn, "SELECT * FROM cursors ORDER BY name", ())]

    # --- id links -------------------------------------------------------------------------------

    async def put_link(self, link: Link) -> None:
        async with self._tx() as conn:
            rows = await _fetchall(
                conn,
                """SELECT nue_id, salesforce_id FROM id_links
                   WHERE object_type = ? AND (nue_id = ? OR salesforce_id = ?)""",
                (link.object_type, link.nue_id, link.salesforce_id),
            )
            for row in rows:
                if (row["nue_id"], row["salesforce_id"]) != (link.nue_id, link.salesforce_id):
                    raise LinkConflict(
                        f"{link.object_type}: Nue {row['nue_id']} is linked to Salesforce {row['salesforce_id']}, "
                        f"not the pair Nue {link.nue_id} / Salesforce {link.salesforce_id}"
                    )
            if not rows:
                await conn.execute(
                    "INSERT INTO id_links (object_type, nue_id, salesforce_id, created_at) VALUES (?, ?, ?, ?)",
                    (link.object_type, link.nue_id, link.salesforce_id, _ts(self._clock())),
                )

    async def find_link(
        self, object_type: str, *, nue_id: str | None = None, salesforce_id: str | None = None
    ) -> Link | None:
        if (nue_id is None) == (salesforce_id is None):
            raise ValueError("find_link takes exactly one of nue_id and salesforce_id")
        column, value = ("nue_id", nue_id) if nue_id is not None else ("salesforce_id", salesforce_id)
        async with self._tx(write=False) as conn:
            row = await _fetchone(
                conn, f"SELECT * FROM id_links WHERE object_type = ? AND {column} = ?", (object_type, value)
            )
        if row is None:
            return None
        return to_record.link(row)

    async def links_of(self, record_id: str) -> list[Link]:
        async with self._tx(write=False) as conn:
            rows = await _fetchall(
                conn, "SELECT * FROM id_links WHERE nue_id = ? OR salesforce_id = ? ORDER BY object_type",
                (record_id, record_id))
        return [to_record.link(r) for r in rows]

    # --- last synced values ---------------------------------------------------------------------

    async def get_synced(self, record_refs: Sequence[str]) -> dict[str, SyncedRecord]:
        values: dict[str, dict[str, object]] = {}
        declined: dict[str, dict[str, object]] = {}
        refs = list(dict.fromkeys(record_refs))
        async with self._tx(write=False) as conn:
            for start in range(0, len(refs), INSERT_CHUNK):
                chunk = refs[start:start + INSERT_CHUNK]
                rows = await _fetchall(
                    conn, f"SELECT * FROM synced_values WHERE record_ref IN ({', '.join('?' * len(chunk))})", chunk)
                for row in rows:
                    values.setdefault(row["record_ref"], {})[row["field"]] = _loads(row["value"])
                    if row["declined"] is not None:
                        declined.setdefault(row["record_ref"], {})[row["field"]] = _loads(row["declined"])
        return {ref: SyncedRecord(values=fields, declined=declined.get(ref, {})) for ref, fields in values.items()}

    # --- idempotency ----------------------------------------------------------------------------

    async def record_intent(self, intent: NewIntent, *, epoch: int | None = None) -> WriteIntent:
        now = _ts(self._clock())
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await conn.execute(
                """INSERT INTO write_intents
                       (idem_key, system, operation, target, request, event_id, status, created_at, updated_at,
                        epoch)
                   VALUES (?, ?, ?, ?, ?, ?, 'recorded', ?, ?, ?)
                   ON CONFLICT (idem_key) DO NOTHING""",
                (
                    intent.key, intent.system, intent.operation, intent.target, _dumps(intent.request),
                    intent.event_id, now, now, epoch,
                ),
            )
            row = await _fetchone(conn, "SELECT * FROM write_intents WHERE idem_key = ?", (intent.key,))
        assert row is not None  # inserted or already there, inside this transaction
        return _intent(row)

    async def begin_send(self, keys: Sequence[str], *, epoch: int | None = None) -> None:
        if not keys:
            return
        unique = sorted(set(keys))
        marks = ",".join("?" * len(unique))
        async with self._tx() as conn:
            await _fence(conn, epoch)
            rows = await _fetchall(conn, f"SELECT idem_key, status FROM write_intents WHERE idem_key IN ({marks})",
                                   unique)
            _check_sendable(unique, {row["idem_key"]: IntentStatus(row["status"]) for row in rows})
            await conn.execute(
                f"""UPDATE write_intents SET status = 'sent', ever_sent = 1, error = NULL, updated_at = ?, epoch = ?
                    WHERE idem_key IN ({marks})""",
                [_ts(self._clock()), epoch, *unique])

    async def confirm_intent(self, key: str, result: dict[str, object], *, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_intent(conn, key, IntentStatus.CONFIRMED, _ts(self._clock()), result=result)

    async def fail_intent(self, key: str, error: str, *, settle_for: timedelta | None = None,
                          epoch: int | None = None) -> None:
        now = self._clock()
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_intent(conn, key, IntentStatus.FAILED, _ts(now), error=error,
                               settle_after=_ts(now + settle_for) if settle_for is not None else None)

    async def reopen_intent(self, key: str, *, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _fence(conn, epoch)
            await _move_intent(conn, key, IntentStatus.RECORDED, _ts(self._clock()))

    async def get_intent(self, key: str) -> WriteIntent | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM write_intents WHERE idem_key = ?", (key,))
        return _intent(row) if row else None

    async def list_intents(self, *, event_ids: Sequence[int] = (), mentioning: str | None = None,
                           limit: int = 100) -> list[WriteIntent]:
        conditions: list[str] = []
        params: list[Any] = []
        if event_ids:
            conditions.append(f"event_id IN ({', '.join('?' * len(event_ids))})")
            params.extend(event_ids)
        if mentioning:
            conditions.append(_any_contains("target", "request", "idem_key"))
            params.extend([_contains(mentioning)] * 3)
        if not conditions:
            return []
        async with self._tx(write=False) as conn:
            rows = await _fetchall(conn, f"""SELECT * FROM write_intents WHERE {' OR '.join(conditions)}
                                             ORDER BY created_at DESC LIMIT ?""", [*params, limit])
        return [_intent(row) for row in rows]

    # --- ordering -------------------------------------------------------------------------------

    async def get_entity_version(self, entity: str) -> str | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT version FROM entity_versions WHERE entity = ?", (entity,))
        return str(row["version"]) if row else None

    async def raise_entity_version(self, entity: str, version: str) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                """INSERT INTO entity_versions (entity, version, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT (entity) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at
                   WHERE excluded.version > entity_versions.version""",
                (entity, version, _ts(self._clock())),
            )
            return result.rowcount == 1

    # --- conflicts ------------------------------------------------------------------------------

    async def list_conflicts(
        self, *, status: ConflictStatus | None = ConflictStatus.OPEN, limit: int = 50
    ) -> list[ConflictRecord]:
        async with self._tx(write=False) as conn:
            if status is None:
                rows = await _fetchall(conn, "SELECT * FROM conflicts ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = await _fetchall(
                    conn, "SELECT * FROM conflicts WHERE status = ? ORDER BY id DESC LIMIT ?", (status.value, limit)
                )
        return [_conflict(row) for row in rows]

    async def get_conflict(self, conflict_id: int) -> ConflictRecord | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM conflicts WHERE id = ?", (conflict_id,))
        return _conflict(row) if row else None

    async def resolve_conflict(
        self, conflict_id: int, *, resolution: Resolution, actor: str, comment: str | None = None
    ) -> ConflictRecord:
        now = self._clock()
        async with self._tx() as conn:
            row = await _fetchone(conn, "SELECT * FROM conflicts WHERE id = ?", (conflict_id,))
            if row is None:
                raise RecordNotFound(f"no conflict {conflict_id}")
            if row["status"] != ConflictStatus.OPEN.value:
                raise StoreError(f"conflict {conflict_id} is already resolved ({row['resolution']})")
            await conn.execute(
                """UPDATE conflicts SET status = 'resolved', resolution = ?, resolved_by = ?, comment = ?,
                       resolved_at = ? WHERE id = ?""",
                (resolution.value, actor, comment, _ts(now), conflict_id),
            )
            shown = _loads(row["salesforce_values"]) or {}
            if resolution is not Resolution.SKIP and shown and str(row["record_ref"]).startswith("salesforce:"):
                declined = _loads(row["nue_values"]) if resolution is Resolution.TAKE_SALESFORCE else None
                await _remember_synced(conn, row["record_ref"], shown, now, declined=declined or {})
            waiting = await _fetchall(
                conn, "SELECT id FROM inbox_events WHERE status = 'conflict' AND (conflict_id = ? OR id = ?)",
                (conflict_id, row["event_id"]))
            # Every event waiting on this conflict takes the same decision.
            target = EventStatus.RECEIVED if resolution is Resolution.TAKE_NUE else EventStatus.DONE
            for event_row in waiting:
                await _move_event(conn, event_row["id"], target, now, reset_attempts=True, next_attempt_at=now)
            updated = await _fetchone(conn, "SELECT * FROM conflicts WHERE id = ?", (conflict_id,))
        assert updated is not None
        return _conflict(updated)

    # --- dead letters ---------------------------------------------------------------------------

    async def list_dead_letters(self, *, include_replayed: bool = False, limit: int = 50) -> list[DeadLetter]:
        where = "" if include_replayed else "WHERE replayed_at IS NULL"
        async with self._tx(write=False) as conn:
            rows = await _fetchall(conn, f"SELECT * FROM dead_letters {where} ORDER BY id DESC LIMIT ?", (limit,))
        return [_dead_letter(row) for row in rows]

    async def open_dead_letter(self, record_ref: str) -> DeadLetter | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(
                conn, "SELECT * FROM dead_letters WHERE record_ref = ? AND replayed_at IS NULL ORDER BY id LIMIT 1",
                (record_ref,))
        return _dead_letter(row) if row else None

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        async with self._tx(write=False) as conn:
            row = await _fetchone(conn, "SELECT * FROM dead_letters WHERE id = ?", (letter_id,))
        return _dead_letter(row) if row else None

    async def replay_dead_letter(self, letter_id: int, *, remap: bool = False) -> Event:
        now = self._clock()
        async with self._tx() as conn:
            row = await _fetchone(conn, "SELECT * FROM dead_letters WHERE id = ?", (letter_id,))
            if row is None:
                raise RecordNotFound(f"no dead letter {letter_id}")
            if row["replayed_at"] is not None:
                raise StoreError(f"dead letter {letter_id} was already replayed at {row['replayed_at']}")
            if row["event_id"] is None:
                raise StoreError(f"dead letter {letter_id} has no inbox event to replay")
            await _move_event(
                conn, row["event_id"], EventStatus.RECEIVED, now, reset_attempts=True, next_attempt_at=now
            )
            await conn.execute("UPDATE dead_letters SET replayed_at = ? WHERE id = ?", (_ts(now), letter_id))
            if remap:
                await conn.execute("UPDATE inbox_events SET mapping_version = NULL WHERE id = ?", (row["event_id"],))
            event_row = await _fetchone(conn, "SELECT * FROM inbox_events WHERE id = ?", (row["event_id"],))
        assert event_row is not None
        return _event(event_row)

    # --- mapping versions -----------------------------------------------------------------------

    async def register_mapping(self, text: str, content_hash: str) -> MappingVersion:
        async with self._tx() as conn:
            await conn.execute(
                """INSERT INTO mapping_versions (content_hash, text, created_at) VALUES (?, ?, ?)
                   ON CONFLICT (content_hash) DO NOTHING""", (content_hash, text, _ts(self._clock())))
            row = await _fetchone(conn, "SELECT * FROM mapping_versions WHERE content_hash = ?", (content_hash,))
        assert row is not None  # inserted or already there, inside this transaction
        return _mapping(row)

    async def find_mapping(self, content_hash: str) -> MappingVersion | None:
        rows = await self._mapping_rows("WHERE content_hash = ?", (content_hash,))
        return _mapping(rows[0]) if rows else None

    async def get_mapping(self, version: int) -> MappingVersion | None:
        rows = await self._mapping_rows("WHERE version = ?", (version,))
        return _mapping(rows[0]) if rows else None

    async def list_mappings(self) -> list[MappingVersion]:
        return [_mapping(row) for row in await self._mapping_rows("ORDER BY version", ())]

    async def _mapping_rows(self, where: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        async with self._tx(write=False) as conn:
            # A read-only open of a database the daemon has not migrated yet has no versions (and no table).
            if await _fetchone(conn, "SELECT 1 FROM sqlite_master WHERE name = 'mapping_versions'", ()) is None:
                return []
            return await _fetchall(conn, f"SELECT * FROM mapping_versions {where}", params)

    # --- audit ----------------------------------------------------------------------------------

    async def record_write(self, entry: NewAuditEntry) -> int:
        async with self._tx() as conn:
            result = await conn.execute(
                """INSERT INTO audit_log (at, system, operation, target, outcome, idem_key, event_id,
                       record_ref, status, detail, mapping_version)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    _ts(self._clock()), entry.system, entry.operation, entry.target, entry.outcome,
                    entry.idem_key, entry.event_id, entry.record_ref, entry.status, _dumps(entry.detail),
                    entry.mapping_version,
                ),
            )
            if entry.outcome == "ok" and entry.record_ref and entry.synced_fields:
                await _remember_synced(conn, entry.record_ref, entry.synced_fields, self._clock())
            return _lastrowid(result)

    async def list_writes(self, *, record_ref: str | None = None, event_id: int | None = None,
                          mentioning: str | None = None, limit: int = 50) -> list[AuditEntry]:
        conditions: list[str] = []
        params: list[Any] = []
        if mentioning:
            conditions.append(_any_contains("record_ref", "target", "detail"))
            params.extend([_contains(mentioning)] * 3)
        if record_ref is not None:
            conditions.append("record_ref = ?")
            params.append(record_ref)
        if event_id is not None:
            conditions.append("event_id = ?")
            params.append(event_id)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._tx(write=False) as conn:
            rows = await _fetchall(conn, f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_audit(row) for row in rows]

    async def backup(self, destination: Path) -> None:
        """A consistent copy of the whole database while the daemon runs (SQLite's online backup API)."""
        await anyio.Path(destination.parent).mkdir(parents=True, exist_ok=True)
        async with self._lock:
            with _translated():
                target = await aiosqlite.connect(str(destination))
                try:
                    await self._conn.backup(target)
                finally:
                    await target.close()

    # --- replicas -------------------------------------------------------------------------------

    async def heartbeat(self, replica: ReplicaBeat) -> None:
        async with self._tx() as conn:
            await conn.execute(
                """INSERT INTO replicas (replica_id, host, pid, started_at, last_heartbeat, is_leader)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (replica_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
                       is_leader = excluded.is_leader""",
                (replica.replica_id, replica.host, replica.pid, _ts(replica.started_at), _ts(self._clock()),
                 int(replica.is_leader)),
            )
            await conn.execute("DELETE FROM replicas WHERE last_heartbeat < ?",
                               (_ts(self._clock() - REPLICA_FORGOTTEN_AFTER),))

    async def try_lead(self, replica_id: str) -> Leadership | None:
        """One box, one daemon: the first call of this process takes the epoch; later calls keep it while the file
        still names it (a second daemon on the same file takes it for good, and this one stays on standby)."""
        if self.read_only or (self._led and self._leadership is None):
            return None
        if self._leadership is None:
            now = self._clock()
            async with self._tx() as conn:
                await conn.execute("UPDATE leadership SET epoch = epoch + 1, replica_id = ?, since = ?",
                                   (replica_id, _ts(now)))
                row = await _fetchone(conn, "SELECT * FROM leadership", ())
            self._leadership, self._led = to_record.leadership(row, _dt), True
        elif (current := await self.leadership()) is None or current.epoch != self._leadership.epoch:
            self._leadership = None
        return self._leadership

    async def leadership(self) -> Leadership | None:
        async with self._tx(write=False) as conn:
            # A read-only open of a database the daemon has not migrated yet has no leadership table.
            if await _fetchone(conn, "SELECT 1 FROM sqlite_master WHERE name = 'leadership'", ()) is None:
                return None
            row = await _fetchone(conn, "SELECT * FROM leadership", ())
        return to_record.leadership(row, _dt)

    async def check_epoch(self, epoch: int) -> None:
        async with self._tx(write=False) as conn:
            await _fence(conn, epoch)

    async def list_replicas(self) -> list[Replica]:
        async with self._tx(write=False) as conn:
            # A read-only open of a database the daemon has not migrated yet has no replicas table.
            if await _fetchone(conn, "SELECT 1 FROM sqlite_master WHERE name = 'replicas'", ()) is None:
                return []
            rows = await _fetchall(conn, "SELECT * FROM replicas ORDER BY replica_id", ())
        return [to_record.replica(row, _dt) for row in rows]

    # --- status ---------------------------------------------------------------------------------

    async def summary(self) -> StoreSummary:
        async with self._tx(write=False) as conn:
            depths = await _queue_depths(conn)
            cursors = tuple(_cursor(row) for row in await _fetchall(conn, "SELECT * FROM cursors ORDER BY name", ()))
            conflicts = await _fetchone(conn, "SELECT count(*) AS n FROM conflicts WHERE status = 'open'", ())
            letters = await _fetchone(conn, "SELECT count(*) AS n FROM dead_letters WHERE replayed_at IS NULL", ())
            oldest = await _fetchone(
                conn, "SELECT min(next_attempt_at) AS at FROM inbox_events WHERE status = 'received'", ()
            )
        return StoreSummary(
            queue_depths=depths,
            cursors=cursors,
            open_conflicts=conflicts["n"] if conflicts else 0,
            dead_letters=letters["n"] if letters else 0,
            oldest_due_at=_dt(oldest["at"]) if oldest else None,
        )

    # --- retention ------------------------------------------------------------------------------

    async def prune(self, step: PruneStep) -> PruneStep:
        if step.target is None:
            return step
        async with self._tx(write=not step.dry_run) as conn:
            read, pruned, last = await _PRUNERS[step.target](conn, step)
        return step.after_batch(read=read, pruned=pruned, last=last)

    async def footprint(self) -> StoreFootprint:
        async with self._tx(write=False) as conn:
            page_size = await _fetchone(conn, "PRAGMA page_size", ())
            free_pages = await _fetchone(conn, "PRAGMA freelist_count", ())
            # The first id is the first event stored: no index on received_at is needed.
            oldest_event = await _fetchone(conn, "SELECT received_at FROM inbox_events ORDER BY id LIMIT 1", ())
            oldest_audit = await _fetchone(conn, "SELECT min(at) AS at FROM audit_log", ())
            pruned_before = await _meta(conn, PAYLOADS_PRUNED_BEFORE)
        size = 0
        if self._path is not None:
            for part in (self._path, self._path.with_name(self._path.name + "-wal")):
                with contextlib.suppress(FileNotFoundError):
                    size += (await anyio.Path(part).stat()).st_size
        return StoreFootprint(
            size_bytes=size,
            free_bytes=int(free_pages[0]) * int(page_size[0]) if free_pages and page_size else None,
            oldest_event_at=_dt(oldest_event["received_at"]) if oldest_event else None,
            oldest_audit_at=_dt(oldest_audit["at"]) if oldest_audit else None,
            payloads_pruned_before=_dt(pruned_before),
        )

    async def reclaim_space(self) -> None:
        """VACUUM: the file is written again without its free pages (it needs about its own size free on the disk
        meanwhile, and holds the write lock throughout: the daemon's writes wait); then the WAL, which carried the
        copy, is emptied."""
        if self.read_only:
            raise StoreError("the store is open read-only: it cannot be vacuumed")
        async with self._lock:
            with anyio.CancelScope(shield=True), self._writes.noting(True), _translated():
                await self._conn.execute("VACUUM")
                await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --- retention ------------------------------------------------------------------------------------

PAYLOADS_PRUNED_BEFORE = "payloads_pruned_before"  # store_meta: where the last complete pass over events ended

PruneBatch = tuple[int, int, Position | None]  # rows read, rows pruned, the last row read


async def _prune_payloads(conn: aiosqlite.Connection, step: PruneStep) -> PruneBatch:
    """Done events finished before the cutoff, in finishing order: each payload still kept becomes the tombstone.
    The event's row, key and times stay (retention.py says why)."""
    start = step.after or pass_start(Target.EVENT_PAYLOADS, _dt(await _meta(conn, PAYLOADS_PRUNED_BEFORE)))
    # Whole rows: those pruned are written again from them (a second query by 250 ids would not be planned by id).
    rows = await _fetchall(
        conn, """SELECT * FROM inbox_events
                 WHERE status = 'done' AND updated_at < ? AND updated_at >= ? AND (updated_at > ? OR id > ?)
                 ORDER BY updated_at, id LIMIT ?""",
        (_ts(step.cutoff), _ts(start.at), _ts(start.at), start.key, step.batch))
    going = [row for row in rows if row["payload"] != TOMBSTONE_TEXT and payload_may_go(EventStatus(row["status"]))]
    if going and not step.dry_run:
        await _rewrite_with_tombstones(conn, going)
    if len(rows) < step.batch and not step.dry_run:
        # The pass is complete: every event finished before the cutoff has lost its payload.
        done_before = _dt(await _meta(conn, PAYLOADS_PRUNED_BEFORE))
        await _set_meta(conn, PAYLOADS_PRUNED_BEFORE, _ts(max(step.cutoff, done_before or step.cutoff)))
    return len(rows), len(going), Position(_required_dt(rows[-1]["updated_at"]), rows[-1]["id"]) if rows else None


async def _rewrite_with_tombstones(conn: aiosqlite.Connection, rows: Sequence[sqlite3.Row]) -> None:
    """The events written again with the tombstone for payload, ids and all else unchanged. Not an UPDATE: SQLite
    rebalances a page when rows are deleted from it, never when a row shrinks, so updated rows would leave every
    page as large as it was, its freed bytes unusable by new rows (which go to the end of the table). Deleted and
    inserted again, they pack into fewer pages and free the rest for new rows: the file stops growing by them."""
    # Intents, conflicts and dead letters name these ids: checked at commit, when the rows are back.
    await conn.execute("PRAGMA defer_foreign_keys = ON")
    await conn.execute(f"DELETE FROM inbox_events WHERE id IN ({', '.join('?' * len(rows))})",
                       [row["id"] for row in rows])
    columns = list(rows[0].keys())
    await conn.executemany(
        f"INSERT INTO inbox_events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [[TOMBSTONE_TEXT if column == "payload" else row[column] for column in columns] for row in rows])


async def _prune_intents(conn: aiosqlite.Connection, step: PruneStep) -> PruneBatch:
    """Settled intents last changed before the cutoff, oldest first, read through the index that leaves out the
    write kinds always kept; those the rules let go are deleted."""
    start = step.after or pass_start(Target.WRITE_INTENTS, None)
    rows = await _fetchall(
        conn, f"""SELECT i.idem_key, i.status, i.operation, i.updated_at, e.status AS event_status
                  FROM write_intents AS i LEFT JOIN inbox_events AS e ON e.id = i.event_id
                  WHERE i.operation NOT IN {KEPT_OPERATIONS_SQL} AND i.updated_at < ?
                    AND i.updated_at >= ? AND (i.updated_at > ? OR i.idem_key > ?)
                  ORDER BY i.updated_at, i.idem_key LIMIT ?""",
        (_ts(step.cutoff), _ts(start.at), _ts(start.at), start.key, step.batch))
    keys = [row["idem_key"] for row in rows if intent_may_go(
        IntentStatus(row["status"]), row["operation"],
        EventStatus(row["event_status"]) if row["event_status"] is not None else None)]
    pruned = len(keys)
    if keys and not step.dry_run:
        result = await conn.execute(
            f"""DELETE FROM write_intents WHERE idem_key IN ({', '.join('?' * len(keys))})
                AND status IN ('confirmed', 'failed') AND updated_at < ?""", (*keys, _ts(step.cutoff)))
        pruned = result.rowcount
    return len(rows), pruned, Position(_required_dt(rows[-1]["updated_at"]), rows[-1]["idem_key"]) if rows else None


async def _prune_audit(conn: aiosqlite.Connection, step: PruneStep) -> PruneBatch:
    """Audit entries recorded before the cutoff, oldest first: all of them go."""
    start = step.after or pass_start(Target.AUDIT_ENTRIES, None)
    rows = await _fetchall(
        conn, """SELECT id, at FROM audit_log WHERE at < ? AND at >= ? AND (at > ? OR id > ?)
                 ORDER BY at, id LIMIT ?""",
        (_ts(step.cutoff), _ts(start.at), _ts(start.at), start.key, step.batch))
    pruned = len(rows)
    if rows and not step.dry_run:
        ids = [row["id"] for row in rows]
        result = await conn.execute(f"DELETE FROM audit_log WHERE id IN ({', '.join('?' * len(ids))})", ids)
        pruned = result.rowcount
    return len(rows), pruned, Position(_required_dt(rows[-1]["at"]), rows[-1]["id"]) if rows else None


_PRUNERS: dict[Target, Callable[[aiosqlite.Connection, PruneStep], Awaitable[PruneBatch]]] = {
    Target.EVENT_PAYLOADS: _prune_payloads, Target.WRITE_INTENTS: _prune_intents, Target.AUDIT_ENTRIES: _prune_audit}


async def _meta(conn: aiosqlite.Connection, name: str) -> str | None:
    # A read-only open of a database the daemon has not migrated yet has no store_meta table.
    if await _fetchone(conn, "SELECT 1 FROM sqlite_master WHERE name = 'store_meta'", ()) is None:
        return None
    row = await _fetchone(conn, "SELECT value FROM store_meta WHERE name = ?", (name,))
    return str(row["value"]) if row else None


async def _set_meta(conn: aiosqlite.Connection, name: str, value: str) -> None:
    await conn.execute("""INSERT INTO store_meta (name, value) VALUES (?, ?)
                          ON CONFLICT (name) DO UPDATE SET value = excluded.value""", (name, value))


def _required_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- migrations -------------------------------------------------------------------------------------


async def _user_version(conn: aiosqlite.Connection) -> int:
    row = await _fetchone(conn, "PRAGMA user_version", ())
    return int(row[0]) if row else 0


async def _enable_wal(conn: aiosqlite.Connection) -> None:
    """Switch to WAL. The switch needs the file to itself and does not wait on the busy timeout, so while
    another process opens the same new file it is retried for a while instead of failing at once."""
    deadline = anyio.current_time() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or anyio.current_time() > deadline:
                raise
            await anyio.sleep(0.05)


async def _check_version(conn: aiosqlite.Connection) -> int:
    current = await _user_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the state database is at schema version {current}, newer than this revdaemon "
            f"(which knows up to {SCHEMA_VERSION}); run the newer version or restore a backup"
        )
    return current


async def _migrate(conn: aiosqlite.Connection) -> None:
    await _check_version(conn)
    while True:
        # The version is read again under the write lock: two processes opening a new file at once must
        # not both apply the same migration.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            current = await _check_version(conn)
            if current >= SCHEMA_VERSION:
                await conn.execute("COMMIT")
                return
            for statement in _statements(MIGRATIONS[current].sqlite or ""):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {current + 1}")
            await conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """sqlite3's errors become the store's own, so nothing above store/ knows the backend."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreBusy(f"the state database stayed locked by another process: {exc}") from exc
        raise StoreUnavailable(f"the state database failed: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"the state database is unusable: {exc}") from exc


def _statements(script: str) -> list[str]:
    # Migrations hold no string literals with semicolons, so a split on ';' is exact here.
    return [part.strip() for part in script.split(";") if part.strip()]


# --- small helpers ----------------------------------------------------------------------------------


def _any_contains(*columns: str) -> str:
    return "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns) + ")"


async def _remember_synced(conn: aiosqlite.Connection, record_ref: str, fields: Mapping[str, Any],
                           now: datetime, *, declined: Mapping[str, Any] | None = None) -> None:
    """A write or a person's decision sets the field's baseline; a declined Nue value is kept only with the
    decision that declined it (a later write clears it)."""
    declined = declined or {}
    await conn.executemany(
        """INSERT INTO synced_values (record_ref, field, value, declined, updated_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (record_ref, field) DO UPDATE SET value = excluded.value, declined = excluded.declined,
               updated_at = excluded.updated_at""",
        [(record_ref, name, _dumps(value), _dumps(declined[name]) if name in declined else None, _ts(now))
         for name, value in fields.items()])


async def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    async with conn.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _fetchone(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
    async with conn.execute(sql, params) as cursor:
        row: sqlite3.Row | None = await cursor.fetchone()
        return row


def _lastrowid(cursor: aiosqlite.Cursor) -> int:
    if cursor.lastrowid is None:
        raise StoreError("insert returned no row id")
    return cursor.lastrowid


async def _queue_depths(conn: aiosqlite.Connection) -> dict[EventStatus, int]:
    rows = await _fetchall(conn, "SELECT status, count(*) AS n FROM inbox_events GROUP BY status", ())
    depths = dict.fromkeys(EventStatus, 0)
    for row in rows:
        depths[EventStatus(row["status"])] = row["n"]
    return depths


async def _upsert_cursor(conn: aiosqlite.Connection, update: CursorUpdate, now: str) -> None:
    await conn.execute(
        """INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
        (update.name, update.value, now),
    )


_REFUND = ", attempts = MAX(attempts - 1, 0)"  # the claim counted an attempt that was no try


async def _move_event(
    conn: aiosqlite.Connection,
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
    row = await _fetchone(
        conn, "SELECT status, last_error, next_attempt_at, claimed_by FROM inbox_events WHERE id = ?", (event_id,)
    )
    if row is None:
        raise RecordNotFound(f"no inbox event {event_id}")
    if claimed_by is not None and (row["status"] != EventStatus.CLAIMED.value or row["claimed_by"] != claimed_by):
        raise ClaimLost(f"inbox event {event_id} is no longer claimed by {claimed_by} "
                        f"(now {row['status']}, {row['claimed_by'] or 'unclaimed'})")
    check_event_move(EventStatus(row["status"]), target)
    last_error = None if clear_error else (error if error is not None else row["last_error"])
    due = _ts(next_attempt_at) if next_attempt_at is not None else row["next_attempt_at"]
    attempts = ", attempts = 0" if reset_attempts else (_REFUND if refund_attempt else "")
    await conn.execute(
        f"""UPDATE inbox_events
            SET status = ?, last_error = ?, next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL,
                updated_at = ?{attempts}
            WHERE id = ?""",
        (target.value, last_error, due, _ts(now), event_id),
    )


async def _fence(conn: aiosqlite.Connection, epoch: int | None) -> None:
    """Inside the caller's transaction (BEGIN IMMEDIATE: no other process writes until it ends): refuse the whole
    change unless `epoch` is the current leadership epoch. None: a caller outside the replicas' work."""
    if epoch is None:
        return
    row = await _fetchone(conn, "SELECT * FROM leadership", ())
    current = int(row["epoch"]) if row is not None else 0
    if current != epoch:
        raise Fenced(_fenced_message(epoch, row))


def _fenced_message(epoch: int, row: sqlite3.Row | None) -> str:
    who = f"{row['replica_id']} leads since {row['since']}" if row is not None and row["replica_id"] else "none leads"
    return (f"leadership epoch {epoch} is over: it is {row['epoch'] if row is not None else 0} now ({who}); "
            "nothing was changed")


def _check_sendable(keys: Sequence[str], statuses: Mapping[str, IntentStatus]) -> None:
    for key in keys:
        if key not in statuses:
            raise RecordNotFound(f"no write intent {key!r}")
        check_intent_move(statuses[key], IntentStatus.SENT)


async def _move_intent(
    conn: aiosqlite.Connection,
    key: str,
    target: IntentStatus,
    now: str,
    *,
    result: dict[str, object] | None = None,
    error: str | None = None,
    settle_after: str | None = None,
) -> None:
    row = await _fetchone(conn, "SELECT status FROM write_intents WHERE idem_key = ?", (key,))
    if row is None:
        raise RecordNotFound(f"no write intent {key!r}")
    check_intent_move(IntentStatus(row["status"]), target)
    settled = target in (IntentStatus.CONFIRMED, IntentStatus.FAILED)
    # `settle_after` is set by a failure of unknown outcome, cleared by any other settling, and kept through a
    # reopen (the executor looks up before sending again). `ever_sent` is begin_send's.
    await conn.execute(
        """UPDATE write_intents SET status = ?, result = coalesce(?, result), error = ?, updated_at = ?,
               settle_after = CASE WHEN ? THEN ? ELSE settle_after END
           WHERE idem_key = ?""",
        (target.value, _dumps(result) if result is not None else None, error, now, settled, settle_after, key),
    )


async def _insert_conflict(
    conn: aiosqlite.Connection, event_id: int | None, conflict: NewConflict, now: datetime
) -> int:
    result = await conn.execute(
        """INSERT INTO conflicts (event_id, flow, record_ref, reason, nue_values, salesforce_values,
               synced_values, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            event_id, conflict.flow, conflict.record_ref, conflict.reason, _dumps(conflict.nue_values),
            _dumps(conflict.salesforce_values), _dumps(conflict.synced_values), _ts(now),
        ),
    )
    return _lastrowid(result)


# --- row -> record ----------------------------------------------------------------------------------


def _event(row: sqlite3.Row) -> Event:
    return to_record.event(row, _dt)


def _mapping(row: sqlite3.Row) -> MappingVersion:
    return to_record.mapping(row, _dt)


def _cursor(row: sqlite3.Row) -> Cursor:
    return to_record.cursor(row, _dt)


def _intent(row: sqlite3.Row) -> WriteIntent:
    return to_record.intent(row, _dt)


def _conflict(row: sqlite3.Row) -> ConflictRecord:
    return to_record.conflict(row, _dt)


def _dead_letter(row: sqlite3.Row) -> DeadLetter:
    return to_record.dead_letter(row, _dt)


def _audit(row: sqlite3.Row) -> AuditEntry:
    return to_record.audit(row, _dt)
