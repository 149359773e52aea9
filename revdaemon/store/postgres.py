"""The PostgreSQL backend of the store: several daemon processes (replicas, on several boxes) share one database.

Theory of operation: asyncpg keeps a pool of connections; every public method borrows one and runs as one
transaction (READ COMMITTED for writes, a read-only REPEATABLE READ snapshot for reads), shielded from
cancellation as on SQLite, so a worker cancelled at shutdown never leaves a write half-made. What SQLite gets
from its single writer, PostgreSQL gets from row locks and constraints:

- claims take due rows with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any replica never take the
  same event and never wait on each other; a claim carries a lease (`claimed_until`), and a claim whose lease
  ran out (its replica died) is claimable again, so the survivor takes it over;
- settling an event locks its row first (`SELECT ... FOR UPDATE`) and refuses with ClaimLost if the claim
  is no longer the caller's;
- a duplicate event key, intent key or link is skipped by its unique index (`ON CONFLICT DO NOTHING`), which
  waits for a concurrent insert of the same key to commit: webhooks reaching both replicas store one event;
- one open conflict per record is a partial unique index; mapping versions are numbered under a table lock.

One replica is active, the leader: it holds a session-level advisory lock on a connection of its own, kept open
outside the pool. The lock goes with the session, so a leader that dies (or whose connection dies) loses it, and
so does one that goes silent, paused (SIGSTOP, a frozen VM) or cut off: the server ends that session once it has
been idle `LEADER_SILENCE_SECONDS` (idle_session_timeout), judged by the server's clock alone. Another replica's
`try_lead` then gets the lock and, in the same session, increments the leadership epoch.

Fencing: a fenced transaction first reads the leadership row `FOR SHARE` and refuses (Fenced) unless its epoch
is the caller's. The takeover's UPDATE of that row conflicts with the share lock, so under READ COMMITTED the two
serialise: a fenced change either commits before the takeover (the new leader reads it) or waits for it and
then sees the new epoch. Nothing an old leader decides can land after the new leader has looked.

Time: every timestamp the store sets is the database's `now()` (the transaction's start), so leases, settle
times, heartbeats and leadership are judged by one clock whichever box writes them. A test may inject a clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import asyncpg

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
from revdaemon.store.encoding import contains_pattern, dumps, loads, ts_text
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION, from_postgres_number
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

T = TypeVar("T")

# The table holding the version; created by the store before the first migration.
VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS revdaemon_schema (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    version  INTEGER NOT NULL
)
"""

CONNECT_TIMEOUT_SECONDS = 10.0
ACQUIRE_TIMEOUT_SECONDS = 30.0  # a pool exhausted this long is reported as busy, not waited on forever
COMMAND_TIMEOUT_SECONDS = 60.0  # a statement that never answers (a dead server) fails instead of hanging a shield
LEAD_CHECK_TIMEOUT_SECONDS = 5.0
# A leader silent this long (its session idle: the process paused, frozen or cut off) loses its session and the
# lock with it. Three of the replicas' 2 s beats (engine/replicas.py): one late beat is no takeover.
LEADER_SILENCE_SECONDS = 6
# A transaction left open this long by a silent process is ended, so the locks it holds (the leadership row's
# share lock among them) cannot keep a takeover waiting. Every transaction here runs its statements back to back.
IN_TRANSACTION_SILENCE_SECONDS = 10
# The takeover's UPDATE of the leadership row waits for fenced transactions in progress, at worst for one a
# silent process left open: longer than IN_TRANSACTION_SILENCE_SECONDS.
TAKEOVER_TIMEOUT_SECONDS = 20.0
MIN_SERVER_VERSION = (14, "idle_session_timeout, which ends a silent leader's session")
VACUUM_TIMEOUT_SECONDS = 3600.0  # reclaim_space on large tables
POOL_SIZE = 10
TRANSIENT_RETRIES = 3  # a deadlock between two replicas' inserts is retried before StoreBusy

# Advisory locks are keyed (class, object): the class is ours, the object names the lock and the schema, so
# two deployments in two schemas of one database never share a leader or a migration.
LOCK_CLASS = 0x72657644  # "revD"
LEADER_LOCK = "SELECT pg_try_advisory_lock($1, hashtext(current_schema() || ':leader'))"
MIGRATION_LOCK = "SELECT pg_advisory_lock($1, hashtext(current_schema() || ':migrate'))"
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock($1, hashtext(current_schema() || ':migrate'))"

SERVER_SETTINGS = {
    "application_name": "revdaemon",
    "lock_timeout": "10s",  # a row held longer than this by another replica is StoreBusy, not a hang
    # A client that died inside a transaction (its box froze) must not hold row locks for long.
    "idle_in_transaction_session_timeout": f"{IN_TRANSACTION_SILENCE_SECONDS}s",
}
# The leader's connection: the server ends its session once it has been silent LEADER_SILENCE_SECONDS (a paused
# or cut-off leader), and notices a dead peer (a box powered off, no FIN) by TCP keepalives; either frees the
# leader lock for another replica. Its takeover UPDATE may wait for a silent transaction to be ended.
LEADER_SETTINGS = {
    **SERVER_SETTINGS,
    "idle_session_timeout": f"{LEADER_SILENCE_SECONDS}s",
    "lock_timeout": f"{IN_TRANSACTION_SILENCE_SECONDS + 5}s",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
# The first statement of every fenced transaction: the share lock serialises it with a takeover (see the top).
FENCE = "SELECT *, now() AS now FROM leadership FOR SHARE"
TAKE_LEADERSHIP = """UPDATE leadership SET epoch = epoch + 1, replica_id = $1, since = coalesce($2, now())
                     RETURNING *"""

_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(an unreadable URL)"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresStore:
    """`Store` on a PostgreSQL database. Create with `await PostgresStore.open(url)`."""

    def __init__(self, pool: asyncpg.Pool, url: str, clock: Clock | None, *, read_only: bool = False) -> None:
        self._pool = pool
        self._url = url
        self._clock = clock  # None: the database's own (`now()`)
        self.read_only = read_only
        self._writes = WriteHealth()
        self._leader: asyncpg.Connection | None = None
        self._leading: Leadership | None = None
        self._lead_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, clock: Clock | None = None, read_only: bool = False,
                   pool_size: int = POOL_SIZE) -> PostgresStore:
        """Connect, creating and migrating the schema as needed; `read_only` (for `status` and `check`)
        changes nothing and refuses a database the daemon has not created or migrated yet."""
        where = describe_url(url)
        with _translated(where):
            conn = await _connect(url, SERVER_SETTINGS)
            try:
                if read_only:
                    current = await _read_version(conn)
                    _check_version(current)
                    if current == 0:
                        raise StoreMissing(f"no revdaemon schema in {where} yet: the daemon creates it on its "
                                           "first start")
                    if current < SCHEMA_VERSION:
                        raise StoreError(f"the state database {where} is at schema version {current}, older than "
                                         f"this revdaemon ({SCHEMA_VERSION}): start the daemon once to migrate it")
                else:
                    _check_server(conn, where)
                    await _migrate(conn)
                    # Only the first open of a store records its day (the go-live date).
                    await conn.execute(
                        """INSERT INTO store_meta (name, value)
                           VALUES ('created_on', coalesce($1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')))
                           ON CONFLICT (name) DO NOTHING""", clock().date().isoformat() if clock else None)
            finally:
                await conn.close(timeout=CONNECT_TIMEOUT_SECONDS)
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=2 if read_only else pool_size, timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS, server_settings=SERVER_SETTINGS,
            )
        return cls(pool, url, clock, read_only=read_only)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._lead_lock:
                self._closed = True
                await self._drop_leader(graceful=True)
            with contextlib.suppress(*_CONNECTION_ERRORS):
                with anyio.fail_after(COMMAND_TIMEOUT_SECONDS):
                    await self._pool.close()
                return
            self._pool.terminate()

    def _at(self) -> datetime | None:
        """A statement's `now` parameter: the injected clock's, or None for `coalesce($n, now())`."""
        return self._clock() if self._clock is not None else None

    async def _now(self, conn: asyncpg.Connection, epoch: int | None = None) -> datetime:
        """The store's now in this transaction. With `epoch`, this is the fence: the transaction's first statement
        takes the leadership row's share lock and raises Fenced unless `epoch` is current (see the top)."""
        if epoch is not None:
            row = await conn.fetchrow(FENCE)
            if row is None or row["epoch"] != epoch:
                raise Fenced(_fenced_message(epoch, row))
            return self._clock() if self._clock is not None else row["now"]
        return self._clock() if self._clock is not None else await conn.fetchval("SELECT now()")

    @asynccontextmanager
    async def _tx(self, *, write: bool = True) -> AsyncIterator[asyncpg.Connection]:
        read = not write or self.read_only
        # Reads see one snapshot (summary's counts agree with each other), as SQLite's do.
        isolation = "repeatable_read" if read else "read_committed"
        with anyio.CancelScope(shield=True), self._writes.noting(not read), _translated(describe_url(self._url)):
            async with (self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn,
                        conn.transaction(isolation=isolation, readonly=read)):
                yield conn

    async def _retrying(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run a whole transaction again when PostgreSQL aborted it to break a deadlock with another replica."""
        for attempt in range(TRANSIENT_RETRIES):
            try:
                return await body()
            except StoreBusy as exc:
                if not isinstance(exc.__cause__, asyncpg.TransactionRollbackError) or attempt + 1 == TRANSIENT_RETRIES:
                    raise
                await anyio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def schema_version(self) -> int:
        async with self._tx(write=False) as conn:
            return await _read_version(conn)

    async def ping(self) -> bool:
        try:
            async with self._tx(write=False) as conn:
                await conn.fetchval("SELECT 1 FROM cursors LIMIT 1")
                # A hot standby answers reads but takes no write: not ready for a daemon.
                writable = await conn.fetchval("SELECT NOT pg_is_in_recovery()")
            if writable and self._writes.failure is not None and not self.read_only:
                async with self._tx() as conn:
                    await conn.execute(WRITE_PROBE)
        except StoreError:
            return False
        return bool(writable) or self.read_only

    async def created_on(self) -> date:
        async with self._tx(write=False) as conn:
            value = await conn.fetchval("SELECT value FROM store_meta WHERE name = 'created_on'")
        return date.fromisoformat(value) if value else (self._clock or utcnow)().date()

    # --- inbox ----------------------------------------------------------------------------------

    async def add_events(
        self, events: Sequence[NewEvent], cursor: CursorUpdate | None = None
    ) -> list[bool]:
        now = self._at()
        columns = ([e.source for e in events], [e.key for e in events], [e.type for e in events],
                   [dumps(e.payload) for e in events])

        async def body() -> set[str]:
            async with self._tx() as conn:
                # One statement for the whole batch; ids follow the arrival order (WITH ORDINALITY), which is the
                # order claims take events due at the same time.
                rows = await conn.fetch(
                    """INSERT INTO inbox_events
                           (source, event_key, type, payload, next_attempt_at, received_at, updated_at)
                       SELECT source, event_key, type, payload, at, at, at
                       FROM (VALUES (coalesce($5::timestamptz, now()))) AS clock (at),
                            unnest($1::text[], $2::text[], $3::text[], $4::text[])
                            WITH ORDINALITY AS batch (source, event_key, type, payload, position)
                       ORDER BY position
                       ON CONFLICT (event_key) DO NOTHING
                       RETURNING event_key""",
                    *columns, now,
                )
                if cursor is not None:
                    await _upsert_cursor(conn, cursor, now)
                return {row["event_key"] for row in rows}

        stored = await self._retrying(body) if events or cursor is not None else set()
        inserted: list[bool] = []
        for event in events:
            # A key stored by this call counts as new once; a second copy in the same call is a duplicate.
            inserted.append(event.key in stored)
            stored.discard(event.key)
        return inserted

    async def claim_events(self, *, worker: str, limit: int, lease: timedelta,
                           mapping_version: int | None = None, epoch: int | None = None) -> list[Event]:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            # SKIP LOCKED: rows another worker is claiming or settling right now are left to it, not waited on.
            rows = await conn.fetch(
                """WITH due AS (
                       SELECT id FROM inbox_events
                       WHERE (status = 'received' AND next_attempt_at <= $1)
                          OR (status = 'claimed' AND (claimed_until <= $1 OR coalesce(claim_epoch, 0) < $6))
                       ORDER BY next_attempt_at, id
                       LIMIT $2
                       FOR UPDATE SKIP LOCKED
                   )
                   UPDATE inbox_events AS e
                   SET status = 'claimed', claimed_by = $3, claimed_until = $4, attempts = e.attempts + 1,
                       updated_at = $1, mapping_version = coalesce(e.mapping_version, $5), claim_epoch = $7
                   FROM due WHERE e.id = due.id
                   RETURNING e.*""",
                now, limit, worker, now + lease, mapping_version, epoch or 0, epoch,
            )
        return sorted((_event(row) for row in rows), key=lambda e: (e.next_attempt_at, e.id))

    async def release_claims(self, worker: str, *, epoch: int | None = None) -> int:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            status = await conn.execute(
                """UPDATE inbox_events SET status = 'received', claimed_by = NULL, claimed_until = NULL,
                       next_attempt_at = $1, updated_at = $1
                   WHERE status = 'claimed' AND claimed_by = $2""",
                now, worker,
            )
        return _row_count(status)

    async def complete_event(self, event_id: int, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _move_event(conn, event_id, EventStatus.DONE, await self._now(conn, epoch), clear_error=True,
                              claimed_by=claimed_by)

    async def complete_events(self, event_ids: Sequence[int], *, claimed_by: str,
                              epoch: int | None = None) -> list[int]:
        if not event_ids:
            return []
        check_event_move(EventStatus.CLAIMED, EventStatus.DONE)
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            rows = await conn.fetch(
                """UPDATE inbox_events SET status = 'done', last_error = NULL, claimed_by = NULL,
                       claimed_until = NULL, updated_at = $3
                   WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claimed_by = $2
                   RETURNING id""",
                sorted(set(event_ids)), claimed_by, now,
            )
        held = {row["id"] for row in rows}
        return [i for i in event_ids if i not in held]

    async def retry_event(self, event_id: int, *, error: str, next_attempt_at: datetime,
                          claimed_by: str | None = None, reset_attempts: bool = False,
                          refund_attempt: bool = False, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _move_event(conn, event_id, EventStatus.RECEIVED, await self._now(conn, epoch), error=error,
                              next_attempt_at=next_attempt_at, claimed_by=claimed_by, reset_attempts=reset_attempts,
                              refund_attempt=refund_attempt)

    async def dead_letter_event(self, event_id: int, letter: NewDeadLetter, *, claimed_by: str | None = None,
                                epoch: int | None = None) -> int:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            await _move_event(conn, event_id, EventStatus.DEAD, now, error=letter.error, claimed_by=claimed_by)
            # Dead is terminal until a person replays it: a later event about the same record (its own echo,
            # say the sync status "Error" written there) joins the open letter instead of making another.
            if letter.record_ref is not None:
                open_id = await conn.fetchval(
                    "SELECT id FROM dead_letters WHERE record_ref = $1 AND replayed_at IS NULL ORDER BY id LIMIT 1",
                    letter.record_ref)
                if open_id is not None:
                    return int(open_id)
            letter_id = await conn.fetchval(
                """INSERT INTO dead_letters
                       (event_id, system, operation, error, error_code, status, record_ref, request, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
                event_id, letter.system, letter.operation, letter.error, letter.error_code, letter.status,
                letter.record_ref, dumps(letter.request), now,
            )
        return int(letter_id)

    async def conflict_event(self, event_id: int, conflict: NewConflict, *, claimed_by: str | None = None,
                             epoch: int | None = None) -> int:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            await _move_event(conn, event_id, EventStatus.CONFLICT, now, error=conflict.reason,
                              claimed_by=claimed_by)
            # One open conflict per record and flow: a later event about it joins the open one, whose values
            # become the latest seen, and waits for the same decision. The partial unique index makes this hold
            # when two replicas park events about one record at the same moment.
            conflict_id = await conn.fetchval(
                """INSERT INTO conflicts (event_id, flow, record_ref, reason, nue_values, salesforce_values,
                       synced_values, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (flow, record_ref) WHERE status = 'open' DO UPDATE
                   SET reason = excluded.reason, nue_values = excluded.nue_values,
                       salesforce_values = excluded.salesforce_values, synced_values = excluded.synced_values
                   RETURNING id""",
                event_id, conflict.flow, conflict.record_ref, conflict.reason, dumps(conflict.nue_values),
                dumps(conflict.salesforce_values), dumps(conflict.synced_values), now,
            )
            await conn.execute("UPDATE inbox_events SET conflict_id = $1 WHERE id = $2", conflict_id, event_id)
        return int(conflict_id)

    async def get_event(self, event_id: int) -> Event | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM inbox_events WHERE id = $1", event_id)
        return _event(row) if row else None

    async def search_events(self, text: str, *, limit: int = 50) -> list[Event]:
        # ILIKE: SQLite's LIKE ignores ASCII case, and the two backends find the same events.
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                """SELECT * FROM inbox_events WHERE event_key ILIKE $1 ESCAPE '\\' OR payload ILIKE $1 ESCAPE '\\'
                   ORDER BY id DESC LIMIT $2""", contains_pattern(text), limit)
        return [_event(row) for row in rows]

    async def finished_per_minute(self, since: datetime) -> list[MinuteCount]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                """SELECT date_trunc('minute', updated_at, 'UTC') AS minute, count(*) AS n FROM inbox_events
                   WHERE status = 'done' AND updated_at >= $1 GROUP BY 1 ORDER BY 1""", since)
        return [MinuteCount(minute=row["minute"], count=row["n"]) for row in rows]

    async def find_event(self, key: str) -> Event | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM inbox_events WHERE event_key = $1", key)
        return _event(row) if row else None

    async def list_events(self, *, status: EventStatus | None = None, limit: int = 50) -> list[Event]:
        async with self._tx(write=False) as conn:
            if status is None:
                rows = await conn.fetch("SELECT * FROM inbox_events ORDER BY id DESC LIMIT $1", limit)
            else:
                rows = await conn.fetch("SELECT * FROM inbox_events WHERE status = $1 ORDER BY id DESC LIMIT $2",
                                        status.value, limit)
        return [_event(row) for row in rows]

    async def queue_depths(self) -> dict[EventStatus, int]:
        async with self._tx(write=False) as conn:
            return await _queue_depths(conn)

    # --- cursors --------------------------------------------------------------------------------

    async def get_cursor(self, name: str) -> Cursor | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM cursors WHERE name = $1", name)
        return _cursor(row) if row else None

    async def set_cursor(self, update: CursorUpdate) -> None:
        async with self._tx() as conn:
            await _upsert_cursor(conn, update, self._at())

    async def list_cursors(self) -> list[Cursor]:
        async with self._tx(write=False) as conn:
            return [_cursor(row) for row in await conn.fetch("SELECT * FROM cursors ORDER BY name")]

    # --- id links -------------------------------------------------------------------------------

    async def put_link(self, link: Link) -> None:
        async with self._tx() as conn:
            # Insert first: a pairing another replica is inserting at the same moment is waited for, then seen.
            await conn.execute(
                """INSERT INTO id_links (object_type, nue_id, salesforce_id, created_at)
                   VALUES ($1, $2, $3, coalesce($4, now()))
                   ON CONFLICT DO NOTHING""",
                link.object_type, link.nue_id, link.salesforce_id, self._at(),
            )
            rows = await conn.fetch(
                """SELECT nue_id, salesforce_id FROM id_links
                   WHERE object_type = $1 AND (nue_id = $2 OR salesforce_id = $3)""",
                link.object_type, link.nue_id, link.salesforce_id,
            )
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
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow(f"SELECT * FROM id_links WHERE object_type = $1 AND {column} = $2",
                                      object_type, value)
        return _link(row) if row else None

    async def links_of(self, record_id: str) -> list[Link]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(
                "SELECT * FROM id_links WHERE nue_id = $1 OR salesforce_id = $1 ORDER BY object_type", record_id)
        return [_link(row) for row in rows]

    # --- last synced values ---------------------------------------------------------------------

    async def get_synced(self, record_refs: Sequence[str]) -> dict[str, SyncedRecord]:
        values: dict[str, dict[str, object]] = {}
        declined: dict[str, dict[str, object]] = {}
        async with self._tx(write=False) as conn:
            rows = await conn.fetch("SELECT * FROM synced_values WHERE record_ref = ANY($1::text[])",
                                    list(dict.fromkeys(record_refs)))
        for row in rows:
            values.setdefault(row["record_ref"], {})[row["field"]] = loads(row["value"])
            if row["declined"] is not None:
                declined.setdefault(row["record_ref"], {})[row["field"]] = loads(row["declined"])
        return {ref: SyncedRecord(values=fields, declined=declined.get(ref, {})) for ref, fields in values.items()}

    # --- idempotency ----------------------------------------------------------------------------

    async def record_intent(self, intent: NewIntent, *, epoch: int | None = None) -> WriteIntent:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            await conn.execute(
                """INSERT INTO write_intents
                       (idem_key, system, operation, target, request, event_id, status, created_at, updated_at,
                        epoch)
                   VALUES ($1, $2, $3, $4, $5, $6, 'recorded', $7, $7, $8)
                   ON CONFLICT (idem_key) DO NOTHING""",
                intent.key, intent.system, intent.operation, intent.target, dumps(intent.request),
                intent.event_id, now, epoch,
            )
            row = await conn.fetchrow("SELECT * FROM write_intents WHERE idem_key = $1", intent.key)
        assert row is not None  # inserted or already there, inside this transaction
        return _intent(row)

    async def begin_send(self, keys: Sequence[str], *, epoch: int | None = None) -> None:
        if not keys:
            return
        unique = sorted(set(keys))
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            # Rows locked in key order: two transactions marking overlapping chunks cannot deadlock.
            rows = await conn.fetch(
                """SELECT idem_key, status FROM write_intents WHERE idem_key = ANY($1::text[])
                   ORDER BY idem_key FOR UPDATE""", unique)
            _check_sendable(unique, {row["idem_key"]: IntentStatus(row["status"]) for row in rows})
            await conn.execute(
                """UPDATE write_intents SET status = 'sent', ever_sent = true, error = NULL, updated_at = $2,
                       epoch = $3
                   WHERE idem_key = ANY($1::text[])""", unique, now, epoch)

    async def confirm_intent(self, key: str, result: dict[str, object], *, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _move_intent(conn, key, IntentStatus.CONFIRMED, await self._now(conn, epoch), result=result)

    async def fail_intent(self, key: str, error: str, *, settle_for: timedelta | None = None,
                          epoch: int | None = None) -> None:
        async with self._tx() as conn:
            now = await self._now(conn, epoch)
            await _move_intent(conn, key, IntentStatus.FAILED, now, error=error,
                               settle_after=now + settle_for if settle_for is not None else None)

    async def reopen_intent(self, key: str, *, epoch: int | None = None) -> None:
        async with self._tx() as conn:
            await _move_intent(conn, key, IntentStatus.RECORDED, await self._now(conn, epoch))

    async def get_intent(self, key: str) -> WriteIntent | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM write_intents WHERE idem_key = $1", key)
        return _intent(row) if row else None

    async def list_intents(self, *, event_ids: Sequence[int] = (), mentioning: str | None = None,
                           limit: int = 100) -> list[WriteIntent]:
        params = _Params()
        conditions: list[str] = []
        if event_ids:
            conditions.append(f"event_id = ANY({params.add(list(event_ids))}::bigint[])")
        if mentioning:
            conditions.append(_any_contains(params.add(contains_pattern(mentioning)), "target", "request", "idem_key"))
        if not conditions:
            return []
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(f"""SELECT * FROM write_intents WHERE {' OR '.join(conditions)}
                                        ORDER BY created_at DESC LIMIT {params.add(limit)}""", *params.values)
        return [_intent(row) for row in rows]

    # --- ordering -------------------------------------------------------------------------------

    async def get_entity_version(self, entity: str) -> str | None:
        async with self._tx(write=False) as conn:
            version = await conn.fetchval("SELECT version FROM entity_versions WHERE entity = $1", entity)
        return str(version) if version is not None else None

    async def raise_entity_version(self, entity: str, version: str) -> bool:
        async with self._tx() as conn:
            # The version column collates as "C": byte order, the order SQLite compares text in.
            raised = await conn.fetchval(
                """INSERT INTO entity_versions (entity, version, updated_at) VALUES ($1, $2, coalesce($3, now()))
                   ON CONFLICT (entity) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at
                   WHERE excluded.version > entity_versions.version
                   RETURNING true""",
                entity, version, self._at(),
            )
        return bool(raised)

    # --- conflicts ------------------------------------------------------------------------------

    async def list_conflicts(
        self, *, status: ConflictStatus | None = ConflictStatus.OPEN, limit: int = 50
    ) -> list[ConflictRecord]:
        async with self._tx(write=False) as conn:
            if status is None:
                rows = await conn.fetch("SELECT * FROM conflicts ORDER BY id DESC LIMIT $1", limit)
            else:
                rows = await conn.fetch("SELECT * FROM conflicts WHERE status = $1 ORDER BY id DESC LIMIT $2",
                                        status.value, limit)
        return [_conflict(row) for row in rows]

    async def get_conflict(self, conflict_id: int) -> ConflictRecord | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM conflicts WHERE id = $1", conflict_id)
        return _conflict(row) if row else None

    async def resolve_conflict(
        self, conflict_id: int, *, resolution: Resolution, actor: str, comment: str | None = None
    ) -> ConflictRecord:
        async with self._tx() as conn:
            now = await self._now(conn)
            row = await conn.fetchrow("SELECT * FROM conflicts WHERE id = $1 FOR UPDATE", conflict_id)
            if row is None:
                raise RecordNotFound(f"no conflict {conflict_id}")
            if row["status"] != ConflictStatus.OPEN.value:
                raise StoreError(f"conflict {conflict_id} is already resolved ({row['resolution']})")
            updated = await conn.fetchrow(
                """UPDATE conflicts SET status = 'resolved', resolution = $1, resolved_by = $2, comment = $3,
                       resolved_at = $4 WHERE id = $5 RETURNING *""",
                resolution.value, actor, comment, now, conflict_id,
            )
            shown = loads(row["salesforce_values"]) or {}
            if resolution is not Resolution.SKIP and shown and str(row["record_ref"]).startswith("salesforce:"):
                declined = loads(row["nue_values"]) if resolution is Resolution.TAKE_SALESFORCE else None
                await _remember_synced(conn, row["record_ref"], shown, now, declined=declined or {})
            waiting = await conn.fetch(
                """SELECT id FROM inbox_events WHERE status = 'conflict' AND (conflict_id = $1 OR id = $2)
                   ORDER BY id""", conflict_id, row["event_id"])
            # Every event waiting on this conflict takes the same decision.
            target = EventStatus.RECEIVED if resolution is Resolution.TAKE_NUE else EventStatus.DONE
            for event_row in waiting:
                await _move_event(conn, event_row["id"], target, now, reset_attempts=True, next_attempt_at=now)
        assert updated is not None
        return _conflict(updated)

    # --- dead letters ---------------------------------------------------------------------------

    async def list_dead_letters(self, *, include_replayed: bool = False, limit: int = 50) -> list[DeadLetter]:
        where = "" if include_replayed else "WHERE replayed_at IS NULL"
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(f"SELECT * FROM dead_letters {where} ORDER BY id DESC LIMIT $1", limit)
        return [_dead_letter(row) for row in rows]

    async def open_dead_letter(self, record_ref: str) -> DeadLetter | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow(
                "SELECT * FROM dead_letters WHERE record_ref = $1 AND replayed_at IS NULL ORDER BY id LIMIT 1",
                record_ref)
        return _dead_letter(row) if row else None

    async def get_dead_letter(self, letter_id: int) -> DeadLetter | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM dead_letters WHERE id = $1", letter_id)
        return _dead_letter(row) if row else None

    async def replay_dead_letter(self, letter_id: int, *, remap: bool = False) -> Event:
        async with self._tx() as conn:
            now = await self._now(conn)
            row = await conn.fetchrow("SELECT * FROM dead_letters WHERE id = $1 FOR UPDATE", letter_id)
            if row is None:
                raise RecordNotFound(f"no dead letter {letter_id}")
            if row["replayed_at"] is not None:
                raise StoreError(f"dead letter {letter_id} was already replayed at {row['replayed_at'].isoformat()}")
            if row["event_id"] is None:
                raise StoreError(f"dead letter {letter_id} has no inbox event to replay")
            await _move_event(conn, row["event_id"], EventStatus.RECEIVED, now, reset_attempts=True,
                              next_attempt_at=now)
            await conn.execute("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2", now, letter_id)
            if remap:
                await conn.execute("UPDATE inbox_events SET mapping_version = NULL WHERE id = $1", row["event_id"])
            event_row = await conn.fetchrow("SELECT * FROM inbox_events WHERE id = $1", row["event_id"])
        assert event_row is not None
        return _event(event_row)

    # --- mapping versions -----------------------------------------------------------------------

    async def register_mapping(self, text: str, content_hash: str) -> MappingVersion:
        async with self._tx() as conn:
            row = await conn.fetchrow("SELECT * FROM mapping_versions WHERE content_hash = $1", content_hash)
            if row is None:
                # Numbered 1, 2, 3 with no gaps (a sequence would skip a number on every lost race): two replicas
                # registering at once take turns, and the second finds the first's row.
                await conn.execute("LOCK TABLE mapping_versions IN SHARE ROW EXCLUSIVE MODE")
                row = await conn.fetchrow("SELECT * FROM mapping_versions WHERE content_hash = $1", content_hash)
            if row is None:
                row = await conn.fetchrow(
                    """INSERT INTO mapping_versions (version, content_hash, text, created_at)
                       SELECT coalesce(max(version), 0) + 1, $1, $2, coalesce($3, now()) FROM mapping_versions
                       RETURNING *""", content_hash, text, self._at())
        assert row is not None
        return _mapping(row)

    async def find_mapping(self, content_hash: str) -> MappingVersion | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM mapping_versions WHERE content_hash = $1", content_hash)
        return _mapping(row) if row else None

    async def get_mapping(self, version: int) -> MappingVersion | None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM mapping_versions WHERE version = $1", version)
        return _mapping(row) if row else None

    async def list_mappings(self) -> list[MappingVersion]:
        async with self._tx(write=False) as conn:
            return [_mapping(row) for row in await conn.fetch("SELECT * FROM mapping_versions ORDER BY version")]

    # --- audit ----------------------------------------------------------------------------------

    async def record_write(self, entry: NewAuditEntry) -> int:
        now = self._at()
        async with self._tx() as conn:
            entry_id = await conn.fetchval(
                """INSERT INTO audit_log (at, system, operation, target, outcome, idem_key, event_id,
                       record_ref, status, detail, mapping_version)
                   VALUES (coalesce($1, now()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
                now, entry.system, entry.operation, entry.target, entry.outcome, entry.idem_key, entry.event_id,
                entry.record_ref, entry.status, dumps(entry.detail), entry.mapping_version,
            )
            if entry.outcome == "ok" and entry.record_ref and entry.synced_fields:
                await _remember_synced(conn, entry.record_ref, entry.synced_fields, now)
        return int(entry_id)

    async def list_writes(self, *, record_ref: str | None = None, event_id: int | None = None,
                          mentioning: str | None = None, limit: int = 50) -> list[AuditEntry]:
        params = _Params()
        conditions: list[str] = []
        if mentioning:
            conditions.append(_any_contains(params.add(contains_pattern(mentioning)), "record_ref", "target", "detail"))
        if record_ref is not None:
            conditions.append(f"record_ref = {params.add(record_ref)}")
        if event_id is not None:
            conditions.append(f"event_id = {params.add(event_id)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        async with self._tx(write=False) as conn:
            rows = await conn.fetch(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT {params.add(limit)}",
                                    *params.values)
        return [_audit(row) for row in rows]

    async def backup(self, destination: Path) -> None:
        """Not done by revdaemon on PostgreSQL: the database's own tools make a consistent copy while it is in
        use, and restore it (`pg_dump --format=custom`, or continuous archiving for point-in-time recovery)."""
        raise StoreError(
            f"the state store is the PostgreSQL database {describe_url(self._url)}: back it up with PostgreSQL's "
            f"own tools, e.g. `pg_dump --format=custom --file={destination} <database>` (restore with pg_restore), "
            "or the server's continuous archiving; `revdaemon backup` copies SQLite stores only"
        )

    # --- replicas -------------------------------------------------------------------------------

    async def heartbeat(self, replica: ReplicaBeat) -> None:
        async with self._tx() as conn:
            await conn.execute(
                """INSERT INTO replicas (replica_id, host, pid, started_at, last_heartbeat, is_leader)
                   VALUES ($1, $2, $3, $4, coalesce($5, now()), $6)
                   ON CONFLICT (replica_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                       started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
                       is_leader = excluded.is_leader""",
                replica.replica_id, replica.host, replica.pid, replica.started_at, self._at(), replica.is_leader,
            )
            await conn.execute("DELETE FROM replicas WHERE last_heartbeat < coalesce($1, now()) - $2::interval",
                               self._at(), REPLICA_FORGOTTEN_AFTER)

    async def try_lead(self, replica_id: str) -> Leadership | None:
        """Leadership is a session-level advisory lock held on a connection of this store's own (outside the
        pool, so no other work can end its session). Taking the lock increments the epoch in the same session.
        While held, each call reads the epoch on that connection (which also keeps its session from going idle);
        a broken connection is dropped (the server frees the lock with the session) and None is returned, and the
        next call reconnects and tries for the lock again."""
        async with self._lead_lock:
            if self._closed or self.read_only:
                return None
            if self._leader is not None and self._leading is not None:
                try:
                    epoch = await self._leader.fetchval("SELECT epoch FROM leadership",
                                                        timeout=LEAD_CHECK_TIMEOUT_SECONDS)
                except _CONNECTION_ERRORS:
                    await self._drop_leader(graceful=False)
                    return None
                if epoch != self._leading.epoch:  # moved without the lock (a person's hand): not ours to keep
                    await self._drop_leader(graceful=True)
                    return None
                return self._leading
            try:
                if self._leader is None or self._leader.is_closed():
                    settings = {**LEADER_SETTINGS, "application_name": f"revdaemon leader {replica_id}"[:63]}
                    self._leader = await _connect(self._url, settings)
                got = await self._leader.fetchval(LEADER_LOCK, LOCK_CLASS, timeout=LEAD_CHECK_TIMEOUT_SECONDS)
                if not got:
                    return None
                row = await self._leader.fetchrow(TAKE_LEADERSHIP, replica_id, self._at(),
                                                  timeout=TAKEOVER_TIMEOUT_SECONDS)
            except _CONNECTION_ERRORS:
                await self._drop_leader(graceful=False)
                return None
            self._leading = to_record.leadership(row, _when)
            return self._leading

    async def leadership(self) -> Leadership | None:
        async with self._tx(write=False) as conn:
            return to_record.leadership(await conn.fetchrow("SELECT * FROM leadership"), _when)

    async def check_epoch(self, epoch: int) -> None:
        async with self._tx(write=False) as conn:
            row = await conn.fetchrow("SELECT * FROM leadership")
        if row is None or row["epoch"] != epoch:
            raise Fenced(_fenced_message(epoch, row))

    async def _drop_leader(self, *, graceful: bool) -> None:
        conn, self._leader, self._leading = self._leader, None, None
        if conn is None or conn.is_closed():
            return
        if graceful:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.close(timeout=LEAD_CHECK_TIMEOUT_SECONDS)  # ends the session: the lock is free at once
                return
        conn.terminate()

    async def list_replicas(self) -> list[Replica]:
        async with self._tx(write=False) as conn:
            rows = await conn.fetch("SELECT * FROM replicas ORDER BY replica_id")
        return [to_record.replica(row, _when) for row in rows]

    # --- status ---------------------------------------------------------------------------------

    async def summary(self) -> StoreSummary:
        async with self._tx(write=False) as conn:
            depths = await _queue_depths(conn)
            cursors = tuple(_cursor(row) for row in await conn.fetch("SELECT * FROM cursors ORDER BY name"))
            conflicts = await conn.fetchval("SELECT count(*) FROM conflicts WHERE status = 'open'")
            letters = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            oldest = await conn.fetchval("SELECT min(next_attempt_at) FROM inbox_events WHERE status = 'received'")
        return StoreSummary(queue_depths=depths, cursors=cursors, open_conflicts=int(conflicts),
                            dead_letters=int(letters), oldest_due_at=oldest)

    # --- retention ------------------------------------------------------------------------------

    async def prune(self, step: PruneStep) -> PruneStep:
        if step.target is None:
            return step
        async with self._tx(write=not step.dry_run) as conn:
            read, pruned, last = await _PRUNERS[step.target](conn, step)
        return step.after_batch(read=read, pruned=pruned, last=last)

    async def footprint(self) -> StoreFootprint:
        async with self._tx(write=False) as conn:
            # Every table of this schema (a deployment may share the database with others), indexes and TOAST in.
            size = await conn.fetchval(
                """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c
                   JOIN pg_namespace AS n ON n.oid = c.relnamespace
                   WHERE n.nspname = current_schema() AND c.relkind = 'r'""")
            # The first id is the first event stored: no index on received_at is needed.
            oldest_event = await conn.fetchval("SELECT received_at FROM inbox_events ORDER BY id LIMIT 1")
            oldest_audit = await conn.fetchval("SELECT min(at) FROM audit_log")
            pruned_before = await _meta(conn, PAYLOADS_PRUNED_BEFORE)
        return StoreFootprint(size_bytes=int(size), free_bytes=None, oldest_event_at=oldest_event,
                              oldest_audit_at=oldest_audit,
                              payloads_pruned_before=datetime.fromisoformat(pruned_before) if pruned_before else None)

    async def reclaim_space(self) -> None:
        """A plain VACUUM of the pruned tables: their dead rows' space is reused (autovacuum does the same, later).
        The files keep their size: only VACUUM FULL, which locks each table while it rewrites it, shrinks them,
        and that is left to the database's administrator."""
        if self.read_only:
            raise StoreError("the store is open read-only: it cannot be vacuumed")
        with self._writes.noting(True), _translated(describe_url(self._url)):
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                # Not in a transaction (VACUUM cannot be), and allowed longer than a statement usually is.
                await conn.execute("VACUUM (ANALYZE) inbox_events, write_intents, audit_log",
                                   timeout=VACUUM_TIMEOUT_SECONDS)


# --- retention ------------------------------------------------------------------------------------

PAYLOADS_PRUNED_BEFORE = "payloads_pruned_before"  # store_meta: where the last complete pass over events ended

PruneBatch = tuple[int, int, Position | None]  # rows read, rows pruned, the last row read


async def _prune_payloads(conn: asyncpg.Connection, step: PruneStep) -> PruneBatch:
    """Done events finished before the cutoff, in finishing order: each payload still kept becomes the tombstone.
    The event's row, key and times stay (retention.py says why)."""
    recorded = await _meta(conn, PAYLOADS_PRUNED_BEFORE)
    done_before = datetime.fromisoformat(recorded) if recorded else None
    start = step.after or pass_start(Target.EVENT_PAYLOADS, done_before)
    rows = await conn.fetch(
        """SELECT id, status, updated_at, payload = $1 AS pruned FROM inbox_events
           WHERE status = 'done' AND updated_at < $2 AND updated_at >= $3 AND (updated_at > $3 OR id > $4)
           ORDER BY updated_at, id LIMIT $5""",
        TOMBSTONE_TEXT, step.cutoff, start.at, start.key, step.batch)
    ids = [row["id"] for row in rows if not row["pruned"] and payload_may_go(EventStatus(row["status"]))]
    pruned = len(ids)
    if ids and not step.dry_run:
        pruned = _row_count(await conn.execute(
            "UPDATE inbox_events SET payload = $1 WHERE id = ANY($2::bigint[]) AND status = 'done' AND payload <> $1",
            TOMBSTONE_TEXT, ids))
    if len(rows) < step.batch and not step.dry_run:
        # The pass is complete: every event finished before the cutoff has lost its payload.
        await _set_meta(conn, PAYLOADS_PRUNED_BEFORE, ts_text(max(step.cutoff, done_before or step.cutoff)))
    return len(rows), pruned, Position(rows[-1]["updated_at"], rows[-1]["id"]) if rows else None


async def _prune_intents(conn: asyncpg.Connection, step: PruneStep) -> PruneBatch:
    """Settled intents last changed before the cutoff, oldest first, read through the index that leaves out the
    write kinds always kept; those the rules let go are deleted."""
    start = step.after or pass_start(Target.WRITE_INTENTS, None)
    rows = await conn.fetch(
        f"""SELECT i.idem_key, i.status, i.operation, i.updated_at, e.status AS event_status
            FROM write_intents AS i LEFT JOIN inbox_events AS e ON e.id = i.event_id
            WHERE i.operation NOT IN {KEPT_OPERATIONS_SQL} AND i.updated_at < $1
              AND i.updated_at >= $2 AND (i.updated_at > $2 OR i.idem_key > $3)
            ORDER BY i.updated_at, i.idem_key LIMIT $4""",
        step.cutoff, start.at, start.key, step.batch)
    keys = [row["idem_key"] for row in rows if intent_may_go(
        IntentStatus(row["status"]), row["operation"],
        EventStatus(row["event_status"]) if row["event_status"] is not None else None)]
    pruned = len(keys)
    if keys and not step.dry_run:
        # The state is checked again in the DELETE: another replica may have reopened one since it was read.
        pruned = _row_count(await conn.execute(
            """DELETE FROM write_intents WHERE idem_key = ANY($1::text[]) AND status IN ('confirmed', 'failed')
               AND updated_at < $2""", keys, step.cutoff))
    return len(rows), pruned, Position(rows[-1]["updated_at"], rows[-1]["idem_key"]) if rows else None


async def _prune_audit(conn: asyncpg.Connection, step: PruneStep) -> PruneBatch:
    """Audit entries recorded before the cutoff, oldest first: all of them go."""
    start = step.after or pass_start(Target.AUDIT_ENTRIES, None)
    rows = await conn.fetch(
        """SELECT id, at FROM audit_log WHERE at < $1 AND at >= $2 AND (at > $2 OR id > $3)
           ORDER BY at, id LIMIT $4""",
        step.cutoff, start.at, start.key, step.batch)
    pruned = len(rows)
    if rows and not step.dry_run:
        pruned = _row_count(await conn.execute("DELETE FROM audit_log WHERE id = ANY($1::bigint[])",
                                               [row["id"] for row in rows]))
    return len(rows), pruned, Position(rows[-1]["at"], rows[-1]["id"]) if rows else None


_PRUNERS: dict[Target, Callable[[asyncpg.Connection, PruneStep], Awaitable[PruneBatch]]] = {
    Target.EVENT_PAYLOADS: _prune_payloads, Target.WRITE_INTENTS: _prune_intents, Target.AUDIT_ENTRIES: _prune_audit}


async def _meta(conn: asyncpg.Connection, name: str) -> str | None:
    value = await conn.fetchval("SELECT value FROM store_meta WHERE name = $1", name)
    return str(value) if value is not None else None


async def _set_meta(conn: asyncpg.Connection, name: str, value: str) -> None:
    await conn.execute("""INSERT INTO store_meta (name, value) VALUES ($1, $2)
                          ON CONFLICT (name) DO UPDATE SET value = excluded.value""", name, value)


# --- connections and migrations ---------------------------------------------------------------------


async def _connect(url: str, settings: Mapping[str, str]) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS,
                                     server_settings=dict(settings))
    except ValueError:
        # asyncpg's message may quote the URL, password and all: say what is wrong without it.
        raise StoreUnavailable(f"the store URL {describe_url(url)} is not a valid PostgreSQL URL") from None


async def _read_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('revdaemon_schema')") is None:
        return 0
    version = await conn.fetchval("SELECT version FROM revdaemon_schema")
    return from_postgres_number(int(version)) if version is not None else 0


def _check_server(conn: asyncpg.Connection, where: str) -> None:
    version, needs = MIN_SERVER_VERSION
    found = conn.get_server_version()
    if found.major < version:
        raise StoreUnavailable(f"the state database {where} runs PostgreSQL {found.major}; revdaemon needs "
                               f"{version} or later ({needs})")


def _fenced_message(epoch: int, row: asyncpg.Record | None) -> str:
    current = row["epoch"] if row is not None else 0
    who = f"{row['replica_id']} leads since {row['since'].isoformat()}" if row is not None and row["replica_id"] \
        else "none leads"
    return f"leadership epoch {epoch} is over: it is {current} now ({who}); nothing was changed"


def _check_sendable(keys: Sequence[str], statuses: Mapping[str, IntentStatus]) -> None:
    for key in keys:
        if key not in statuses:
            raise RecordNotFound(f"no write intent {key!r}")
        check_intent_move(statuses[key], IntentStatus.SENT)


def _check_version(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the state database is at schema version {current}, newer than this revdaemon "
            f"(which knows up to {SCHEMA_VERSION}); run the newer version or restore a backup"
        )


async def _migrate(conn: asyncpg.Connection) -> None:
    _check_version(await _read_version(conn))
    # Two replicas starting on a new database at once: the second waits here, then finds nothing to do. The lock
    # is taken before the transaction, not inside it: a transaction begun before the first replica committed
    # could still see its cached "no such table" and migrate again.
    await conn.execute(MIGRATION_LOCK, LOCK_CLASS)
    try:
        async with conn.transaction():
            current = await _read_version(conn)
            _check_version(current)
            if current >= SCHEMA_VERSION:
                return
            await conn.execute(VERSION_TABLE)
            for migration in MIGRATIONS[current:]:
                if migration.postgres is not None:
                    await conn.execute(migration.postgres)
            await conn.execute(
                """INSERT INTO revdaemon_schema (only_row, version) VALUES (true, $1)
                   ON CONFLICT (only_row) DO UPDATE SET version = excluded.version""", SCHEMA_VERSION)
    finally:
        with contextlib.suppress(*_CONNECTION_ERRORS):  # a dead connection has released it already
            await conn.execute(MIGRATION_UNLOCK, LOCK_CLASS)


@contextlib.contextmanager
def _translated(where: str) -> Iterator[None]:
    """asyncpg's and the network's errors become the store's own, so nothing above store/ knows the backend.
    Messages name the database by `where` (its URL without the password), never by the URL itself."""
    try:
        yield
    except asyncpg.TransactionRollbackError as exc:  # a deadlock or serialization failure between replicas
        raise StoreBusy(f"the state database {where} aborted a transaction that met another: {exc}") from exc
    except (asyncpg.LockNotAvailableError, asyncpg.TooManyConnectionsError) as exc:
        raise StoreBusy(f"the state database {where} is busy: {exc}") from exc
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise StoreUnavailable(f"the state database {where} refused the login: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreUnavailable(f"the state database {where} failed: {exc}") from exc
    except asyncpg.InterfaceError as exc:
        raise StoreUnavailable(f"the connection to the state database {where} failed: {exc}") from exc
    except TimeoutError as exc:
        raise StoreBusy(f"the state database {where} did not answer in time") from exc
    except OSError as exc:
        raise StoreUnavailable(f"cannot reach the state database {where}: {exc.strerror or exc}") from exc


# --- small helpers ----------------------------------------------------------------------------------


class _Params:
    """Numbered placeholders ($1, $2...) for a statement built from optional conditions."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _any_contains(placeholder: str, *columns: str) -> str:
    return "(" + " OR ".join(f"{column} ILIKE {placeholder} ESCAPE '\\'" for column in columns) + ")"


def _row_count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3".
    return int(status.rsplit(" ", 1)[-1])


async def _remember_synced(conn: asyncpg.Connection, record_ref: str, fields: Mapping[str, Any],
                           now: datetime | None, *, declined: Mapping[str, Any] | None = None) -> None:
    """A write or a person's decision sets the field's baseline; a declined Nue value is kept only with the
    decision that declined it (a later write clears it). Rows go in field order, so two replicas writing the
    same record's fields lock them in one order and cannot deadlock."""
    declined = declined or {}
    names = sorted(fields)
    await conn.execute(
        """INSERT INTO synced_values (record_ref, field, value, declined, updated_at)
           SELECT $1, field, value, declined, coalesce($5::timestamptz, now())
           FROM unnest($2::text[], $3::text[], $4::text[]) AS batch (field, value, declined)
           ORDER BY field
           ON CONFLICT (record_ref, field) DO UPDATE SET value = excluded.value, declined = excluded.declined,
               updated_at = excluded.updated_at""",
        record_ref, names, [dumps(fields[name]) for name in names],
        [dumps(declined[name]) if name in declined else None for name in names], now,
    )


async def _queue_depths(conn: asyncpg.Connection) -> dict[EventStatus, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM inbox_events GROUP BY status")
    depths = dict.fromkeys(EventStatus, 0)
    for row in rows:
        depths[EventStatus(row["status"])] = row["n"]
    return depths


async def _upsert_cursor(conn: asyncpg.Connection, update: CursorUpdate, now: datetime | None) -> None:
    await conn.execute(
        """INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, coalesce($3::timestamptz, now()))
           ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
        update.name, update.value, now,
    )


_REFUND = ", attempts = GREATEST(attempts - 1, 0)"  # the claim counted an attempt that was no try


async def _move_event(
    conn: asyncpg.Connection,
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
    # FOR UPDATE: a claim another replica makes at this moment waits for this move, or this move sees it.
    row = await conn.fetchrow(
        "SELECT status, last_error, next_attempt_at, claimed_by FROM inbox_events WHERE id = $1 FOR UPDATE", event_id
    )
    if row is None:
        raise RecordNotFound(f"no inbox event {event_id}")
    if claimed_by is not None and (row["status"] != EventStatus.CLAIMED.value or row["claimed_by"] != claimed_by):
        raise ClaimLost(f"inbox event {event_id} is no longer claimed by {claimed_by} "
                        f"(now {row['status']}, {row['claimed_by'] or 'unclaimed'})")
    check_event_move(EventStatus(row["status"]), target)
    last_error = None if clear_error else (error if error is not None else row["last_error"])
    due = next_attempt_at if next_attempt_at is not None else row["next_attempt_at"]
    attempts = ", attempts = 0" if reset_attempts else (_REFUND if refund_attempt else "")
    await conn.execute(
        f"""UPDATE inbox_events
            SET status = $1, last_error = $2, next_attempt_at = $3, claimed_by = NULL, claimed_until = NULL,
                updated_at = $4{attempts}
            WHERE id = $5""",
        target.value, last_error, due, now, event_id,
    )


async def _move_intent(
    conn: asyncpg.Connection,
    key: str,
    target: IntentStatus,
    now: datetime,
    *,
    result: dict[str, object] | None = None,
    error: str | None = None,
    settle_after: datetime | None = None,
) -> None:
    row = await conn.fetchrow("SELECT status FROM write_intents WHERE idem_key = $1 FOR UPDATE", key)
    if row is None:
        raise RecordNotFound(f"no write intent {key!r}")
    check_intent_move(IntentStatus(row["status"]), target)
    settled = target in (IntentStatus.CONFIRMED, IntentStatus.FAILED)
    # `settle_after` is set by a failure of unknown outcome, cleared by any other settling, and kept through a
    # reopen (the executor looks up before sending again). `ever_sent` is begin_send's.
    await conn.execute(
        """UPDATE write_intents SET status = $1, result = coalesce($2, result), error = $3, updated_at = $4,
               settle_after = CASE WHEN $6 THEN $7::timestamptz ELSE settle_after END
           WHERE idem_key = $5""",
        target.value, dumps(result) if result is not None else None, error, now, key, settled, settle_after,
    )


# --- row -> record ----------------------------------------------------------------------------------


def _when(value: datetime | None) -> datetime | None:
    return value  # asyncpg hands timestamptz back as aware datetimes


def _event(row: asyncpg.Record) -> Event:
    return to_record.event(row, _when)


def _link(row: asyncpg.Record) -> Link:
    return to_record.link(row)


def _mapping(row: asyncpg.Record) -> MappingVersion:
    return to_record.mapping(row, _when)


def _cursor(row: asyncpg.Record) -> Cursor:
    return to_record.cursor(row, _when)


def _intent(row: asyncpg.Record) -> WriteIntent:
    return to_record.intent(row, _when)


def _conflict(row: asyncpg.Record) -> ConflictRecord:
    return to_record.conflict(row, _when)


def _dead_letter(row: asyncpg.Record) -> DeadLetter:
    return to_record.dead_letter(row, _when)


def _audit(row: asyncpg.Record) -> AuditEntry:
    return to_record.audit(row, _when)
