"""The Tooling API under /services/data/vNN.0/tooling (salesforce-api.md §7): custom fields and objects.

POST  tooling/sobjects/CustomObject        {"FullName": "X__c", "Metadata": {label, pluralLabel, nameField, ...}}
POST  tooling/sobjects/CustomField         {"FullName": "Obj.X__c", "Metadata": {type, label, ...}}
GET   tooling/sobjects/CustomField/{id}    the field's record with its Metadata
PATCH tooling/sobjects/CustomField/{id}    {"Metadata": {...}}: the whole metadata again (e.g. more picklist values)
GET   tooling/query?q=SELECT ... FROM CustomField|CustomObject WHERE ...

What this creates joins the org's schema ungranted (permissions.py): until a permission set opens it, the API user
sees nothing new. Every custom field and object of the org, seeded or created here, is a Tooling record; the
seeded ones' Metadata is derived from the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from revdaemon.sandbox.salesforce.errors import SfError, bad_request, not_found
from revdaemon.sandbox.salesforce.rest import Call, Reply
from revdaemon.sandbox.salesforce.schema import FieldDef, ObjectDef, Schema, _fd
from revdaemon.sandbox.salesforce.settings import CustomField, CustomObject
from revdaemon.sandbox.salesforce.soql import QueryEngine, project
from revdaemon.sandbox.salesforce.store import Record, Store

FIELD_PREFIX, OBJECT_PREFIX = "00N", "01I"  # [3rd] 00N "Custom Field Definition"; 01I [unverified]
# Metadata API field types -> the describe types the simulator knows [doc: describe of a custom Number field is
# "double" whatever its scale; the rest as in the field reference].
DESCRIBE_TYPES = {"Text": "string", "TextArea": "textarea", "LongTextArea": "textarea", "Picklist": "picklist",
                  "Number": "double", "Currency": "currency", "Percent": "percent", "Checkbox": "boolean",
                  "Date": "date", "DateTime": "datetime", "Lookup": "reference", "Email": "email", "Url": "url",
                  "Phone": "phone"}
METADATA_TYPES = {"string": "Text", "picklist": "Picklist", "double": "Number", "int": "Number",
                  "currency": "Currency", "percent": "Percent", "boolean": "Checkbox", "date": "Date",
                  "datetime": "DateTime", "reference": "Lookup", "email": "Email", "url": "Url", "phone": "Phone"}
NUMBER_METADATA = frozenset({"Number", "Currency", "Percent"})
METADATA_KEYS = ("type", "label", "description", "inlineHelpText", "length", "precision", "scale", "visibleLines",
                 "externalId", "unique", "required", "defaultValue", "referenceTo", "relationshipName",
                 "relationshipLabel", "deleteConstraint", "valueSet")
DEVELOPER_NAME_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*[A-Za-z0-9]?\Z")


def _integrity(message: str, fields: list[str] | None = None) -> SfError:
    # Bad metadata: FIELD_INTEGRITY_EXCEPTION with the Metadata API's deploy wording [assumed, as remembered].
    return bad_request("FIELD_INTEGRITY_EXCEPTION", message, fields or [])


def _developer_name(full: str, kind: str) -> str:
    if not full.endswith("__c") or not DEVELOPER_NAME_RE.match(full[:-3]) or full[:-3].endswith("_"):
        raise _integrity(f"The {kind} name {full} is not valid: an API name ends in __c, begins with a letter and "
                         "has only letters, digits and single underscores")  # [assumed]
    return full[:-3]


def field_from_metadata(schema: Schema, obj: str, name: str, meta: dict[str, Any]) -> CustomField:
    """Validates a CustomField's Metadata and gives the simulator's field; raises FIELD_INTEGRITY_EXCEPTION."""
    kind = meta.get("type")
    if kind not in DESCRIBE_TYPES:
        raise _integrity(f"Invalid or unsupported field type: {kind}", ["type"])  # [assumed]
    label = meta.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _integrity("Must specify a non-empty label for the CustomField", ["label"])
    length, precision, scale = meta.get("length"), meta.get("precision"), meta.get("scale")
    if kind == "Text" and not (isinstance(length, int) and 1 <= length <= 255):
        raise _integrity("Must specify 'length' between 1 and 255 for a CustomField of type Text", ["length"])
    if kind == "LongTextArea":
        if not (isinstance(length, int) and 256 <= length <= 131_072):
            raise _integrity("Length must be between 256 and 131072 for a CustomField of type LongTextArea",
                             ["length"])
        if not isinstance(meta.get("visibleLines"), int):
            raise _integrity("Must specify 'visibleLines' for a CustomField of type LongTextArea", ["visibleLines"])
    if kind in NUMBER_METADATA:
        if not (isinstance(precision, int) and 1 <= precision <= 18):
            raise _integrity(f"Must specify 'precision' for a CustomField of type {kind}", ["precision"])
        if not (isinstance(scale, int) and 0 <= scale <= precision):
            raise _integrity(f"Must specify 'scale' for a CustomField of type {kind}", ["scale"])
    elif kind not in ("Text", "LongTextArea") and length is not None:
        raise _integrity(f"Can not specify 'length' for a CustomField of type {kind}", ["length"])
    if kind == "Checkbox" and str(meta.get("defaultValue")).lower() not in ("true", "false"):
        raise _integrity("Must specify 'defaultValue' for a CustomField of type Checkbox", ["defaultValue"])
    values: tuple[str, ...] = ()
    restricted = False
    if kind == "Picklist":
        value_set = meta.get("valueSet") or {}
        entries = (value_set.get("valueSetDefinition") or {}).get("value") or []
        values = tuple(str(v.get("fullName")) for v in entries if isinstance(v, dict) and v.get("fullName"))
        if not values:
            raise _integrity("Must specify a valueSet with at least one value for a CustomField of type Picklist",
                             ["valueSet"])
        if len({v.lower() for v in values}) != len(values):
            raise _integrity("Duplicate picklist value", ["valueSet"])
        restricted = bool(value_set.get("restricted"))
    reference_to = meta.get("referenceTo")
    if kind == "Lookup":
        target = schema.get(str(reference_to or ""))
        if target is None:
            raise _integrity(f"referenceTo value of '{reference_to}' does not resolve to a valid sObject type",
                             ["referenceTo"])
        if not meta.get("relationshipName"):
            raise _integrity("Must specify 'relationshipName' for a CustomField of type Lookup", ["relationshipName"])
        reference_to = target.name
    for flag in ("externalId", "unique"):
        if meta.get(flag) and kind not in ("Text", "Number", "Email"):
            raise _integrity(f"Can not specify '{flag}' for a CustomField of type {kind}", [flag])
    describe_type = DESCRIBE_TYPES[kind]
    text_length = {"Text": length, "LongTextArea": length, "TextArea": 255, "Picklist": 255, "Email": 80,
                   "Url": 255, "Phone": 40}.get(kind, 0)
    return CustomField(object=obj, name=name, type=describe_type, label=label, length=int(text_length or 0),
                       external_id=bool(meta.get("externalId")), unique=bool(meta.get("unique")),
                       required=bool(meta.get("required")), picklist=values, restricted=restricted,
                       reference_to=reference_to if kind == "Lookup" else None,
                       relationship_name=meta.get("relationshipName") if kind == "Lookup" else None,
                       precision=precision if kind in NUMBER_METADATA else None,
                       scale=scale if kind in NUMBER_METADATA else None)


def metadata_of(f: FieldDef) -> dict[str, Any]:
    """A seeded field's Metadata, derived from its describe."""
    kind = METADATA_TYPES.get(f.type) or ("LongTextArea" if f.length > 255 else "TextArea")
    meta: dict[str, Any] = {key: None for key in METADATA_KEYS}
    meta.update(type=kind, label=f.label, externalId=f.external_id, unique=f.unique, required=not f.nillable
                and f.type != "boolean")
    if kind in ("Text", "LongTextArea"):
        meta["length"] = f.length
    if kind == "LongTextArea":
        meta["visibleLines"] = 3
    if kind in NUMBER_METADATA:
        meta.update(precision=18 if f.precision is None else f.precision,
                    scale=(0 if f.type == "int" else 2) if f.scale is None else f.scale)
    if kind == "Checkbox":
        meta["defaultValue"] = "false"
    if kind == "Lookup":
        meta.update(referenceTo=f.reference_to[0] if f.reference_to else None, deleteConstraint="SetNull",
                    relationshipName=(f.relationship_name or "")[:-3] or None)
    if kind == "Picklist":
        meta["valueSet"] = {"restricted": f.restricted, "valueSetDefinition": {"sorted": False, "value": [
            {"fullName": v, "label": v, "default": False} for v in f.picklist]}}
    return meta


def _tooling_schema() -> Schema:
    schema = Schema(standard=False)
    common = (_fd("DeveloperName", flags="r"), _fd("FullName"), _fd("NamespacePrefix"),
              _fd("Metadata", "textarea", length=0), _fd("Description", "textarea", length=255))
    schema._add_object("CustomField", "Custom Field", "Custom Fields", FIELD_PREFIX, False,
                       (*common, _fd("TableEnumOrId", flags="r")))
    schema._add_object("CustomObject", "Custom Object", "Custom Objects", OBJECT_PREFIX, False, common)
    return schema


class ToolingApi:
    """Handles calls whose path starts with `tooling/` (mounted on RestApi)."""

    def __init__(self, schema: Schema, store: Store, clock: Callable[[], float]) -> None:
        self.schema = schema
        self.store = store
        self.clock = clock
        self.engine = QueryEngine(_tooling_schema())
        self.ids: dict[tuple[str, ...], str] = {}  # (object,) or (object, field) -> tooling id
        self.metadata: dict[str, dict[str, Any]] = {}  # id -> Metadata as created or last updated here

    def handle(self, call: Call) -> Reply:
        seg, method = call.segments[1:], call.method
        if seg == ["query"] and method == "GET":
            return self._query(call)
        if len(seg) == 2 and seg[0] == "sobjects" and method == "POST":
            if seg[1] == "CustomField":
                return self._create_field(call)
            if seg[1] == "CustomObject":
                return self._create_object(call)
        if len(seg) == 3 and seg[:2] == ["sobjects", "CustomField"]:
            if method == "GET":
                return Reply(status=200, body=self._field_record(seg[2], call.version))
            if method == "PATCH":
                return self._update_field(seg[2], call)
            raise SfError(405, "METHOD_NOT_ALLOWED",
                          f"HTTP Method '{method}' not allowed. Allowed are HEAD,GET,PATCH")
        raise not_found()

    # ---- the records ------------------------------------------------------------------------------

    def _id(self, *key: str) -> str:
        if key not in self.ids:
            self.ids[key] = self.store.ids.new(FIELD_PREFIX if len(key) == 2 else OBJECT_PREFIX)
        return self.ids[key]

    def _rows(self) -> dict[str, dict[str, Record]]:
        fields: dict[str, Record] = {}
        objects: dict[str, Record] = {}
        for od in self.schema.objects.values():
            if od.custom:
                object_id = self._id(od.name)
                objects[object_id] = {"Id": object_id, "DeveloperName": od.name[:-3], "FullName": od.name,
                                      "NamespacePrefix": None, "IsDeleted": False,
                                      "Metadata": self.metadata.get(object_id) or _object_metadata(od)}
            for f in od.fields.values():
                if not f.custom:
                    continue
                field_id = self._id(od.name, f.name)
                fields[field_id] = {"Id": field_id, "DeveloperName": f.name[:-3], "FullName": f"{od.name}.{f.name}",
                                    "TableEnumOrId": self._id(od.name) if od.custom else od.name,
                                    "NamespacePrefix": None, "IsDeleted": False,
                                    "Metadata": self.metadata.get(field_id) or metadata_of(f)}
        return {"CustomField": fields, "CustomObject": objects}

    def _find_field(self, raw_id: str) -> tuple[ObjectDef, FieldDef, Record]:
        rows = self._rows()["CustomField"]
        row = rows.get(raw_id) or next((r for i, r in rows.items() if i[:15] == raw_id[:15]), None)
        if row is None:
            raise not_found()
        obj, _, name = row["FullName"].partition(".")
        od = self.schema.get(obj)
        assert od is not None
        return od, od.fields[name], row

    def _field_record(self, raw_id: str, version: str) -> dict[str, Any]:
        with self.store.lock:
            _od, _f, row = self._find_field(raw_id)
        return {"attributes": {"type": "CustomField",
                               "url": f"/services/data/v{version}/tooling/sobjects/CustomField/{row['Id']}"},
                **{k: v for k, v in row.items() if k != "IsDeleted"}}

    # ---- query ------------------------------------------------------------------------------------

    def _query(self, call: Call) -> Reply:
        compiled = self.engine.compile(call.params.get("q", ""))
        kind = compiled.object.name
        with self.store.lock:
            table = self._rows()[kind]
            rows = self.engine.run(compiled, table, lambda _id: None, include_deleted=False, now=self.clock())
        heavy = [p.field.name for p in compiled.select if p.field.name in ("Metadata", "FullName")]
        if heavy and len(rows) > 1:
            # [doc] Tooling API object reference (FullName, Metadata): "Query this field only if the query result
            # contains no more than one record. Otherwise, an error is returned." Wording [assumed].
            raise bad_request("MALFORMED_QUERY", "When retrieving results with Metadata or FullName fields, the "
                                                 "query qualifications must specify no more than one row for "
                                                 f"retrieval. Result size: {len(rows)}")
        records = []
        for row in rows:
            out = project(compiled, row, lambda _id: None, call.version, lambda _id: kind)
            out["attributes"]["url"] = f"/services/data/v{call.version}/tooling/sobjects/{kind}/{row['Id']}"
            records.append(out)
        # [assumed] the Tooling query result's extra keys (size, queryLocator, entityTypeName).
        return Reply(status=200, body={"size": len(records), "totalSize": len(records), "done": True,
                                       "queryLocator": None, "entityTypeName": kind, "records": records})

    # ---- writes -----------------------------------------------------------------------------------

    @staticmethod
    def _payload(call: Call) -> tuple[str, dict[str, Any]]:
        body = call.body if isinstance(call.body, dict) else None
        meta = body.get("Metadata") if body else None
        if body is None or not isinstance(meta, dict):
            raise bad_request("JSON_PARSER_ERROR", "The request body must be a JSON object with Metadata")
        return str(body.get("FullName") or meta.get("fullName") or ""), meta

    @staticmethod
    def _created(kind: str, record_id: str, version: str) -> Reply:
        return Reply(status=201, body={"id": record_id, "success": True, "errors": [], "warnings": [], "infos": []},
                     headers={"Location": f"/services/data/v{version}/tooling/sobjects/{kind}/{record_id}"})

    def _create_field(self, call: Call) -> Reply:
        full, meta = self._payload(call)
        obj, dot, name = full.partition(".")
        _developer_name(name, "field")
        with self.store.lock:
            od = self.schema.get(obj) if dot else None
            if od is None:
                raise _integrity(f"Cannot find the object {obj!r} for the field {full!r}", ["FullName"])  # [assumed]
            if od.field(name) is not None:
                # [assumed] code and wording (as remembered from the Metadata API's duplicate-name error).
                raise bad_request("DUPLICATE_DEVELOPER_NAME", f"There is already a field named {name[:-3]} on "
                                                              f"{od.name}.", ["FullName"])
            field = self.schema.add_field(field_from_metadata(self.schema, od.name, name, meta), granted=False)
            self._backfill(od, field, meta)
            field_id = self._id(od.name, field.name)
            self.metadata[field_id] = _normalized(meta)
        return self._created("CustomField", field_id, call.version)

    def _backfill(self, od: ObjectDef, field: FieldDef, meta: dict[str, Any]) -> None:
        """Existing records read a new checkbox as its default, like the org's own backfill."""
        if field.type != "boolean":
            return
        default = str(meta.get("defaultValue")).lower() == "true"
        table = self.store.table(od.name)
        for record_id, record in list(table.items()):
            table[record_id] = {**record, field.name: default}

    def _update_field(self, raw_id: str, call: Call) -> Reply:
        _full, meta = self._payload(call)
        with self.store.lock:
            od, old, row = self._find_field(raw_id)
            if meta.get("type") != row["Metadata"]["type"]:
                # [assumed] Salesforce converts some types in place; the simulator refuses every type change.
                raise _integrity(f"Cannot change the type of {row['FullName']} from {row['Metadata']['type']} to "
                                 f"{meta.get('type')}", ["type"])
            new = field_from_metadata(self.schema, od.name, old.name, meta)
            self.schema.add_field(new, granted=old.granted)
            self.metadata[row["Id"]] = _normalized(meta)
        return Reply(status=204)

    def _create_object(self, call: Call) -> Reply:
        full, meta = self._payload(call)
        _developer_name(full, "object")
        name_field = meta.get("nameField")
        for key in ("label", "pluralLabel"):
            if not isinstance(meta.get(key), str) or not meta[key].strip():
                raise _integrity(f"Must specify a non-empty {key} for the CustomObject", [key])
        if not isinstance(name_field, dict) or name_field.get("type") not in ("Text", "AutoNumber") \
                or not name_field.get("label"):
            raise _integrity("Must specify a nameField of type Text or AutoNumber with a label", ["nameField"])
        for key, allowed in (("deploymentStatus", ("Deployed", "InDevelopment")),
                             ("sharingModel", ("ReadWrite", "Read", "Private", "ControlledByParent"))):
            if meta.get(key) not in allowed:
                raise _integrity(f"Must specify a valid {key} for the CustomObject", [key])  # [assumed]
        with self.store.lock:
            if self.schema.get(full) is not None:
                raise bad_request("DUPLICATE_DEVELOPER_NAME", f"There is already a Custom Object named "
                                                              f"{full[:-3]}.", ["FullName"])  # [assumed]
            co = CustomObject(name=full, label=meta["label"], label_plural=meta["pluralLabel"])
            od = self.schema.add_custom_object(co, granted=False, auto_number=name_field["type"] == "AutoNumber")
            object_id = self._id(od.name)
            self.metadata[object_id] = {**_object_metadata(od), **meta}
        return self._created("CustomObject", object_id, call.version)


def _object_metadata(od: ObjectDef) -> dict[str, Any]:
    name = od.fields["Name"]
    return {"label": od.label, "pluralLabel": od.label_plural, "deploymentStatus": "Deployed",
            "sharingModel": "ReadWrite",
            "nameField": {"type": "Text" if name.createable else "AutoNumber", "label": name.label}}


def _normalized(meta: dict[str, Any]) -> dict[str, Any]:
    return {**{key: None for key in METADATA_KEYS}, **{k: v for k, v in meta.items() if k != "fullName"}}
