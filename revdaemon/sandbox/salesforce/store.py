"""The org's records in memory, with Salesforce's write rules.

Records are plain dicts in wire form, replaced (never mutated) on each write, so query snapshots and
undo entries can hold references without copying. Every write takes `lock`; `transaction()` records an
undo log so allOrNone requests can roll back.

Committed changes go to `listeners` (Change Data Capture, pubsub/): each write is its own transaction unless it
runs inside `transaction()`, and a listener hears of a transaction's changes only once the outermost block ends,
without the ones a rollback undid, so a rolled-back write is never announced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from revdaemon.sandbox.salesforce.errors import SfError, bad_request, not_found
from revdaemon.sandbox.salesforce.schema import FieldDef, ObjectDef, Schema
from revdaemon.sandbox.salesforce.values import coerce, wire_datetime
from revdaemon.sandbox.seed import OPPORTUNITY_STAGES
from revdaemon.sandbox.sfids import BASE62, IdFactory, is_valid_id, to18

Record = dict[str, Any]
# A per-object write rule beyond the schema's (permissions.py): (store, new record, old record or None).
Rule = Callable[["Store", Record, Record | None], None]
STAGES = {name.lower(): (name, probability, closed, won) for name, probability, closed, won in OPPORTUNITY_STAGES}
FORECAST = {(True, True): "Closed", (True, False): "Omitted"}
PICKLIST_DEFAULTS = {("Contract", "Status"): "Draft", ("Task", "Status"): "Not Started",
                     ("Task", "Priority"): "Normal"}


@dataclass(frozen=True)
class Change:
    """One record's committed change: `old` None for a create; several writes to one record in one transaction
    are folded into one change (first `old`, last `new`)."""

    object: str
    old: Record | None
    new: Record
    user_id: str


# Called with one transaction's changes, in write order, while the store lock is still held (so listeners see
# transactions in commit order).
CommitListener = Callable[[list[Change]], None]
READ_ONLY_MESSAGE = ("Unable to create/update fields: {}. Please check the security settings of this field and "
                     "verify that it is read/write for your profile or permission set.")


def normalize_id(value: str) -> str | None:
    """15- or 18-character id -> canonical 18-character id; None when the text is not an id."""
    if len(value) == 15 and all(c in BASE62 for c in value):
        return to18(value)
    if len(value) == 18 and is_valid_id(value):
        return to18(value[:15])
    return None


class Store:
    def __init__(self, schema: Schema, ids: IdFactory, clock: Callable[[], float]) -> None:
        self.schema = schema
        self.ids = ids
        self.clock = clock
        self.lock = threading.RLock()
        self.tables: dict[str, dict[str, Record]] = {name: {} for name in schema.objects}
        self._undo: list[tuple[str, str, Record | None]] | None = None
        self._changes: list[Change] = []  # parallel to _undo: what the open transaction will announce
        self.listeners: list[CommitListener] = []
        self._index: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._index_version = -1
        # For queries (soql.py): each table's insertion position per id (a table's order is its ids' order of
        # first insertion), and value indexes built on first use, per (object, field): the value as the SOQL
        # engine compares it -> ids, deleted records included. Kept up to date on every write and rollback, so
        # a `WHERE field IN (...)` reads the rows it names instead of the whole table (issue 30).
        self._positions: dict[str, dict[str, int]] = {}
        self._next_position = 0
        self._value_index: dict[tuple[str, str, Callable[[Any], Any]], dict[Any, set[str]]] = {}
        self._value_index_version = schema.version
        self._contract_numbers = 0
        self.rules: dict[str, Rule] = {}

    # ---- reads -------------------------------------------------------------------------------------

    def table(self, obj: str) -> dict[str, Record]:
        return self.tables.setdefault(obj, {})

    def lookup(self, record_id: str | None) -> Record | None:
        if not record_id:
            return None
        obj = self.schema.object_for_id(record_id)
        return self.tables.get(obj, {}).get(record_id) if obj else None

    def find_live(self, od: ObjectDef, raw_id: str) -> Record:
        """The record behind a URL id: 404 NOT_FOUND / 400 MALFORMED_ID / 404 ENTITY_IS_DELETED like §2.2."""
        record_id = normalize_id(raw_id)
        if record_id is None:
            raise not_found(f"Provided external ID field does not exist or is not accessible: {raw_id}")
        if record_id[:3] != od.key_prefix:
            raise bad_request("MALFORMED_ID", f"{od.label} ID: id value of incorrect type: {raw_id}")
        record = self.table(od.name).get(record_id)
        if record is None:
            raise not_found()
        if record.get("IsDeleted"):
            raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def find_external(self, od: ObjectDef, field: FieldDef, value: str) -> list[str]:
        self._ensure_index()
        ids = self._index.get((od.name, field.name), {}).get(value.lower(), set())
        return sorted(ids)

    # ---- transactions ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Callable[[], None]]:
        """Yields `rollback`, which undoes every write made inside the block; nested blocks are savepoints."""
        with self.lock:
            outer = self._undo is None
            if outer:
                self._undo = []
                self._changes = []
            mark = len(self._undo or [])
            try:
                yield lambda: self._rollback_to(mark)
            finally:
                if outer:
                    self._undo = None
                    changes, self._changes = _fold(self._changes), []
                    if changes:
                        for listener in self.listeners:
                            listener(changes)

    def _rollback_to(self, mark: int) -> None:
        undo = self._undo or []
        del self._changes[mark:]
        while len(undo) > mark:
            obj, record_id, old = undo.pop()
            current = self.tables[obj].get(record_id)
            if old is None:
                self.tables[obj].pop(record_id, None)
                self._positions.get(obj, {}).pop(record_id, None)
            else:
                self.tables[obj][record_id] = old
            self._revalue(obj, current, old)
            if self._index_version == self.schema.version:  # kept exact, not rebuilt from every table
                self._reindex_record(obj, current, old)

    def _put(self, obj: str, record: Record, user_id: str) -> None:
        table = self.table(obj)
        old = table.get(record["Id"])
        if self._undo is not None:
            self._undo.append((obj, record["Id"], old))
            self._changes.append(Change(obj, old, record, user_id))
        table[record["Id"]] = record
        if old is None:
            self._positions.setdefault(obj, {})[record["Id"]] = self._next_position
            self._next_position += 1
        self._revalue(obj, old, record)
        if self._index_version == self.schema.version:
            self._reindex_record(obj, old, record)

    # ---- query indexes (soql.py) ------------------------------------------------------------------

    def _revalue(self, obj: str, old: Record | None, new: Record | None) -> None:
        if not self._value_index:
            return
        for (index_obj, name, norm), index in self._value_index.items():
            if index_obj != obj:
                continue
            if old is not None:
                ids = index.get(norm(old.get(name)))
                if ids is not None:
                    ids.discard(old["Id"])
            if new is not None:
                index.setdefault(norm(new.get(name)), set()).add(new["Id"])

    def rows_where_in(self, obj: str, name: str, norm: Callable[[Any], Any], values: frozenset[Any]
                      ) -> list[Record]:
        """The rows of `obj` (deleted ones too) whose `norm(record[name])` is one of `values`, in the table's
        order: what a scan testing `norm(value) in values` would keep, at the cost of the rows named."""
        return self.rows_where_any(obj, ((name, norm, values),))

    def rows_where_any(self, obj: str, alternatives: tuple[tuple[str, Callable[[Any], Any], frozenset[Any]], ...]
                       ) -> list[Record]:
        """The rows matching any of the (field, norm, values) alternatives, in the table's order."""
        if self._value_index_version != self.schema.version:
            self._value_index = {}
            self._value_index_version = self.schema.version
        ids: set[str] = set()
        for name, norm, values in alternatives:
            index = self._value_index.get((obj, name, norm))
            if index is None:
                index = {}
                for record in self.table(obj).values():
                    index.setdefault(norm(record.get(name)), set()).add(record["Id"])
                self._value_index[(obj, name, norm)] = index
            for value in values:
                ids.update(index.get(value, ()))
        positions = self._positions.get(obj, {})
        table = self.table(obj)
        return [table[i] for i in sorted(ids, key=positions.__getitem__)]

    # ---- unique / external id index ----------------------------------------------------------------

    def _indexed_fields(self, obj: str) -> list[str]:
        od = self.schema.objects.get(obj)
        return [f.name for f in od.fields.values() if f.external_id or f.unique] if od else []

    def _ensure_index(self) -> None:
        if self._index_version == self.schema.version:
            return
        self._index = {}
        for obj, table in self.tables.items():
            for name in self._indexed_fields(obj):
                index = self._index.setdefault((obj, name), {})
                for record in table.values():
                    value = record.get(name)
                    if value is not None and not record.get("IsDeleted"):
                        index.setdefault(str(value).lower(), set()).add(record["Id"])
        self._index_version = self.schema.version

    def _reindex_record(self, obj: str, old: Record | None, new: Record | None) -> None:
        for name in self._indexed_fields(obj):
            index = self._index.setdefault((obj, name), {})
            if old is not None and old.get(name) is not None:
                index.get(str(old[name]).lower(), set()).discard(old["Id"])
            if new is not None and new.get(name) is not None and not new.get("IsDeleted"):
                index.setdefault(str(new[name]).lower(), set()).add(new["Id"])

    # ---- writes ------------------------------------------------------------------------------------

    def _convert(self, od: ObjectDef, data: dict[str, Any], *, creating: bool, system: bool) -> Record:
        values: Record = {}
        read_only: list[str] = []
        for key, raw in data.items():
            if key == "attributes":
                continue
            field = od.field(key)
            if field is None:
                raise bad_request("INVALID_FIELD", f"No such column '{key}' on sobject of type {od.name}", [])
            if not system and not (field.createable if creating else field.updateable):
                read_only.append(field.name)
                continue
            values[field.name] = coerce(field, raw)
        if read_only:
            raise bad_request("INVALID_FIELD_FOR_INSERT_UPDATE", READ_ONLY_MESSAGE.format(", ".join(read_only)),
                              read_only)
        return values

    def _check_references(self, od: ObjectDef, values: Record) -> None:
        for name, value in values.items():
            field = od.fields[name]
            if field.type != "reference" or value is None:
                continue
            record_id = normalize_id(value)
            if record_id is None:
                raise bad_request("MALFORMED_ID", f"{field.label}: id value of incorrect type: {value}", [name])
            target = self.schema.object_for_id(record_id)
            if target not in field.reference_to:
                raise bad_request("FIELD_INTEGRITY_EXCEPTION",
                                  f"{field.label}: id value of incorrect type: {value}", [name])
            parent = self.tables.get(target, {}).get(record_id)
            if parent is None or parent.get("IsDeleted"):
                raise bad_request("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            values[name] = record_id

    def _check_required(self, od: ObjectDef, record: Record) -> None:
        missing = [f.name for f in od.fields.values()
                   if f.required and (record.get(f.name) is None or record.get(f.name) == "")]
        if missing:
            raise bad_request("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                              missing)

    def _check_unique(self, od: ObjectDef, record: Record) -> None:
        self._ensure_index()
        for f in od.fields.values():
            value = record.get(f.name)
            if not f.unique or value is None:
                continue
            others = self._index.get((od.name, f.name), {}).get(str(value).lower(), set()) - {record["Id"]}
            if others:
                other = min(others)
                raise bad_request("DUPLICATE_VALUE",
                                  f"duplicate value found: {f.name} duplicates value on record with id: {other[:15]}",
                                  [])

    def create(self, obj: str, data: dict[str, Any], user_id: str, *, record_id: str | None = None,
               system: bool = False, stamp: float | None = None) -> str:
        od = self._object(obj)
        with self.transaction():
            values = self._convert(od, data, creating=True, system=system)
            self._check_references(od, values)
            now = wire_datetime(self.clock() if stamp is None else stamp)
            record: Record = {f.name: None for f in od.fields.values()}
            record.update({f.name: False for f in od.fields.values() if f.type == "boolean"})
            for (o, name), default in PICKLIST_DEFAULTS.items():
                if o == od.name:
                    record[name] = default
            if "OwnerId" in od.fields:
                record["OwnerId"] = user_id
            record.update(values)
            record.update(Id=record_id or self._new_id(od.key_prefix), IsDeleted=False, CreatedDate=now,
                          CreatedById=user_id, LastModifiedDate=now, LastModifiedById=user_id, SystemModstamp=now)
            self._derive(od, record, None, values)
            self._check_required(od, record)
            self._check_unique(od, record)
            self._check_rules(od, record, None)
            self._put(od.name, record, user_id)
            self._after_write(od, record, user_id)
            return str(record["Id"])

    def update(self, obj: str, raw_id: str, data: dict[str, Any], user_id: str, *, system: bool = False,
               stamp: float | None = None) -> None:
        od = self._object(obj)
        with self.transaction():
            old = self.find_live(od, raw_id)
            data = {k: v for k, v in data.items() if not (k.lower() == "id" and normalize_id(str(v)) == old["Id"])}
            values = self._convert(od, data, creating=False, system=system)
            self._check_references(od, values)
            now = wire_datetime(self.clock() if stamp is None else stamp)
            record = {**old, **values, "LastModifiedDate": now, "LastModifiedById": user_id, "SystemModstamp": now}
            self._derive(od, record, old, values)
            self._check_required(od, record)
            self._check_unique(od, record)
            self._check_rules(od, record, old)
            self._put(od.name, record, user_id)
            self._after_write(od, record, user_id)

    def _check_rules(self, od: ObjectDef, record: Record, old: Record | None) -> None:
        rule = self.rules.get(od.name)
        if rule is not None:
            rule(self, record, old)

    def delete(self, obj: str, raw_id: str, user_id: str) -> None:
        od = self._object(obj)
        with self.transaction():
            old = self.find_live(od, raw_id)
            now = wire_datetime(self.clock())
            record = {**old, "IsDeleted": True, "LastModifiedDate": now, "LastModifiedById": user_id,
                      "SystemModstamp": now}
            self._put(od.name, record, user_id)
            if od.name == "Opportunity":  # line items go with their opportunity
                for line in self.rows_where_in("OpportunityLineItem", "OpportunityId", _same, frozenset({old["Id"]})):
                    if line["OpportunityId"] == old["Id"] and not line["IsDeleted"]:
                        self._put("OpportunityLineItem", {**line, "IsDeleted": True, "SystemModstamp": now}, user_id)
            self._after_write(od, record, user_id)

    def undelete(self, obj: str, raw_id: str, user_id: str) -> None:
        """Restores a deleted record from the Recycle Bin (an opportunity's line items with it)."""
        od = self._object(obj)
        record_id = normalize_id(raw_id)
        with self.transaction():
            old = self.table(od.name).get(record_id or "")
            if old is None:
                raise not_found()
            if not old["IsDeleted"]:
                raise bad_request("UNDELETE_FAILED", "Entity is not in the recycle bin", [])
            now = wire_datetime(self.clock())
            record = {**old, "IsDeleted": False, "LastModifiedDate": now, "LastModifiedById": user_id,
                      "SystemModstamp": now}
            self._check_unique(od, record)
            self._put(od.name, record, user_id)
            if od.name == "Opportunity":
                for line in self.rows_where_in("OpportunityLineItem", "OpportunityId", _same, frozenset({old["Id"]})):
                    if line["OpportunityId"] == old["Id"] and line["IsDeleted"]:
                        self._put("OpportunityLineItem", {**line, "IsDeleted": False, "SystemModstamp": now}, user_id)
            self._after_write(od, record, user_id)

    def upsert(self, obj: str, field_name: str, value: str, data: dict[str, Any],
               user_id: str) -> tuple[str, bool]:
        """Returns (id, created). Raises SfError 300 when several records match (§2.2)."""
        od = self._object(obj)
        field = od.field(field_name)
        if field is None:
            raise not_found()
        if not field.external_id and field.type != "id":
            raise bad_request("INVALID_FIELD", f"Field {field.name} is not an External ID or Id field", [])
        with self.lock:
            body = {k: v for k, v in data.items() if k.lower() != field.name.lower()}
            if field.type == "id":
                matches = [value] if normalize_id(value) and self.lookup(normalize_id(value)) else []
            else:
                matches = self.find_external(od, field, value)
            if len(matches) > 1:
                raise MultipleMatches(od, matches)
            if matches:
                self.update(od.name, matches[0], body, user_id)
                return matches[0], False
            if field.type == "id":
                raise not_found()
            return self.create(od.name, {**body, field.name: value}, user_id), True

    def _new_id(self, prefix: str) -> str:
        record_id = self.ids.new(prefix)
        while self.lookup(record_id) is not None:  # never collide with seeded ids from another factory
            record_id = self.ids.new(prefix)
        return record_id

    def _object(self, obj: str) -> ObjectDef:
        od = self.schema.get(obj)
        if od is None:
            raise not_found()
        return od

    # ---- derived fields (salesforce-api.md §5) -----------------------------------------------------

    def _derive(self, od: ObjectDef, record: Record, old: Record | None, values: Record) -> None:
        name = od.name
        if name in ("Contact", "User"):
            record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
        elif name == "Opportunity":
            stage = STAGES.get(str(record.get("StageName") or "").lower())
            if stage:
                record["StageName"] = stage[0]
                record["IsClosed"], record["IsWon"] = stage[2], stage[3]
                if "Probability" not in values and (old is None or old.get("StageName") != stage[0]):
                    record["Probability"] = float(stage[1])
                if "ForecastCategoryName" not in values:
                    record["ForecastCategoryName"] = FORECAST.get((stage[2], stage[3]), "Pipeline")
            if old is not None and old.get("HasOpportunityLineItem"):
                record["Amount"] = old.get("Amount")  # updates to Amount are ignored when products exist
        elif name == "OpportunityLineItem":
            self._derive_line(record, old, values)
        elif name == "PricebookEntry":
            product = self.lookup(record.get("Product2Id")) or {}
            record["Name"], record["ProductCode"] = product.get("Name"), product.get("ProductCode")
        elif name == "Contract":
            if old is None and not record.get("ContractNumber"):
                self._contract_numbers += 1
                record["ContractNumber"] = f"{self._contract_numbers:08d}"
            record["EndDate"] = _contract_end(record.get("StartDate"), record.get("ContractTerm"))
        elif name == "Task":
            record["IsClosed"] = record.get("Status") == "Completed"
            what = self.lookup(record.get("WhatId")) or {}
            who = self.lookup(record.get("WhoId")) or {}
            record["AccountId"] = (record["WhatId"] if str(record.get("WhatId") or "").startswith("001")
                                   else what.get("AccountId") or who.get("AccountId"))
        elif od.custom and not record.get("Name"):
            record["Name"] = record["Id"]

    def _derive_line(self, record: Record, old: Record | None, values: Record) -> None:
        if old is None:
            entry = self.lookup(record.get("PricebookEntryId")) or {}
            opportunity = self.lookup(record.get("OpportunityId")) or {}
            pricebook = opportunity.get("Pricebook2Id")
            if pricebook and entry.get("Pricebook2Id") != pricebook:
                raise bad_request("FIELD_INTEGRITY_EXCEPTION",
                                  "field integrity exception: PricebookEntryId (pricebook entry is in a different "
                                  "pricebook than the one assigned to the opportunity)", ["PricebookEntryId"])
            product = self.lookup(entry.get("Product2Id")) or {}
            record.update(Product2Id=entry.get("Product2Id"), ListPrice=entry.get("UnitPrice"),
                          ProductCode=product.get("ProductCode"), Name=product.get("Name"))
        if "UnitPrice" in values and "TotalPrice" in values and values["TotalPrice"] is not None:
            raise bad_request("FIELD_INTEGRITY_EXCEPTION",
                              "field integrity exception: TotalPrice (Total Price and Unit Price cannot both be "
                              "specified)", ["TotalPrice"])
        quantity = float(record.get("Quantity") or 0)
        discount = float(record.get("Discount") or 0)
        if "TotalPrice" in values and values["TotalPrice"] is not None and quantity:
            record["UnitPrice"] = round(values["TotalPrice"] / quantity / (1 - discount / 100 or 1), 2)
        elif record.get("UnitPrice") is None:
            record["UnitPrice"] = record.get("ListPrice")
        subtotal = round(quantity * float(record.get("UnitPrice") or 0), 2)
        record["Subtotal"] = subtotal
        # TotalPrice = Quantity * UnitPrice, less the Discount percentage when one is set.
        record["TotalPrice"] = round(subtotal * (1 - discount / 100), 2)

    def _after_write(self, od: ObjectDef, record: Record, user_id: str) -> None:
        if od.name == "OpportunityLineItem":
            self._roll_up(record["OpportunityId"], user_id)

    def _roll_up(self, opportunity_id: str, user_id: str) -> None:
        """Opportunity.Amount is the sum of its line items' TotalPrice once it has products (§5)."""
        opportunity = self.tables["Opportunity"].get(opportunity_id)
        if opportunity is None:
            return
        lines = [r for r in self.rows_where_in("OpportunityLineItem", "OpportunityId", _same,
                                               frozenset({opportunity_id}))
                 if r["OpportunityId"] == opportunity_id and not r["IsDeleted"]]
        entry_books = {(self.lookup(r["PricebookEntryId"]) or {}).get("Pricebook2Id") for r in lines}
        amount = round(sum(float(r["TotalPrice"] or 0) for r in lines), 2) if lines else opportunity["Amount"]
        pricebook = opportunity["Pricebook2Id"] or (entry_books.pop() if len(entry_books) == 1 else None)
        now = wire_datetime(self.clock())
        self._put("Opportunity", {**opportunity, "Amount": amount, "HasOpportunityLineItem": bool(lines),
                                  "Pricebook2Id": pricebook, "SystemModstamp": now}, user_id)


def _same(value: Any) -> Any:
    return value


class MultipleMatches(SfError):
    """Upsert matched several records: HTTP 300 with the matching records' URLs (§2.2)."""

    def __init__(self, od: ObjectDef, ids: list[str]) -> None:
        super().__init__(300, "MULTIPLE_CHOICES", f"more than one record found for external id field: {ids}")
        self.object = od.name
        self.ids = ids


def _fold(changes: list[Change]) -> list[Change]:
    """One change per record, at the place of its first write (Salesforce: several DML operations on a record in
    one transaction make one change event, salesforce-api.md §4.3)."""
    folded: dict[tuple[str, str], Change] = {}
    for change in changes:
        key = (change.object, change.new["Id"])
        first = folded.get(key)
        folded[key] = change if first is None else Change(change.object, first.old, change.new, change.user_id)
    return list(folded.values())


def _contract_end(start: str | None, term: int | None) -> str | None:
    if not start or not term:
        return None
    begin = date.fromisoformat(start)
    month = begin.month - 1 + int(term)
    year, month = begin.year + month // 12, month % 12 + 1
    day = min(begin.day, 28)
    return (date(year, month, day) - timedelta(days=1)).isoformat()
