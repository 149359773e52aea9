"""The Avro schema of an entity's change event, built from the simulated object's definition.

Layout (salesforce-api.md §4.3): a record `<Entity>ChangeEvent` in namespace `com.sforce.eventbus`, first the
`ChangeEventHeader`, then every field of the object as an optional (`["null", type]`, default null) field,
except the ones change events never carry. A bitmap in the header (changedFields, nulledFields) numbers fields
by their position in this top-level list, so the order here is part of the wire format.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema

from revdaemon.sandbox.salesforce.schema import FieldDef, ObjectDef

NAMESPACE = "com.sforce.eventbus"
CHANGE_TYPES = ("CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE",
                "GAP_OVERFLOW")
# [doc] change events leave out IsDeleted and SystemModstamp (and formula fields, our `calculated`); [assumed] Id
# too: the record's id travels in the header's recordIds, as in the documented event examples.
EXCLUDED_FIELDS = frozenset({"Id", "IsDeleted", "SystemModstamp"})
# [doc] Pub/Sub API date fields are epoch based; [assumed] the Avro logical types date (days) and
# timestamp-millis, the natural Avro spelling of that.
DATE_TYPE = {"type": "int", "logicalType": "date"}
DATETIME_TYPE = {"type": "long", "logicalType": "timestamp-millis"}
AVRO_TYPES: dict[str, Any] = {
    "boolean": "boolean", "int": "int", "double": "double", "currency": "double", "percent": "double",
    "date": DATE_TYPE, "datetime": DATETIME_TYPE,
}  # anything else (id, reference, text, picklist) is a string

HEADER_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "ChangeEventHeader", "namespace": NAMESPACE,
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "namespace": NAMESPACE,
                                        "symbols": list(CHANGE_TYPES)}},
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}


def event_name(entity: str) -> str:
    """Account -> AccountChangeEvent; Invoice__c -> Invoice__ChangeEvent (custom objects drop the `c`)."""
    return f"{entity[:-1]}ChangeEvent" if entity.endswith("__c") else f"{entity}ChangeEvent"


def topic_name(entity: str) -> str:
    return f"/data/{event_name(entity)}"


def carried(field: FieldDef) -> bool:
    """Whether a change event has a field for this object field."""
    return field.name not in EXCLUDED_FIELDS and not field.calculated


@dataclass(frozen=True)
class ChangeEventSchema:
    entity: str
    json: str  # as GetSchema returns it
    id: str  # a stable hash of `json`
    fields: tuple[str, ...]  # the object fields, in schema order (position i + 1: the header is position 0)
    types: dict[str, str]  # object field name -> the simulator's field type
    parsed: Any  # fastavro's parsed schema, for encoding

    def position(self, field: str) -> int:
        """The field's bit in a changedFields/nulledFields bitmap."""
        return self.fields.index(field) + 1


def change_event_schema(od: ObjectDef) -> ChangeEventSchema:
    fields = [f for f in od.fields.values() if carried(f)]
    avro: dict[str, Any] = {
        "type": "record", "name": event_name(od.name), "namespace": NAMESPACE,
        "fields": [{"name": "ChangeEventHeader", "type": HEADER_SCHEMA},
                   *({"name": f.name, "type": ["null", AVRO_TYPES.get(f.type, "string")], "default": None}
                     for f in fields)],
    }
    text = json.dumps(avro, separators=(",", ":"))
    # [assumed] 22 characters of URL-safe base64, the shape of the schema ids in Salesforce's examples.
    schema_id = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:16]).decode().rstrip("=")
    return ChangeEventSchema(entity=od.name, json=text, id=schema_id, fields=tuple(f.name for f in fields),
                             types={f.name: f.type for f in fields}, parsed=parse_schema(json.loads(text)))


def bitmap(positions: list[int]) -> list[str]:
    """Field positions -> the Pub/Sub API's bitmap array: one hex string whose bit i (least significant first)
    stands for top-level field i [doc: Event Deserialization Considerations; ChangeEventHeaderUtility.py].
    Empty when no field is named. Nested compound-field entries ("4-0x10") never occur: the simulator's
    compound fields are flat."""
    if not positions:
        return []
    value = sum(1 << p for p in set(positions))
    digits = f"{value:X}"
    return ["0x" + digits.rjust(len(digits) + len(digits) % 2, "0")]
