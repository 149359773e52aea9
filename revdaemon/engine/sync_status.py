"""Sync status on the Salesforce record, so a sales rep sees there what revdaemon did, or why not.

On the objects configured (`mapping.sync_status`), every data write revdaemon sends carries the status
fields too (status "Synced", the time, the error cleared) in the same record of the same batched call, so
they cost no API call. When a write fails for good or a conflict is opened, the status and the reason are
written to the record in one batched write of their own. Off unless configured; the fields are checked
against describe at start like every mapped field, and a missing one switches this off (parked), not the
flows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from revdaemon.flows.plan import SfUpdate, SfUpsert, Write

NAME = "sync_status"
ERROR_TEXT_MAX = 32_000  # a long text area holds 32,768 characters; leave room


@dataclass(frozen=True, kw_only=True)
class StatusFields:
    status_field: str | None = None
    synced_at_field: str | None = None
    error_field: str | None = None
    synced_value: str = "Synced"
    error_value: str = "Error"

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for n in (self.status_field, self.synced_at_field, self.error_field) if n)


class SyncStatus:
    """Decorates writes with the status fields and makes the error writes. `name` and `salesforce_fields`
    let the schema guard check (and park) it like a flow."""

    name = NAME

    def __init__(self, objects: Mapping[str, StatusFields]) -> None:
        self.objects = {sobject: fields for sobject, fields in objects.items() if fields.names}
        self.salesforce_fields: dict[str, frozenset[str]] = {s: f.names for s, f in self.objects.items()}

    def __bool__(self) -> bool:
        return bool(self.objects)

    def decorate(self, write: Write, now: datetime) -> Write:
        """The write with the status fields added, when it writes data to a configured object."""
        if not isinstance(write, SfUpdate | SfUpsert):
            return write
        fields = self.objects.get(write.sobject)
        if fields is None:
            return write
        extra: dict[str, object] = {}
        if fields.status_field:
            extra[fields.status_field] = fields.synced_value
        if fields.synced_at_field:
            extra[fields.synced_at_field] = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        if fields.error_field:
            extra[fields.error_field] = None
        return replace(write, fields={**write.fields, **{k: v for k, v in extra.items() if k not in write.fields}})

    def error_updates(self, failures: Sequence[tuple[str, str]]) -> dict[str, list[dict[str, object]]]:
        """Per object, the records to mark: (record ref, reason) -> {Id, status, error}. Refs that name no
        configured Salesforce record are left out."""
        by_object: dict[str, dict[str, dict[str, object]]] = {}
        for record_ref, reason in failures:
            target = record_of(record_ref)
            if target is None or target[0] not in self.objects:
                continue
            sobject, record_id = target
            fields = self.objects[sobject]
            row: dict[str, object] = {"Id": record_id}
            if fields.status_field:
                row[fields.status_field] = fields.error_value
            if fields.error_field:
                row[fields.error_field] = reason[:ERROR_TEXT_MAX]
            if len(row) > 1:
                by_object.setdefault(sobject, {})[record_id] = row  # one row per record: the last reason
        return {sobject: list(rows.values()) for sobject, rows in by_object.items()}


def record_of(record_ref: str) -> tuple[str, str] | None:
    """The Salesforce record a reference is about: `salesforce:<Object>:<Id>`, or the record a Nue create
    was made for (an order for an opportunity, a customer for an account)."""
    parts = record_ref.split(":", 2)
    if len(parts) != 3:
        return None
    system, kind, ident = parts
    if system == "salesforce" and ident and "=" not in ident and "," not in ident:
        return kind, ident
    if system == "nue" and kind == "Order":
        return "Opportunity", ident
    if system == "nue" and kind == "Customer":
        return "Account", ident
    return None

