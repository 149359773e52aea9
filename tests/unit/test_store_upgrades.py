"""Upgrades from every released schema: a database the released code made at version v is opened by today's store,
migrated to SCHEMA_VERSION, keeps every row it held, and works.

Released versions: SQLite 1 to 10 (the file numbered by `PRAGMA user_version`); PostgreSQL 1 to 6 in its own count
(kept in `revdaemon_schema`), which are versions 5 to 10 of the shared list. A released database is built here with
the raw drivers as the released code left it: the scripts of store/migrations.py up to its version, then one row (a
few where a status matters) in every table it had, in the columns it had. After the upgrade everything is read
through the Store API only, so these tests hold for any implementation of it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest

from revdaemon.store import Store, open_store
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION
from revdaemon.store.records import (
    AuditEntry,
    ConflictRecord,
    ConflictStatus,
    Cursor,
    DeadLetter,
    Event,
    Leadership,
    Link,
    MappingVersion,
    NewAuditEntry,
    NewEvent,
    NewIntent,
    Replica,
    ReplicaBeat,
    Resolution,
    SyncedRecord,
    WriteIntent,
)
from revdaemon.store.states import EventStatus, IntentStatus
from tests.unit.conftest import FakeClock

pytestmark = pytest.mark.anyio

# PostgreSQL's version table as the released code made it (store/postgres.py's VERSION_TABLE). A copy: a released
# database is what it was, whatever the store's code becomes.
PG_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS revdaemon_schema (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    version  INTEGER NOT NULL
)
"""
PG_OWN_OFFSET = 4  # PostgreSQL's own number k is version k + 4 (its first release held SQLite's 1 to 5)
SQLITE_RELEASED = range(1, 11)
PG_OWN_RELEASED = range(1, 7)

LEASE = timedelta(minutes=5)

# The released rows' times: T0 is the first event's arrival, 30 minutes before midnight UTC, so a store dated by
# its last event, or by local time ahead of UTC, would read another day. Microseconds are kept on both databases.
T0 = datetime(2025, 3, 4, 23, 30, 0, 123456, tzinfo=UTC)


def t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


FIRST_EVENT_DAY = date(2025, 3, 4)
STORE_META_DAY = date(2025, 1, 15)  # the day a store of version 8 or later recorded itself (not its first event's)
SF_REF = "salesforce:Account:001000000000001AAA"
NUE_CUSTOMER = "cust-1"
SF_ACCOUNT = "001000000000001AAA"
ENTITY = "nue:Subscription:sub-1"
MAPPING_TEXT = "flows:\n  subscription_status: {}\n"


# --- the table of expectations: what a released store at `version` holds, as the Store API must read it -------


@dataclass(frozen=True)
class Held:
    events: tuple[Event, ...]  # ids 1.. in this order
    conflict_of: Mapping[int, int]  # event id -> the conflict it waits on (inbox_events.conflict_id, from 3)
    cursor: Cursor
    link: Link
    intents: tuple[WriteIntent, ...]
    conflicts: tuple[ConflictRecord, ...]  # ids 1..
    letters: tuple[DeadLetter, ...]  # ids 1..
    audit: AuditEntry
    entity_version: str | None  # from 2
    synced: dict[str, SyncedRecord]  # from 3
    mapping: MappingVersion | None  # from 4
    replica: Replica | None  # from 5
    created_on: date
    leadership: Leadership | None  # from 9 (a led store); before, migration 9 makes the row nobody has led

    @property
    def open_conflict(self) -> ConflictRecord:
        [conflict] = [c for c in self.conflicts if c.status is ConflictStatus.OPEN]
        return conflict

    @property
    def open_letter(self) -> DeadLetter:
        [letter] = [d for d in self.letters if d.replayed_at is None]
        return letter


def held(version: int) -> Held:
    """The rows a store of `version` holds. A value a column of that version cannot hold is the one the upgrade
    must give it: ever_sent from 7 (migration 7 derives it from the status), created_on from 8 (migration 8: the
    first event's day), mapping versions from 4, epochs from 9."""
    pinned = 1 if version >= 4 else None  # the done and the dead event were planned with mapping version 1

    def event(id_: int, key: str, status: EventStatus, received: int, **changes: Any) -> Event:
        base = Event(id=id_, source="nue_webhook", key=key, type="subscription.updated",
                     payload={"id": key, "mrr": "100.00", "items": [1, 2]}, status=status, attempts=1,
                     next_attempt_at=t(received + 1), last_error=None, claimed_by=None, claimed_until=None,
                     received_at=t(received), updated_at=t(received + 2))
        return replace(base, **changes)

    def intent(key: str, status: IntentStatus, minute: int, **changes: Any) -> WriteIntent:
        base = WriteIntent(key=key, system="salesforce", operation="SfUpdate", target=f"Account/{SF_ACCOUNT}",
                           request={"MRR__c": "120.00"}, event_id=2, status=status, result=None, error=None,
                           created_at=t(minute), updated_at=t(minute + 1),
                           ever_sent=status is not IntentStatus.RECORDED, epoch=2 if version >= 9 else None)
        return replace(base, **changes)

    conflict = ConflictRecord(
        id=1, event_id=2, flow="subscription_status", record_ref=SF_REF, reason="MRR__c was edited in Salesforce",
        nue_values={"MRR__c": "100.00"}, salesforce_values={"MRR__c": "120.00"}, synced_values={"MRR__c": "90.00"},
        status=ConflictStatus.RESOLVED, resolution=Resolution.SKIP, resolved_by="ops@example", comment="not ours",
        created_at=t(12), resolved_at=t(13))
    letter = DeadLetter(
        id=1, event_id=2, system="salesforce", operation="create Account", error="Required fields are missing: [Name]",
        error_code="REQUIRED_FIELD_MISSING", status=400, record_ref="nue:Customer:cust-1", request={"Name": None},
        created_at=t(14), replayed_at=t(15))
    return Held(
        events=(
            event(1, "nue:sub-1:1", EventStatus.RECEIVED, 0, attempts=2, last_error="503 Service Unavailable"),
            event(2, "nue:sub-1:2", EventStatus.DONE, 10, source="salesforce_poll", type="account.changed",
                  claimed_by="w1", claimed_until=t(16), mapping_version=pinned),
            event(3, "nue:cust-1:1", EventStatus.DEAD, 20, attempts=3, last_error="REQUIRED_FIELD_MISSING",
                  mapping_version=pinned),
            # After midnight UTC: the store's first day is the first event's, not the last one's.
            event(4, "nue:sub-1:3", EventStatus.CONFLICT, 35, payload={}),
        ),
        conflict_of={4: 2},
        cursor=Cursor(name="nue:subscriptions", value="2025-03-04T23:00:00Z", updated_at=t(3)),
        link=Link(object_type="account", nue_id=NUE_CUSTOMER, salesforce_id=SF_ACCOUNT),
        intents=(
            intent("k-sent", IntentStatus.SENT, 21, settle_after=t(40) if version >= 7 else None),
            intent("k-confirmed", IntentStatus.CONFIRMED, 23, result={"id": SF_ACCOUNT, "success": True}),
            intent("k-failed", IntentStatus.FAILED, 25, error="UNABLE_TO_LOCK_ROW", event_id=None),
            intent("k-recorded", IntentStatus.RECORDED, 27, event_id=1, operation="NueCreateOrder"),
        ),
        conflicts=(
            conflict,  # an older one about the same record, decided: no upgrade touches it
            replace(conflict, id=2, event_id=4, reason="MRR__c edited again", status=ConflictStatus.OPEN,
                    resolution=None, resolved_by=None, comment=None, created_at=t(36), resolved_at=None),
        ),
        letters=(letter, replace(letter, id=2, event_id=3, created_at=t(22), replayed_at=None)),
        audit=AuditEntry(id=1, at=t(24), system="salesforce", operation="SfUpdate", target=f"Account/{SF_ACCOUNT}",
                         outcome="ok", idem_key="k-confirmed", event_id=2, record_ref=SF_REF, status=200,
                         detail={"request": {"MRR__c": "120.00"}, "response": {"success": True}},
                         mapping_version=pinned),
        entity_version="2025-03-04T23:31:00.000000Z" if version >= 2 else None,
        synced=({SF_REF: SyncedRecord(values={"MRR__c": "90.00", "Status__c": "Active"},
                                      declined={"Status__c": "Churned"})} if version >= 3 else {}),
        mapping=MappingVersion(version=1, content_hash="sha256:0f1e", text=MAPPING_TEXT, created_at=t(-60))
        if version >= 4 else None,
        replica=Replica(id="replica-a", host="box-1", pid=4242, started_at=t(-30), last_heartbeat=t(38),
                        is_leader=True) if version >= 5 else None,
        created_on=STORE_META_DAY if version >= 8 else FIRST_EVENT_DAY,
        leadership=Leadership(epoch=2, replica_id="replica-a", since=t(-29)) if version >= 9 else None,
    )


# --- building a released database ----------------------------------------------------------------------------


def as_json(value: object) -> str | None:
    """JSON as the store writes it: compact, keys sorted."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


class Rows(Protocol):
    """Raw writes into a database being built, in Python values (each backend converts timestamps its way)."""

    async def insert(self, table: str, row: Mapping[str, object]) -> int | None: ...

    async def update(self, table: str, where: Mapping[str, object], values: Mapping[str, object]) -> None: ...


class SqliteRows:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _value(value: object) -> object:
        # Fixed-width UTC text (store/encoding.py ts_text), e.g. 2026-01-01T12:00:00.000000+00:00.
        return value.astimezone(UTC).isoformat(timespec="microseconds") if isinstance(value, datetime) else value

    async def insert(self, table: str, row: Mapping[str, object]) -> int | None:
        marks = ", ".join("?" * len(row))
        cursor = self.conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})",
                                   [self._value(v) for v in row.values()])
        return cursor.lastrowid

    async def update(self, table: str, where: Mapping[str, object], values: Mapping[str, object]) -> None:
        sets = ", ".join(f"{column} = ?" for column in values)
        conditions = " AND ".join(f"{column} = ?" for column in where) or "true"
        self.conn.execute(f"UPDATE {table} SET {sets} WHERE {conditions}",
                          [self._value(v) for v in (*values.values(), *where.values())])


class PostgresRows:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(self, table: str, row: Mapping[str, object]) -> int | None:
        marks = ", ".join(f"${n}" for n in range(1, len(row) + 1))
        returning = " RETURNING id" if table in ("inbox_events", "conflicts", "dead_letters", "audit_log") else ""
        value = await self.conn.fetchval(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks}){returning}", *row.values())
        return int(value) if value is not None else None

    async def update(self, table: str, where: Mapping[str, object], values: Mapping[str, object]) -> None:
        sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(values, 1))
        conditions = " AND ".join(f"{column} = ${n}" for n, column in enumerate(where, len(values) + 1)) or "true"
        await self.conn.execute(f"UPDATE {table} SET {sets} WHERE {conditions}", *values.values(), *where.values())


async def fill(db: Rows, version: int, rows: Held) -> None:
    """Write `rows` as the released code of `version` did: only the tables and columns that version had."""
    if rows.mapping is not None:
        await db.insert("mapping_versions", {"version": rows.mapping.version, "content_hash": rows.mapping.content_hash,
                                             "text": rows.mapping.text, "created_at": rows.mapping.created_at})
    for e in rows.events:
        row: dict[str, object] = {
            "source": e.source, "event_key": e.key, "type": e.type, "payload": as_json(e.payload),
            "status": e.status.value, "attempts": e.attempts, "next_attempt_at": e.next_attempt_at,
            "last_error": e.last_error, "claimed_by": e.claimed_by, "claimed_until": e.claimed_until,
            "received_at": e.received_at, "updated_at": e.updated_at}
        if version >= 4:
            row["mapping_version"] = e.mapping_version
        assert await db.insert("inbox_events", row) == e.id
    await db.insert("cursors", {"name": rows.cursor.name, "value": rows.cursor.value,
                                "updated_at": rows.cursor.updated_at})
    await db.insert("id_links", {"object_type": rows.link.object_type, "nue_id": rows.link.nue_id,
                                 "salesforce_id": rows.link.salesforce_id, "created_at": t(5)})
    for i in rows.intents:
        row = {"idem_key": i.key, "system": i.system, "operation": i.operation, "target": i.target,
               "request": as_json(i.request), "event_id": i.event_id, "status": i.status.value,
               "result": as_json(i.result), "error": i.error, "created_at": i.created_at, "updated_at": i.updated_at}
        if 6 <= version <= 8:  # a send lease of two active replicas; migration 9 drops the columns
            row |= {"owner": "replica-a" if i.status is IntentStatus.SENT else None,
                    "owned_until": t(30) if i.status is IntentStatus.SENT else None}
        if version >= 7:
            row |= {"ever_sent": i.ever_sent, "settle_after": i.settle_after}
        if version >= 9:
            row["epoch"] = i.epoch
        await db.insert("write_intents", row)
    for c in rows.conflicts:
        assert await db.insert("conflicts", {
            "event_id": c.event_id, "flow": c.flow, "record_ref": c.record_ref, "reason": c.reason,
            "nue_values": as_json(c.nue_values), "salesforce_values": as_json(c.salesforce_values),
            "synced_values": as_json(c.synced_values), "status": c.status.value,
            "resolution": c.resolution.value if c.resolution else None, "resolved_by": c.resolved_by,
            "comment": c.comment, "created_at": c.created_at, "resolved_at": c.resolved_at}) == c.id
    if version >= 3:  # before 3 an event found its conflict by the conflict's event_id alone
        for event_id, conflict_id in rows.conflict_of.items():
            await db.update("inbox_events", {"id": event_id}, {"conflict_id": conflict_id})
    for d in rows.letters:
        assert await db.insert("dead_letters", {
            "event_id": d.event_id, "system": d.system, "operation": d.operation, "error": d.error,
            "error_code": d.error_code, "status": d.status, "record_ref": d.record_ref,
            "request": as_json(d.request), "created_at": d.created_at, "replayed_at": d.replayed_at}) == d.id
    a = rows.audit
    assert await db.insert("audit_log", {
        "at": a.at, "system": a.system, "operation": a.operation, "target": a.target, "outcome": a.outcome,
        "idem_key": a.idem_key, "event_id": a.event_id, "record_ref": a.record_ref, "status": a.status,
        "detail": as_json(a.detail), "mapping_version": a.mapping_version}) == a.id
    if rows.entity_version is not None:
        await db.insert("entity_versions", {"entity": ENTITY, "version": rows.entity_version, "updated_at": t(7)})
    for ref, synced in rows.synced.items():
        for field, value in synced.values.items():
            await db.insert("synced_values", {"record_ref": ref, "field": field, "value": as_json(value),
                                              "declined": as_json(synced.declined.get(field)), "updated_at": t(8)})
    if rows.replica is not None:
        r = rows.replica
        await db.insert("replicas", {"replica_id": r.id, "host": r.host, "pid": r.pid, "started_at": r.started_at,
                                     "last_heartbeat": r.last_heartbeat, "is_leader": r.is_leader})
    if version >= 8:
        await db.insert("store_meta", {"name": "created_on", "value": rows.created_on.isoformat()})
    if rows.leadership is not None:  # the row migration 9 made, as a leader left it
        await db.update("leadership", {}, {"epoch": rows.leadership.epoch, "replica_id": rows.leadership.replica_id,
                                           "since": rows.leadership.since})


def sqlite_schema(path: Path, version: int) -> sqlite3.Connection:
    """A SQLite file at `version` as the released code made it: each script whole, then the file's number."""
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        conn.executescript(migration.sqlite or "")
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


async def build_sqlite(path: Path, version: int, rows: Held) -> None:
    conn = sqlite_schema(path, version)
    try:
        await fill(SqliteRows(conn), version, rows)
        conn.commit()
    finally:
        conn.close()


async def build_postgres(url: str, own: int, rows: Held) -> None:
    """A PostgreSQL database at its own number `own` as the released code made it: the version table, the scripts
    of versions 5 to own + 4, its own number, then `rows`."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(PG_VERSION_TABLE)
            for migration in MIGRATIONS[PG_OWN_OFFSET:own + PG_OWN_OFFSET]:
                if migration.postgres is not None:
                    await conn.execute(migration.postgres)
            await conn.execute("INSERT INTO revdaemon_schema (version) VALUES ($1)", own)
            await fill(PostgresRows(conn), own + PG_OWN_OFFSET, rows)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Released:
    backend: str
    version: int  # in the shared list
    target: Path | str

    async def build(self, rows: Held) -> None:
        if isinstance(self.target, Path):
            await build_sqlite(self.target, self.version, rows)
        else:
            await build_postgres(self.target, self.version - PG_OWN_OFFSET, rows)


RELEASED = [pytest.param(("sqlite", v), id=f"sqlite-v{v}") for v in SQLITE_RELEASED] + [
    pytest.param(("postgres", own + PG_OWN_OFFSET), id=f"postgres-own{own}=v{own + PG_OWN_OFFSET}")
    for own in PG_OWN_RELEASED
]


@pytest.fixture
def released(request: pytest.FixtureRequest, tmp_path: Path) -> Released:
    """Where a released database of the parametrised backend and version is to be built (not built yet)."""
    backend, version = request.param
    target: Path | str = tmp_path / "db.sqlite3" if backend == "sqlite" else request.getfixturevalue("pg_url")
    return Released(backend, version, target)


# --- reading back ------------------------------------------------------------------------------------------


async def read_back(store: Store) -> dict[str, object]:
    """Everything the store holds that the released rows touch, through the Store API."""
    events = await store.list_events(limit=100)
    return {
        "schema_version": await store.schema_version(),
        "events": sorted(events, key=lambda e: e.id),
        "cursors": await store.list_cursors(),
        "links": await store.links_of(NUE_CUSTOMER) + await store.links_of(SF_ACCOUNT),  # one link, found both ways
        # The intents of the events, and the one of no event.
        "intents": sorted([*await store.list_intents(event_ids=[e.id for e in events]),
                           await store.get_intent("k-failed")], key=lambda i: i.key if i else ""),
        "conflicts": sorted(await store.list_conflicts(status=None), key=lambda c: c.id),
        "letters": sorted(await store.list_dead_letters(include_replayed=True), key=lambda d: d.id),
        "writes": sorted(await store.list_writes(limit=100), key=lambda a: a.id),
        "entity_version": await store.get_entity_version(ENTITY),
        "synced": await store.get_synced([SF_REF]),
        "mappings": await store.list_mappings(),
        "replicas": await store.list_replicas(),
        "created_on": await store.created_on(),
        "leadership": await store.leadership(),
    }


def as_read(rows: Held) -> dict[str, object]:
    """What `read_back` must answer right after the upgrade of a store holding `rows`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "events": list(rows.events),
        "cursors": [rows.cursor],
        "links": [rows.link, rows.link],
        "intents": sorted(rows.intents, key=lambda i: i.key),
        "conflicts": list(rows.conflicts),
        "letters": list(rows.letters),
        "writes": [rows.audit],
        "entity_version": rows.entity_version,
        "synced": rows.synced,
        "mappings": [rows.mapping] if rows.mapping else [],
        "replicas": [rows.replica] if rows.replica else [],
        "created_on": rows.created_on,
        "leadership": rows.leadership,
    }


# --- the upgrade from each released version ---------------------------------------------------------------


@pytest.mark.parametrize("released", RELEASED, indirect=True)
async def test_a_released_store_is_upgraded_keeps_its_rows_and_works(released: Released, clock: FakeClock) -> None:
    rows = held(released.version)
    await released.build(rows)

    store = await open_store(released.target, clock=clock)
    try:
        # Migrated, and every released row reads back as it was written (or as its version's upgrade defines it).
        assert await read_back(store) == as_read(rows)
        for e in rows.events:
            assert await store.get_event(e.id) == e
            assert await store.find_event(e.key) == e
        for i in rows.intents:
            assert await store.get_intent(i.key) == i
        assert await store.get_cursor(rows.cursor.name) == rows.cursor
        assert await store.find_link("account", nue_id=NUE_CUSTOMER) == rows.link
        assert await store.find_link("account", salesforce_id=SF_ACCOUNT) == rows.link
        for c in rows.conflicts:
            assert await store.get_conflict(c.id) == c
        assert [c.id for c in await store.list_conflicts()] == [rows.open_conflict.id]
        for d in rows.letters:
            assert await store.get_dead_letter(d.id) == d
        assert await store.list_dead_letters() == [rows.open_letter]
        assert await store.list_writes(record_ref=SF_REF) == [rows.audit]

        # The upgraded store works: new events are claimed with the old one that is due, and finished.
        await store.add_events([NewEvent(source="nue_webhook", key="nue:sub-9:1", type="subscription.created")])
        claimed = await store.claim_events(worker="w2", limit=10, lease=LEASE)
        assert [e.key for e in claimed] == ["nue:sub-1:1", "nue:sub-9:1"]
        assert await store.complete_events([e.id for e in claimed], claimed_by="w2") == []
        # The open conflict is decided: its event goes back to the inbox.
        conflict = rows.open_conflict
        decided = await store.resolve_conflict(conflict.id, resolution=Resolution.TAKE_NUE, actor="ops@example")
        assert decided.status is ConflictStatus.RESOLVED and decided.resolution is Resolution.TAKE_NUE
        back = await store.get_event(decided.event_id or 0)
        assert back is not None and back.status is EventStatus.RECEIVED
        # The dead letter is replayed, keeping the mapping version its event was planned with.
        replayed = await store.replay_dead_letter(rows.open_letter.id)
        assert replayed.id == rows.open_letter.event_id and replayed.status is EventStatus.RECEIVED
        assert replayed.attempts == 0 and replayed.mapping_version == rows.events[2].mapping_version
        # Every table takes a write.
        new = await store.record_intent(NewIntent(key="k-new", system="nue", operation="NueCreateOrder",
                                                  target="Order", request={"a": 1}, event_id=claimed[1].id))
        await store.begin_send([new.key])
        await store.confirm_intent(new.key, {"id": "o-9"})
        after = await store.get_intent(new.key)
        assert after is not None and after.status is IntentStatus.CONFIRMED and after.ever_sent
        await store.put_link(Link(object_type="account", nue_id="cust-9", salesforce_id="001000000000009AAA"))
        assert await store.raise_entity_version(ENTITY, "2026-01-01T12:00:00.000000Z")
        await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account/x",
                                               outcome="ok", record_ref=SF_REF, synced_fields={"MRR__c": "130.00"}))
        assert (await store.get_synced([SF_REF]))[SF_REF].values["MRR__c"] == "130.00"
        mapping = await store.register_mapping("flows: {}\n", "sha256:aaaa")
        assert mapping.version == (2 if rows.mapping else 1)
        await store.heartbeat(ReplicaBeat(replica_id="replica-b", host="box-2", pid=7, started_at=clock.now,
                                          is_leader=False))
        assert "replica-b" in [r.id for r in await store.list_replicas()]
        leading = await store.try_lead("replica-b")
        assert leading is not None and leading.epoch == (rows.leadership.epoch + 1 if rows.leadership else 1)
        before_reopen = await read_back(store)
    finally:
        await store.close()

    # Opened again: nothing migrates again and nothing changes.
    store = await open_store(released.target, clock=clock)
    try:
        assert await read_back(store) == before_reopen
    finally:
        await store.close()


@pytest.mark.parametrize("linked_by", ["conflict_id", "conflicts.event_id"])
async def test_two_open_conflicts_about_one_record_are_merged_into_the_newest(
        tmp_path: Path, clock: FakeClock, linked_by: str) -> None:
    """Version 11 on SQLite: a store of the first days may hold two open conflicts about one (flow, record). The
    older is closed into the newest and its event waits on the newest, so one decision resumes both. The older
    event may name its conflict (inbox_events.conflict_id) or, parked before version 3, be named only by it."""
    path = tmp_path / "db.sqlite3"
    conn = sqlite_schema(path, 10)
    db = SqliteRows(conn)
    try:
        for n, status in enumerate(["done", "conflict", "conflict", "conflict"], 1):
            await db.insert("inbox_events", {"source": "nue_webhook", "event_key": f"e{n}", "type": "t",
                                             "payload": "{}", "status": status, "next_attempt_at": t(n),
                                             "received_at": t(n), "updated_at": t(n)})
        # 1: decided long ago; 2: the older open one; 3: the newest open one; 4: the same record in another flow.
        for event_id, flow, status in ((1, "subscription_status", "resolved"), (2, "subscription_status", "open"),
                                       (3, "subscription_status", "open"), (4, "onboarding", "open")):
            await db.insert("conflicts", {"event_id": event_id, "flow": flow, "record_ref": SF_REF,
                                          "reason": f"conflict {event_id}", "nue_values": '{"MRR__c":"1"}',
                                          "salesforce_values": "{}", "synced_values": "{}", "status": status,
                                          "created_at": t(event_id)})
        for event_id in (2, 3, 4) if linked_by == "conflict_id" else (3, 4):
            await db.update("inbox_events", {"id": event_id}, {"conflict_id": event_id})
        conn.commit()
    finally:
        conn.close()

    store = await open_store(path, clock=clock)
    try:
        before = {c.id: c for c in await store.list_conflicts(status=None)}
        assert [c.id for c in await store.list_conflicts()] == [4, 3]
        merged = before[2]
        assert merged.status is ConflictStatus.RESOLVED and merged.resolved_by == "revdaemon"
        assert merged.resolution is None and merged.resolved_at is not None
        assert merged.comment == ("merged into the newest open conflict about this record by the schema upgrade to "
                                  "version 11")
        assert (merged.event_id, merged.reason, merged.nue_values) == (2, "conflict 2", {"MRR__c": "1"})
        assert before[1].resolved_by is None and before[1].comment is None  # a decided one is left as it was

        await store.resolve_conflict(3, resolution=Resolution.TAKE_NUE, actor="ops@example")
        statuses = [(await store.get_event(n)).status for n in (1, 2, 3, 4)]  # type: ignore[union-attr]
        assert statuses == [EventStatus.DONE, EventStatus.RECEIVED, EventStatus.RECEIVED, EventStatus.CONFLICT]
    finally:
        await store.close()


# --- a fresh store and an upgraded one have the same schema --------------------------------------------------


async def test_sqlite_fresh_and_upgraded_from_1_have_the_same_schema(tmp_path: Path) -> None:
    fresh, upgraded = tmp_path / "fresh.sqlite3", tmp_path / "upgraded.sqlite3"
    await build_sqlite(upgraded, 1, held(1))
    for path in (fresh, upgraded):
        await (await open_store(path)).close()

    def schema(path: Path) -> list[tuple[str, ...]]:
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()

    assert schema(upgraded) == schema(fresh)


async def test_postgres_fresh_and_upgraded_from_own_1_have_the_same_schema(pg_url: str, second_pg_url: str) -> None:
    fresh, upgraded = pg_url, second_pg_url
    await build_postgres(upgraded, 1, held(1 + PG_OWN_OFFSET))
    for url in (fresh, upgraded):
        await (await open_store(url)).close()

    async def schema(url: str) -> dict[str, object]:
        conn = await asyncpg.connect(url)
        try:
            columns = await conn.fetch(
                """SELECT table_name, column_name, data_type, is_nullable, column_default, collation_name,
                          is_identity
                   FROM information_schema.columns WHERE table_schema = current_schema()
                   ORDER BY table_name, column_name""")
            indexes = await conn.fetch("""SELECT tablename, indexname, indexdef FROM pg_indexes
                                          WHERE schemaname = current_schema() ORDER BY tablename, indexname""")
            constraints = await conn.fetch(
                """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                   WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2""")
            version = await conn.fetchval("SELECT version FROM revdaemon_schema")
        finally:
            await conn.close()
        return {"version": version, "columns": [tuple(r) for r in columns], "indexes": [tuple(r) for r in indexes],
                "constraints": [tuple(r) for r in constraints]}

    got, want = await schema(upgraded), await schema(fresh)
    assert want["version"] == SCHEMA_VERSION
    assert got == want
