"""Spike: the store's hot path (add_events, claim_events) today vs a SQLAlchemy Core async layer vs an own layer.

Run from the worktree with a Python that has sqlalchemy (a throwaway venv; the project does not depend on it):
    /tmp/sa/bin/python bench/store_layer_spike.py [--events 50000] [--batch 100] [--runs 3] [--pg]

Variants, each on a fresh database made by the real store's migrations (SqliteStore/PostgresStore.open):
- today:    the store's own add_events / claim_events.
- own:      the same SQL written once with :named parameters, compiled once to ? or $n (a tiny dialect layer),
            on the raw driver connection with the store's transaction shape (lock, shield, BEGIN IMMEDIATE).
- own_1:    as own, but claim as one UPDATE ... WHERE id IN (SELECT ... LIMIT) RETURNING * (SQLite >= 3.35);
            on PostgreSQL the store's statement already is one.
- sa_text:  SQLAlchemy AsyncEngine (pool of 1 on SQLite, BEGIN IMMEDIATE via the begin event), text() statements.
- sa_core:  SQLAlchemy Core constructs: dialect insert().on_conflict_do_nothing().returning() executed with a list
            of rows (insertmanyvalues), claim as update().where(id.in_(select ... with_for_update(skip_locked)))
            .returning(): one construct for both databases.
Figures: events/s of the calls (wall) and CPU seconds of this process per 10k events; best of --runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from revdaemon.store import postgres as pg_mod  # noqa: E402
from revdaemon.store import rows as to_record  # noqa: E402
from revdaemon.store import sqlite as sqlite_mod  # noqa: E402
from revdaemon.store.encoding import dumps, ts_text  # noqa: E402
from revdaemon.store.postgres import PostgresStore  # noqa: E402
from revdaemon.store.records import NewEvent  # noqa: E402
from revdaemon.store.sqlite import SqliteStore  # noqa: E402

LEASE = timedelta(minutes=5)
PAYLOAD = {"event": "subscription.updated", "data": {"id": "sub_0001", "account": "acc_42", "status": "active",
           "items": [{"sku": f"SKU-{i}", "qty": i, "price": 9.99 * i} for i in range(6)],
           "note": "x" * 400}}


# --- the own dialect layer: SQL once, named parameters, compiled per dialect at import ---------------------

class Sql:
    """`:name` parameters; `.sqlite` uses `?` in order, `.pg` uses `$n` (a name used twice is one number)."""
    _NAME = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")

    def __init__(self, text: str, *, pg_suffix: str = "") -> None:
        self.order = [m.group(1) for m in self._NAME.finditer(text)]
        self.sqlite = self._NAME.sub("?", text)
        names: dict[str, int] = {}
        self.pg = self._NAME.sub(lambda m: f"${names.setdefault(m.group(1), len(names) + 1)}", text + pg_suffix)
        self.pg_order = list(names)

    def sqlite_args(self, params: dict[str, Any]) -> list[Any]:
        return [params[n] for n in self.order]

    def pg_args(self, params: dict[str, Any]) -> list[Any]:
        return [params[n] for n in self.pg_order]


SELECT_DUE = Sql("""SELECT id FROM inbox_events
   WHERE (status = 'received' AND next_attempt_at <= :now)
      OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch0))
   ORDER BY next_attempt_at, id LIMIT :limit""")
CLAIM_ONE = Sql("""UPDATE inbox_events
   SET status = 'claimed', claimed_by = :worker, claimed_until = :until, attempts = attempts + 1,
       updated_at = :now, mapping_version = coalesce(mapping_version, :mv), claim_epoch = :epoch
   WHERE id IN (SELECT id FROM inbox_events
                WHERE (status = 'received' AND next_attempt_at <= :now)
                   OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch0))
                ORDER BY next_attempt_at, id LIMIT :limit)
   RETURNING *""")
INSERT_COLUMNS = "(source, event_key, type, payload, next_attempt_at, received_at, updated_at)"


def rows_of(events: list[NewEvent], now: str) -> list[tuple[Any, ...]]:
    return [(e.source, e.key, e.type, dumps(e.payload), now, now, now) for e in events]


class OwnSqlite:
    """The store's transaction shape on the raw aiosqlite connection, statements through `Sql`."""

    def __init__(self, store: SqliteStore) -> None:
        self.store, self.conn = store, store._conn

    async def add_events(self, events: list[NewEvent]) -> list[bool]:
        now = ts_text(datetime.now(UTC))
        rows = rows_of(events, now)
        async with self.store._tx() as conn:
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(rows))
            async with conn.execute(f"INSERT INTO inbox_events {INSERT_COLUMNS} VALUES {values} "
                                    "ON CONFLICT (event_key) DO NOTHING RETURNING event_key",
                                    [v for r in rows for v in r]) as cur:
                stored = {r[0] for r in await cur.fetchall()}
        return [e.key in stored for e in events]

    async def claim_events(self, worker: str, limit: int) -> int:
        now = datetime.now(UTC)
        p = {"now": ts_text(now), "epoch0": 0, "limit": limit, "worker": worker, "until": ts_text(now + LEASE),
             "mv": None, "epoch": None}
        async with self.store._tx() as conn:
            async with conn.execute(SELECT_DUE.sqlite, SELECT_DUE.sqlite_args(p)) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            await conn.execute(f"""UPDATE inbox_events SET status = 'claimed', claimed_by = ?, claimed_until = ?,
                    attempts = attempts + 1, updated_at = ?, mapping_version = coalesce(mapping_version, ?),
                    claim_epoch = ? WHERE id IN ({marks})""", (worker, p["until"], p["now"], None, None, *ids))
            async with conn.execute(f"SELECT * FROM inbox_events WHERE id IN ({marks}) ORDER BY next_attempt_at, id",
                                    ids) as cur:
                return len([sqlite_mod._event(r) for r in await cur.fetchall()])

    async def claim_events_1(self, worker: str, limit: int) -> int:
        now = datetime.now(UTC)
        p = {"now": ts_text(now), "epoch0": 0, "limit": limit, "worker": worker, "until": ts_text(now + LEASE),
             "mv": None, "epoch": None}
        async with self.store._tx() as conn, conn.execute(CLAIM_ONE.sqlite, CLAIM_ONE.sqlite_args(p)) as cur:
            events = [sqlite_mod._event(r) for r in await cur.fetchall()]
        events.sort(key=lambda e: (e.next_attempt_at, e.id))
        return len(events)


class OwnPostgres:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def add_events(self, events: list[NewEvent]) -> list[bool]:
        async with self.store._tx() as conn:
            rows = await conn.fetch(ADD_PG.pg, *ADD_PG.pg_args({
                "sources": [e.source for e in events], "keys": [e.key for e in events],
                "types": [e.type for e in events], "payloads": [dumps(e.payload) for e in events], "now": None}))
        stored = {r[0] for r in rows}
        return [e.key in stored for e in events]

    async def claim_events(self, worker: str, limit: int) -> int:
        async with self.store._tx() as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(CLAIM_PG.pg, *CLAIM_PG.pg_args({
                "now": now, "epoch0": 0, "limit": limit, "worker": worker, "until": now + LEASE, "mv": None,
                "epoch": None}))
        return len(sorted((pg_mod._event(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id)))


ADD_PG = Sql("""INSERT INTO inbox_events """ + INSERT_COLUMNS + """
   SELECT source, event_key, type, payload, at, at, at
   FROM (VALUES (coalesce(CAST(:now AS timestamptz), now()))) AS clock (at),
        unnest(CAST(:sources AS text[]), CAST(:keys AS text[]), CAST(:types AS text[]), CAST(:payloads AS text[]))
        WITH ORDINALITY AS batch (source, event_key, type, payload, position)
   ORDER BY position
   ON CONFLICT (event_key) DO NOTHING RETURNING event_key""")
# PostgreSQL's claim in the own layer: today's statement, with named parameters.
CLAIM_PG = Sql("""WITH due AS (
       SELECT id FROM inbox_events
       WHERE (status = 'received' AND next_attempt_at <= :now)
          OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch0))
       ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED)
   UPDATE inbox_events AS e
   SET status = 'claimed', claimed_by = :worker, claimed_until = :until, attempts = e.attempts + 1,
       updated_at = :now, mapping_version = coalesce(e.mapping_version, :mv), claim_epoch = :epoch
   FROM due WHERE e.id = due.id RETURNING e.*""")
# The single-statement form for both (own_1 on SQLite): the common statement plus the one dialect clause.
CLAIM_ONE.pg = re.sub(r"(LIMIT \$\d+)\)", r"\1 FOR UPDATE SKIP LOCKED)", CLAIM_ONE.pg)


# --- SQLAlchemy ---------------------------------------------------------------------------------------

def inbox_table(time_type: Any) -> sa.Table:
    """The columns the hot path touches; times are TEXT on SQLite, TIMESTAMPTZ on PostgreSQL."""
    return sa.Table(
        "inbox_events", sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("source", sa.Text),
        sa.Column("event_key", sa.Text), sa.Column("type", sa.Text), sa.Column("payload", sa.Text),
        sa.Column("status", sa.Text), sa.Column("attempts", sa.Integer), sa.Column("next_attempt_at", time_type),
        sa.Column("last_error", sa.Text), sa.Column("claimed_by", sa.Text), sa.Column("claimed_until", time_type),
        sa.Column("received_at", time_type), sa.Column("updated_at", time_type),
        sa.Column("conflict_id", sa.BigInteger), sa.Column("mapping_version", sa.Integer),
        sa.Column("claim_epoch", sa.Integer),
    )


INBOX_SQLITE = inbox_table(sa.Text)
INBOX_PG = inbox_table(sa.DateTime(timezone=True))


def sa_sqlite_engine(path: Path) -> Any:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=1, max_overflow=0)

    @sa_event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in ("PRAGMA busy_timeout = 5000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                       "PRAGMA foreign_keys = ON"):
            cur.execute(pragma)
        cur.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SaLayer:
    """One implementation for both; `dialect_insert` and the time type are the only dialect parts here."""

    def __init__(self, engine: Any, *, pg: bool) -> None:
        self.engine, self.pg = engine, pg
        self.insert = pg_dialect.insert if pg else sqlite_dialect.insert
        self.lock = anyio.Lock()
        self.inbox = INBOX_PG if pg else INBOX_SQLITE

    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now if self.pg else ts_text(now)

    def _plus(self, now: Any) -> Any:
        return now + LEASE if self.pg else ts_text(datetime.fromisoformat(now) + LEASE)

    async def add_core(self, events: list[NewEvent]) -> list[bool]:
        now = self._now()
        rows = [{"source": e.source, "event_key": e.key, "type": e.type, "payload": dumps(e.payload),
                 "next_attempt_at": now, "received_at": now, "updated_at": now} for e in events]
        stmt = (self.insert(self.inbox).on_conflict_do_nothing(index_elements=["event_key"])
                .returning(self.inbox.c.event_key))
        async with self.lock:
            with anyio.CancelScope(shield=True):
                async with self.engine.begin() as conn:
                    stored = set((await conn.execute(stmt, rows)).scalars())
        return [e.key in stored for e in events]

    async def add_text(self, events: list[NewEvent]) -> list[bool]:
        now = ts_text(datetime.now(UTC))
        names = ", ".join(f"(:s{i}, :k{i}, :t{i}, :p{i}, :n, :n, :n)" for i in range(len(events)))
        params: dict[str, Any] = {"n": now}
        for i, e in enumerate(events):
            params.update({f"s{i}": e.source, f"k{i}": e.key, f"t{i}": e.type, f"p{i}": dumps(e.payload)})
        stmt = sa.text(f"INSERT INTO inbox_events {INSERT_COLUMNS} VALUES {names} "
                       "ON CONFLICT (event_key) DO NOTHING RETURNING event_key")
        async with self.lock:
            with anyio.CancelScope(shield=True):
                async with self.engine.begin() as conn:
                    stored = set((await conn.execute(stmt, params)).scalars())
        return [e.key in stored for e in events]

    async def claim_core(self, worker: str, limit: int) -> int:
        now = self._now()
        t = self.inbox.c
        due = (sa.select(t.id).where(sa.or_(
            sa.and_(t.status == "received", t.next_attempt_at <= now),
            sa.and_(t.status == "claimed", sa.or_(t.claimed_until <= now, sa.func.coalesce(t.claim_epoch, 0) < 0))))
            .order_by(t.next_attempt_at, t.id).limit(limit).with_for_update(skip_locked=True))
        stmt = (sa.update(self.inbox).where(t.id.in_(due)).values(
            status="claimed", claimed_by=worker, claimed_until=self._plus(now), attempts=t.attempts + 1,
            updated_at=now, mapping_version=sa.func.coalesce(t.mapping_version, None), claim_epoch=None)
            .returning(*self.inbox.c))
        async with self.lock:
            with anyio.CancelScope(shield=True):
                async with self.engine.begin() as conn:
                    rows = (await conn.execute(stmt)).all()
        when = pg_mod._when if self.pg else sqlite_mod._dt
        events = sorted((to_record.event(r._mapping, when) for r in rows), key=lambda e: (e.next_attempt_at, e.id))
        return len(events)

    async def claim_text(self, worker: str, limit: int) -> int:
        now = datetime.now(UTC)
        p = {"now": ts_text(now), "epoch0": 0, "limit": limit, "worker": worker, "until": ts_text(now + LEASE),
             "mv": None, "epoch": None}
        async with self.lock:
            with anyio.CancelScope(shield=True):
                async with self.engine.begin() as conn:
                    ids = list((await conn.execute(sa.text(SELECT_DUE_TEXT), p)).scalars())
                    if not ids:
                        return 0
                    await conn.execute(CLAIM_BY_IDS, {**p, "ids": ids})
                    rows = (await conn.execute(SELECT_BY_IDS, {"ids": ids})).all()
                    return len([to_record.event(r._mapping, sqlite_mod._dt) for r in rows])


SELECT_DUE_TEXT = """SELECT id FROM inbox_events
   WHERE (status = 'received' AND next_attempt_at <= :now)
      OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch0))
   ORDER BY next_attempt_at, id LIMIT :limit"""
CLAIM_BY_IDS = sa.text("""UPDATE inbox_events SET status = 'claimed', claimed_by = :worker, claimed_until = :until,
    attempts = attempts + 1, updated_at = :now, mapping_version = coalesce(mapping_version, :mv),
    claim_epoch = :epoch WHERE id IN :ids""").bindparams(sa.bindparam("ids", expanding=True))
SELECT_BY_IDS = sa.text("SELECT * FROM inbox_events WHERE id IN :ids ORDER BY next_attempt_at, id").bindparams(
    sa.bindparam("ids", expanding=True))


# --- the measurement -------------------------------------------------------------------------------------

def make_events(n: int, run: int) -> list[NewEvent]:
    return [NewEvent(source="nue", key=f"r{run}-e{i}", type="subscription.updated", payload={**PAYLOAD, "n": i})
            for i in range(n)]


async def timed(calls: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    n = await calls()
    return time.perf_counter() - wall, time.process_time() - cpu, n


async def one_run(variant: str, backend: str, args: argparse.Namespace, run: int,
                  pg_url: str | None) -> dict[str, Any]:
    events = make_events(args.events, run)
    batches = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        store: Any = await (SqliteStore.open(path) if backend == "sqlite" else PostgresStore.open(pg_url or ""))
        engine = None
        try:
            if backend == "postgres":  # a fresh table per run
                async with store._tx() as conn:
                    await conn.execute("TRUNCATE inbox_events RESTART IDENTITY CASCADE")
            if variant.startswith("sa"):
                if backend == "sqlite":
                    engine = sa_sqlite_engine(path)
                else:
                    engine = create_async_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"),
                                                 pool_size=10)
                layer = SaLayer(engine, pg=backend == "postgres")
                add = layer.add_core if variant == "sa_core" else layer.add_text
                claim = layer.claim_core if variant == "sa_core" else layer.claim_text
            elif variant.startswith("own"):
                own = OwnSqlite(store) if backend == "sqlite" else OwnPostgres(store)
                add = own.add_events
                claim = own.claim_events_1 if variant == "own_1" else own.claim_events
            else:
                async def add(batch: list[NewEvent]) -> list[bool]:
                    return await store.add_events(batch)

                async def claim(worker: str, limit: int) -> int:
                    return len(await store.claim_events(worker=worker, limit=limit, lease=LEASE))

            await add(make_events(10, 1000 + run))  # warm: connection, statement caches
            await claim("warm", 10)

            async def adding() -> int:
                stored = 0
                for batch in batches:
                    stored += sum(await add(batch))
                return stored

            async def claiming() -> int:
                claimed = 0
                while True:
                    got = await claim("w1", args.batch)
                    if not got:
                        return claimed
                    claimed += got

            add_wall, add_cpu, stored = await timed(adding)
            claim_wall, claim_cpu, claimed = await timed(claiming)
            assert stored == args.events and claimed == args.events, (stored, claimed)
        finally:
            if engine is not None:
                await engine.dispose()
            await store.close()
    per10k = 10_000 / args.events
    return {"add_eps": args.events / add_wall, "add_cpu10k": add_cpu * per10k,
            "claim_eps": args.events / claim_wall, "claim_cpu10k": claim_cpu * per10k}


async def bench(backend: str, variants: list[str], args: argparse.Namespace, pg_url: str | None) -> list[dict]:
    results = []
    for variant in variants:
        runs = [await one_run(variant, backend, args, run, pg_url) for run in range(args.runs)]
        best = {"backend": backend, "variant": variant,
                "add_eps": max(r["add_eps"] for r in runs), "add_cpu10k": min(r["add_cpu10k"] for r in runs),
                "claim_eps": max(r["claim_eps"] for r in runs), "claim_cpu10k": min(r["claim_cpu10k"] for r in runs)}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()}), flush=True)
        results.append(best)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (tests/pg_server.py, fsync on)")
    parser.add_argument("--variants", default="today,own,own_1,sa_text,sa_core")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    variants = args.variants.split(",")
    print(f"sqlite {sqlite3.sqlite_version}, sqlalchemy {sa.__version__}; {args.events} events, batches of "
          f"{args.batch}, best of {args.runs}", flush=True)
    if not args.no_sqlite:
        anyio.run(bench, "sqlite", variants, args, None)
    if args.pg:
        from tests.pg_server import pg_server
        with pg_server(durable=True) as server:
            if isinstance(server, str):
                sys.exit(f"no PostgreSQL: {server}")
            name, url = server.create_database()
            try:
                # own_1 and sa_text are SQLite statements (PostgreSQL's own layer and sa_core cover it there)
                anyio.run(bench, "postgres", [v for v in variants if v not in ("own_1", "sa_text")], args, url)
            finally:
                server.drop_database(name)


if __name__ == "__main__":
    main()
