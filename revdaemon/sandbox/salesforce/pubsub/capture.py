"""Change Data Capture: turns the store's committed changes into change events on the bus.

One event per record [assumed: Salesforce may merge identical changes to several records into one event; the
simulator never does], published once the transaction commits, in commit order; the records of one transaction
share a `transactionKey` and count up `sequenceNumber` from 1 [doc: Change Event Header Fields]. The header's
commitTimestamp is the sim clock at commit, whatever SystemModstamp the write was stamped with: that is what a
late commit looks like on the bus (salesforce-api.md §4.1, §4.3).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from typing import Any

from fastavro import schemaless_writer

from revdaemon.sandbox.salesforce.pubsub.bus import EventBus
from revdaemon.sandbox.salesforce.pubsub.event_schema import ChangeEventSchema, bitmap, change_event_schema
from revdaemon.sandbox.salesforce.schema import Schema
from revdaemon.sandbox.salesforce.store import Change, Record
from revdaemon.sandbox.salesforce.values import parse_datetime

# [doc] GAP_OVERFLOW events name no record, only this wildcard id (Change Data Capture guide, overflow events).
OVERFLOW_RECORD_ID = "000000000000000AAA"
EPOCH = date(1970, 1, 1)


def change_type(change: Change) -> str:
    if change.old is None:
        return "CREATE"
    if change.new["IsDeleted"] and not change.old["IsDeleted"]:
        return "DELETE"
    if change.old["IsDeleted"] and not change.new["IsDeleted"]:
        return "UNDELETE"
    return "UPDATE"


def avro_value(kind: str, value: Any) -> Any:
    """A stored (wire-form) value as the event schema types it."""
    if value is None:
        return None
    if kind == "datetime":
        return int(parse_datetime(str(value)).timestamp() * 1000)
    if kind == "date":
        return (date.fromisoformat(str(value)[:10]) - EPOCH).days
    if kind in ("double", "currency", "percent"):
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "boolean":
        return bool(value)
    return str(value)


class ChangeCapture:
    """Listens to the store (Store.listeners) and publishes change events of the selected entities."""

    def __init__(self, bus: EventBus, clock: Callable[[], float], entities: tuple[str, ...]) -> None:
        self.bus = bus
        self.clock = clock
        self.selected: set[str] = set(entities)
        self.schema: Schema | None = None
        self._schemas: dict[tuple[str, int], ChangeEventSchema] = {}
        self._commit_number = 0
        # Who made the write being committed: the REST handler names its API version; scenario edits, nothing.
        self._origin: ContextVar[str] = ContextVar("change_origin", default="")

    def attach(self, schema: Schema) -> None:
        """Follow a (re)built org: its schema describes the events from now on."""
        self.schema = schema
        self._schemas.clear()

    @contextmanager
    def origin(self, value: str) -> Iterator[None]:
        """Writes inside the block carry `value` as changeOrigin (e.g. com/salesforce/api/rest/62.0)."""
        token = self._origin.set(value)
        try:
            yield
        finally:
            self._origin.reset(token)

    def event_schema(self, entity: str) -> ChangeEventSchema:
        """The entity's current event schema; a field added to the object makes a new one (with a new id)."""
        assert self.schema is not None, "attach() an org first"
        od = self.schema.get(entity)
        if od is None:
            raise KeyError(entity)
        key = (od.name, self.schema.version)
        if key not in self._schemas:
            self._schemas[key] = change_event_schema(od)
        return self._schemas[key]

    def on_commit(self, changes: list[Change]) -> None:
        captured = [c for c in changes if c.object in self.selected]
        if not captured:
            return
        self._commit_number += 1
        header = {"changeOrigin": self._origin.get(), "transactionKey": str(uuid.uuid4()),
                  "commitTimestamp": int(self.clock() * 1000), "commitNumber": self._commit_number}
        for sequence, change in enumerate(captured, start=1):
            kind = change_type(change)
            self._publish(change.object, {**header, "recordIds": [change.new["Id"]], "changeType": kind,
                                          "sequenceNumber": sequence, "commitUser": change.user_id},
                          change.old, change.new)

    def publish_gap(self, entity: str, kind: str, record_ids: list[str], user_id: str) -> None:
        """A gap event: Salesforce could not build the change event, so only the header says what changed
        [doc: Change Data Capture guide, gap events]."""
        if not kind.startswith("GAP_"):
            raise ValueError(f"not a gap event type: {kind}")
        ids = [OVERFLOW_RECORD_ID] if kind == "GAP_OVERFLOW" else record_ids
        self._commit_number += 1
        self._publish(entity, {"changeOrigin": "", "transactionKey": str(uuid.uuid4()), "sequenceNumber": 1,
                               "commitTimestamp": int(self.clock() * 1000), "commitNumber": self._commit_number,
                               "recordIds": ids, "changeType": kind, "commitUser": user_id}, None, None)

    def _publish(self, entity: str, header: dict[str, Any], old: Record | None, new: Record | None) -> None:
        schema = self.event_schema(entity)
        fields: dict[str, Any] = {}
        changed: list[int] = []
        nulled: list[int] = []
        kind = header["changeType"]
        if new is not None and kind in ("CREATE", "UNDELETE"):
            fields = {name: avro_value(schema.types[name], new.get(name)) for name in schema.fields}
        elif new is not None and old is not None and kind == "UPDATE":
            for name in schema.fields:
                # LastModifiedDate is always among an update's changed fields, even within one clock tick.
                if new.get(name) != old.get(name) or name == "LastModifiedDate":
                    fields[name] = avro_value(schema.types[name], new.get(name))
                    changed.append(schema.position(name))
                    if new.get(name) is None:
                        nulled.append(schema.position(name))
        message = {"ChangeEventHeader": {**header, "entityName": entity, "changedFields": bitmap(changed),
                                         "nulledFields": bitmap(nulled), "diffFields": []},
                   **{name: fields.get(name) for name in schema.fields}}
        buffer = io.BytesIO()
        schemaless_writer(buffer, schema.parsed, message)
        self.bus.schemas[schema.id] = schema.json
        self.bus.publish(entity, str(uuid.uuid4()), schema.id, buffer.getvalue())
