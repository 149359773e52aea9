"""PostgreSQL, the store's shared database: several daemon processes (replicas, on several boxes) share it.

Theory of operation: asyncpg keeps a pool of connections; every store method borrows one and runs as one
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
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import asyncpg

from revdaemon.errors import SchemaTooNew, StoreBusy, StoreError, StoreMissing, StoreUnavailable
from revdaemon.store import rows as to_record
from revdaemon.store.dialect import check_fence
from revdaemon.store.encoding import dumps
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION, from_postgres_number
from revdaemon.store.records import Clock, Leadership, MinuteCount, NewEvent
from revdaemon.store.sql import for_postgres

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


class PostgresTx:
    def __init__(self, conn: asyncpg.Connection, clock: Clock | None) -> None:
        self._conn = conn
        self._clock = clock  # None: the database's own (`now()`)
        self._now: datetime | None = None

    async def fetch(self, sql: str, /, **params: Any) -> list[asyncpg.Record]:
        statement = for_postgres(sql)
        return list(await self._conn.fetch(statement.text, *statement.bind(params)))

    async def fetchrow(self, sql: str, /, **params: Any) -> asyncpg.Record | None:
        statement = for_postgres(sql)
        return await self._conn.fetchrow(statement.text, *statement.bind(params))

    async def fetchval(self, sql: str, /, **params: Any) -> Any:
        statement = for_postgres(sql)
        return await self._conn.fetchval(statement.text, *statement.bind(params))

    async def execute(self, sql: str, /, **params: Any) -> int:
        statement = for_postgres(sql)
        status = await self._conn.execute(statement.text, *statement.bind(params))
        # The command tag, e.g. "UPDATE 3"; a tag without a count ("LOCK TABLE") changed no row.
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            statement = for_postgres(sql)
            await self._conn.executemany(statement.text, [statement.bind(row) for row in rows])

    async def now(self, epoch: int | None = None) -> datetime:
        """The fence (see the top), or the transaction's `now()`: one clock for every replica."""
        if epoch is not None:
            row = await self._conn.fetchrow(FENCE)
            check_fence(epoch, row, when)
            self._now = row["now"]
        if self._clock is not None:
            return self._clock()
        if self._now is None:
            self._now = await self._conn.fetchval("SELECT now()")
        return self._now


class PostgresDialect:
    """The store's database is a PostgreSQL database. Open with `await PostgresDialect.open(url, ...)`."""

    def __init__(self, pool: asyncpg.Pool, url: str, clock: Clock | None, *, read_only: bool = False) -> None:
        self._pool = pool
        self._url = url
        self._where = describe_url(url)
        self._clock = clock
        self.read_only = read_only
        self._leader: asyncpg.Connection | None = None
        self._leading: Leadership | None = None
        self._lead_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, clock: Clock | None = None, read_only: bool = False,
                   pool_size: int = POOL_SIZE) -> PostgresDialect:
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

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[PostgresTx]:
        read = not write or self.read_only
        # Reads see one snapshot (summary's counts agree with each other), as SQLite's do.
        isolation = "repeatable_read" if read else "read_committed"
        with anyio.CancelScope(shield=True), _translated(self._where):
            async with (self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn,
                        conn.transaction(isolation=isolation, readonly=read)):
                yield PostgresTx(conn, self._clock)

    async def retrying(self, body: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(TRANSIENT_RETRIES):
            try:
                return await body()
            except StoreBusy as exc:
                if not isinstance(exc.__cause__, asyncpg.TransactionRollbackError) or attempt + 1 == TRANSIENT_RETRIES:
                    raise
                await anyio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def when(self, value: Any) -> datetime | None:
        return when(value)

    async def schema_version(self) -> int:
        with _translated(self._where):
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                return await _read_version(conn)

    async def has_table(self, tx: Any, name: str) -> bool:
        return True  # an open PostgreSQL store is always at the current schema (a read-only open refuses an older)

    async def accepts_writes(self, tx: Any) -> bool:
        return bool(await tx.fetchval("SELECT NOT pg_is_in_recovery()"))  # a hot standby answers reads only

    async def insert_events(self, tx: Any, events: Sequence[NewEvent], now: datetime) -> set[str]:
        # One statement for the whole batch; ids follow the arrival order (WITH ORDINALITY), which is the order
        # claims take events due at the same time.
        rows = await tx.fetch(
            """INSERT INTO inbox_events (source, event_key, type, payload, next_attempt_at, received_at, updated_at)
               SELECT source, event_key, type, payload, CAST(:now AS timestamptz), CAST(:now AS timestamptz),
                      CAST(:now AS timestamptz)
               FROM unnest(CAST(:sources AS text[]), CAST(:keys AS text[]), CAST(:types AS text[]),
                           CAST(:payloads AS text[]))
                    WITH ORDINALITY AS batch (source, event_key, type, payload, position)
               ORDER BY position
               ON CONFLICT (event_key) DO NOTHING
               RETURNING event_key""",
            sources=[e.source for e in events], keys=[e.key for e in events], types=[e.type for e in events],
            payloads=[dumps(e.payload) for e in events], now=now)
        return {row["event_key"] for row in rows}

    async def claim(self, tx: Any, *, worker: str, limit: int, newest: int, until: datetime, now: datetime,
                    mapping_version: int | None, epoch: int | None) -> list[asyncpg.Record]:
        # SKIP LOCKED: rows another worker is claiming or settling right now are left to it, not waited on. The
        # newest first, then the oldest (those not already taken) for the rest.
        rows = await tx.fetch(
            """WITH newest AS (
                   SELECT id FROM inbox_events
                   WHERE (status = 'received' AND next_attempt_at <= :now)
                      OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch_or_0))
                   ORDER BY next_attempt_at DESC, id DESC
                   LIMIT :newest
                   FOR UPDATE SKIP LOCKED
               ), oldest AS (
                   SELECT id FROM inbox_events
                   WHERE ((status = 'received' AND next_attempt_at <= :now)
                      OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch_or_0)))
                     AND id NOT IN (SELECT id FROM newest)
                   ORDER BY next_attempt_at, id
                   LIMIT :rest
                   FOR UPDATE SKIP LOCKED
               ), due AS (SELECT id FROM newest UNION ALL SELECT id FROM oldest)
               UPDATE inbox_events AS e
               SET status = 'claimed', claimed_by = :worker, claimed_until = :until, attempts = e.attempts + 1,
                   updated_at = :now, mapping_version = coalesce(e.mapping_version, :mapping_version),
                   claim_epoch = :epoch
               FROM due WHERE e.id = due.id
               RETURNING e.*""",
            now=now, newest=newest, rest=limit - newest, worker=worker, until=until, mapping_version=mapping_version,
            epoch_or_0=epoch or 0, epoch=epoch)
        return sorted(rows, key=lambda row: (row["next_attempt_at"], row["id"]))

    async def lock_for_numbering(self, tx: Any, table: str) -> None:
        await tx.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")

    async def finished_per_minute(self, tx: Any, since: datetime) -> list[MinuteCount]:
        rows = await tx.fetch(
            """SELECT date_trunc('minute', updated_at, 'UTC') AS minute, count(*) AS n FROM inbox_events
               WHERE status = 'done' AND updated_at >= :since GROUP BY 1 ORDER BY 1""", since=since)
        return [MinuteCount(minute=row["minute"], count=row["n"]) for row in rows]

    async def tombstone_payloads(self, tx: Any, rows: Sequence[asyncpg.Record], tombstone: str) -> int:
        # The state is checked again: the rows were read without a lock.
        return int(await tx.execute(
            """UPDATE inbox_events SET payload = :tombstone
               WHERE id IN :ids AND status = 'done' AND payload <> :tombstone""",
            tombstone=tombstone, ids=[row["id"] for row in rows]))

    async def size_on_disk(self, tx: Any) -> tuple[int, int | None]:
        # Every table of this schema (a deployment may share the database with others), indexes and TOAST in.
        size = await tx.fetchval(
            """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c
               JOIN pg_namespace AS n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relkind = 'r'""")
        return int(size), None

    async def reclaim_space(self) -> None:
        """A plain VACUUM of the pruned tables: their dead rows' space is reused (autovacuum does the same, later).
        The files keep their size: only VACUUM FULL, which locks each table while it rewrites it, shrinks them,
        and that is left to the database's administrator."""
        with _translated(self._where):
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                # Not in a transaction (VACUUM cannot be), and allowed longer than a statement usually is.
                await conn.execute("VACUUM (ANALYZE) inbox_events, write_intents, audit_log",
                                   timeout=VACUUM_TIMEOUT_SECONDS)

    async def backup(self, destination: Path) -> None:
        """Not done by revdaemon on PostgreSQL: the database's own tools make a consistent copy while it is in
        use, and restore it (`pg_dump --format=custom`, or continuous archiving for point-in-time recovery)."""
        raise StoreError(
            f"the state store is the PostgreSQL database {self._where}: back it up with PostgreSQL's "
            f"own tools, e.g. `pg_dump --format=custom --file={destination} <database>` (restore with pg_restore), "
            "or the server's continuous archiving; `revdaemon backup` copies SQLite stores only"
        )

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
                row = await self._leader.fetchrow(TAKE_LEADERSHIP, replica_id,
                                                  self._clock() if self._clock is not None else None,
                                                  timeout=TAKEOVER_TIMEOUT_SECONDS)
            except _CONNECTION_ERRORS:
                await self._drop_leader(graceful=False)
                return None
            self._leading = to_record.leadership(row, when)
            return self._leading

    async def _drop_leader(self, *, graceful: bool) -> None:
        conn, self._leader, self._leading = self._leader, None, None
        if conn is None or conn.is_closed():
            return
        if graceful:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.close(timeout=LEAD_CHECK_TIMEOUT_SECONDS)  # ends the session: the lock is free at once
                return
        conn.terminate()


def when(value: datetime | None) -> datetime | None:
    return value  # asyncpg hands timestamptz back as aware datetimes


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
