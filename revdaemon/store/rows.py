"""Rows -> records, for both backends: the columns are the same, only how a timestamp comes back differs (ISO
text from SQLite, a datetime from asyncpg), so each backend passes its own `when`.

A row is a `sqlite3.Row` or an `asyncpg.Record`: both are indexed by column name and have `keys()`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from revdaemon.store.encoding import loads
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
    Replica,
    Resolution,
    ShadowEntry,
    WriteIntent,
)
from revdaemon.store.states import EventStatus, IntentStatus

Row = Any
When = Callable[[Any], datetime | None]  # a stored timestamp (or None) -> datetime (or None)


def _optional(row: Row, column: str) -> Any:
    """A column a database the daemon has not migrated yet lacks (a read-only command reads it as it is)."""
    return row[column] if column in row.keys() else None  # noqa: SIM118 (sqlite3.Row: `in` looks at values)


def _required(when: When, value: Any) -> datetime:
    parsed = when(value)
    assert parsed is not None
    return parsed


def event(row: Row, when: When) -> Event:
    return Event(
        id=row["id"],
        source=row["source"],
        key=row["event_key"],
        type=row["type"],
        payload=loads(row["payload"]),
        status=EventStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=_required(when, row["next_attempt_at"]),
        last_error=row["last_error"],
        claimed_by=row["claimed_by"],
        claimed_until=when(row["claimed_until"]),
        received_at=_required(when, row["received_at"]),
        updated_at=_required(when, row["updated_at"]),
        mapping_version=_optional(row, "mapping_version"),
    )


def link(row: Row) -> Link:
    return Link(object_type=row["object_type"], nue_id=row["nue_id"], salesforce_id=row["salesforce_id"])


def mapping(row: Row, when: When) -> MappingVersion:
    return MappingVersion(version=row["version"], content_hash=row["content_hash"], text=row["text"],
                          created_at=_required(when, row["created_at"]))


def cursor(row: Row, when: When) -> Cursor:
    return Cursor(name=row["name"], value=row["value"], updated_at=_required(when, row["updated_at"]))


def intent(row: Row, when: When) -> WriteIntent:
    return WriteIntent(
        key=row["idem_key"],
        system=row["system"],
        operation=row["operation"],
        target=row["target"],
        request=loads(row["request"]),
        event_id=row["event_id"],
        status=IntentStatus(row["status"]),
        result=loads(row["result"]),
        error=row["error"],
        created_at=_required(when, row["created_at"]),
        updated_at=_required(when, row["updated_at"]),
        ever_sent=bool(_optional(row, "ever_sent")),
        settle_after=when(_optional(row, "settle_after")),
        epoch=_optional(row, "epoch"),
    )


def conflict(row: Row, when: When) -> ConflictRecord:
    return ConflictRecord(
        id=row["id"],
        event_id=row["event_id"],
        flow=row["flow"],
        record_ref=row["record_ref"],
        reason=row["reason"],
        nue_values=loads(row["nue_values"]),
        salesforce_values=loads(row["salesforce_values"]),
        synced_values=loads(row["synced_values"]),
        status=ConflictStatus(row["status"]),
        resolution=Resolution(row["resolution"]) if row["resolution"] else None,
        resolved_by=row["resolved_by"],
        comment=row["comment"],
        created_at=_required(when, row["created_at"]),
        resolved_at=when(row["resolved_at"]),
    )


def dead_letter(row: Row, when: When) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        event_id=row["event_id"],
        system=row["system"],
        operation=row["operation"],
        error=row["error"],
        error_code=row["error_code"],
        status=row["status"],
        record_ref=row["record_ref"],
        request=loads(row["request"]),
        created_at=_required(when, row["created_at"]),
        replayed_at=when(row["replayed_at"]),
    )


def audit(row: Row, when: When) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=_required(when, row["at"]),
        system=row["system"],
        operation=row["operation"],
        target=row["target"],
        outcome=row["outcome"],
        idem_key=row["idem_key"],
        event_id=row["event_id"],
        record_ref=row["record_ref"],
        status=row["status"],
        detail=loads(row["detail"]),
        mapping_version=row["mapping_version"],
    )


def replica(row: Row, when: When) -> Replica:
    return Replica(id=row["replica_id"], host=row["host"], pid=row["pid"],
                   started_at=_required(when, row["started_at"]),
                   last_heartbeat=_required(when, row["last_heartbeat"]), is_leader=bool(row["is_leader"]))



def leadership(row: Row | None, when: When) -> Leadership | None:
    """The leadership row, or None while no replica has ever led (epoch 0) or before the schema has one."""
    if row is None or not row["epoch"] or row["replica_id"] is None:
        return None
    return Leadership(epoch=int(row["epoch"]), replica_id=row["replica_id"], since=_required(when, row["since"]))


def shadow_entry(row: Row, when: When) -> ShadowEntry:
    return ShadowEntry(id=row["id"], at=_required(when, row["at"]), event_id=row["event_id"],
                       event_key=row["event_key"], flow=row["flow"], outcome=row["outcome"], system=row["system"],
                       action=row["action"], target=row["target"], idem_key=row["idem_key"],
                       changes=tuple(loads(row["changes"])), warnings=tuple(loads(row["warnings"])),
                       flags=tuple(loads(row["flags"])), note=row["note"])
