"""Field-level security and object permissions for API users (salesforce-api.md §7.2, §7.3).

Theory of operation. The org's schema holds every field and object; `granted` says the user's profile opens it.
Every seeded field and object is granted (the simulator's org as it always was), a field or object made through
the Tooling API is not, and `SalesforceSimSettings.ungranted_fields` can withhold seeded fields. An ungranted
field is readable by a user only through a FieldPermissions row (PermissionsRead) of a PermissionSet assigned to
that user, editable only with PermissionsEdit too; an ungranted object likewise through ObjectPermissions.
Permission sets add to the profile, never take away [doc: FieldPermissions, "To grant a user access to a field,
associate a FieldPermissions record with a PermissionSet that's assigned to a user"].

`AccessControl.schema_for(user)` gives the user's view: a Schema without what the user cannot read, with
read-only fields marked, built once per (schema version, grants). Describe, SOQL and record reads run on the view,
so a hidden field answers as a field that does not exist; `check_write` refuses writes the view forbids before
the store applies them. The rules at the bottom keep permission records valid (`Store.rules`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from revdaemon.sandbox.salesforce.errors import bad_request
from revdaemon.sandbox.salesforce.schema import ObjectDef, Schema
from revdaemon.sandbox.salesforce.store import READ_ONLY_MESSAGE, Record, Rule, Store

# Object permission flags and the flags each one needs [doc: ObjectPermissions field descriptions, e.g.
# "PermissionsEdit ... Requires PermissionsRead"; the full chain is as remembered, unverified].
OBJECT_FLAGS = ("PermissionsRead", "PermissionsCreate", "PermissionsEdit", "PermissionsDelete",
                "PermissionsViewAllRecords", "PermissionsModifyAllRecords")
NEEDS = {"PermissionsCreate": ("PermissionsRead",), "PermissionsEdit": ("PermissionsRead",),
         "PermissionsDelete": ("PermissionsRead", "PermissionsEdit"), "PermissionsViewAllRecords": ("PermissionsRead",),
         "PermissionsModifyAllRecords": ("PermissionsRead", "PermissionsEdit", "PermissionsDelete",
                                         "PermissionsViewAllRecords")}
DUPLICATE_UNKNOWN = "duplicate value found: <unknown> duplicates value on record with id: <unknown>"  # [assumed]
NO_ACCESS_MESSAGE = "insufficient access rights on object id"  # [assumed]
API_NAME_RE = re.compile(r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*\Z")


@dataclass(frozen=True)
class ObjectAccess:
    read: bool = True
    create: bool = True
    edit: bool = True
    delete: bool = True


FULL = ObjectAccess()


@dataclass(frozen=True)
class Grants:
    """What a user's assigned permission sets add: fields as (object, field) lower-cased -> editable."""

    fields: frozenset[tuple[str, str, bool]]
    objects: frozenset[tuple[str, ObjectAccess]]

    def field_map(self) -> dict[tuple[str, str], bool]:
        return {(o, f): edit for o, f, edit in self.fields}

    def object_map(self) -> dict[str, ObjectAccess]:
        return dict(self.objects)


def grants_of(store: Store, user_id: str) -> Grants:
    """The union of every live permission set assigned to the user (call with `store.lock` held)."""
    live = {r["Id"] for r in store.table("PermissionSet").values() if not r["IsDeleted"]}
    assigned = {r["PermissionSetId"] for r in store.table("PermissionSetAssignment").values()
                if not r["IsDeleted"] and r["AssigneeId"] == user_id} & live
    fields: dict[tuple[str, str], bool] = {}
    for row in store.table("FieldPermissions").values():
        if row["IsDeleted"] or row["ParentId"] not in assigned or not row["PermissionsRead"]:
            continue
        obj, _, name = str(row["Field"]).partition(".")
        key = (obj.lower(), name.lower())
        fields[key] = fields.get(key, False) or bool(row["PermissionsEdit"])
    objects: dict[str, ObjectAccess] = {}
    for row in store.table("ObjectPermissions").values():
        if row["IsDeleted"] or row["ParentId"] not in assigned or not row["PermissionsRead"]:
            continue
        obj = str(row["SobjectType"]).lower()
        had = objects.get(obj, ObjectAccess(False, False, False, False))
        objects[obj] = ObjectAccess(True, had.create or bool(row["PermissionsCreate"]),
                                    had.edit or bool(row["PermissionsEdit"]),
                                    had.delete or bool(row["PermissionsDelete"]))
    return Grants(frozenset((o, f, e) for (o, f), e in fields.items()), frozenset(objects.items()))


def build_view(schema: Schema, grants: Grants) -> Schema:
    """The schema as a user with these grants sees it."""
    field_grants, object_grants = grants.field_map(), grants.object_map()
    view = Schema(standard=False)
    for od in schema.objects.values():
        access = FULL if od.granted else object_grants.get(od.name.lower())
        if access is None:
            continue
        copy = ObjectDef(name=od.name, label=od.label, label_plural=od.label_plural, key_prefix=od.key_prefix,
                         custom=od.custom, granted=od.granted, can_create=access.create, can_edit=access.edit,
                         can_delete=access.delete, restricted=access != FULL)
        read_only: set[str] = set()
        for f in od.fields.values():
            if f.granted or f.required:  # a required field is always visible; FLS cannot hide it [assumed]
                copy.fields[f.name] = f
                continue
            copy.restricted = True
            editable = field_grants.get((od.name.lower(), f.name.lower()))
            if editable is None:
                continue
            if not editable:
                f = replace(f, createable=False, updateable=False)
                read_only.add(f.name)
            copy.fields[f.name] = f
        copy.read_only = frozenset(read_only)
        copy._reindex()
        view.put(copy)
    return view


class AccessControl:
    """Per-user views of one org's schema, cached until the schema or the user's grants change."""

    def __init__(self, schema: Schema, store: Store) -> None:
        self.schema = schema
        self.store = store
        self._governed: tuple[int, bool] = (-1, False)
        self._views: dict[tuple[int, Grants], Schema] = {}

    def _anything_governed(self) -> bool:
        version, governed = self._governed
        if version != self.schema.version:
            governed = any(not od.granted or any(not f.granted for f in od.fields.values())
                           for od in self.schema.objects.values())
            self._governed = (self.schema.version, governed)
        return governed

    def schema_for(self, user_id: str) -> Schema:
        with self.store.lock:
            if not self._anything_governed():
                return self.schema  # nothing withheld: every user sees the whole org (the seeded case)
            grants = grants_of(self.store, user_id)
            key = (self.schema.version, grants)
            view = self._views.get(key)
            if view is None:
                if len(self._views) > 64:
                    self._views.clear()
                view = self._views[key] = build_view(self.schema, grants)
            return view


def check_write(od: ObjectDef, data: Mapping[str, Any], operation: str) -> None:
    """Refuses a write the user's view forbids: an unseen field answers as a missing one (INVALID_FIELD, as the
    store does for unknown names), a read-only one with INVALID_FIELD_FOR_INSERT_UPDATE [doc-ish: the message
    itself names "your profile or permission set"]."""
    if not od.restricted:
        return
    allowed = {"create": od.can_create, "update": od.can_edit, "upsert": od.can_create or od.can_edit,
               "delete": od.can_delete}[operation]
    if not allowed:
        raise bad_request("INSUFFICIENT_ACCESS_OR_READONLY", NO_ACCESS_MESSAGE, [])
    read_only: list[str] = []
    for key in data:
        if key == "attributes":
            continue
        found = od.field(key)
        if found is None:
            raise bad_request("INVALID_FIELD", f"No such column '{key}' on sobject of type {od.name}", [])
        if found.name in od.read_only:
            read_only.append(found.name)
    if read_only:
        raise bad_request("INVALID_FIELD_FOR_INSERT_UPDATE", READ_ONLY_MESSAGE.format(", ".join(read_only)),
                          read_only)


# ---- rules for permission records (Store.rules) ------------------------------------------------------

def _live(store: Store, obj: str, record: Record) -> list[Record]:
    return [r for r in store.table(obj).values() if not r["IsDeleted"] and r["Id"] != record["Id"]]


def _permission_set(store: Store, record: Record, old: Record | None) -> None:
    name = str(record.get("Name") or "")
    if not API_NAME_RE.match(name) or name.endswith("_"):
        # [assumed] wording; the rule is the developer-name rule every API name follows.
        raise bad_request("FIELD_INTEGRITY_EXCEPTION", "The API Name can only contain underscores and alphanumeric "
                                                       "characters. It must be unique, begin with a letter, not "
                                                       "include spaces, not end with an underscore, and not contain "
                                                       "two consecutive underscores.", ["Name"])
    if any(str(r["Name"]).lower() == name.lower() for r in _live(store, "PermissionSet", record)):
        raise bad_request("DUPLICATE_DEVELOPER_NAME", f"The API name {name} is already in use.", ["Name"])  # [assumed]


def _picklist_value(record: Record, name: str, label: str, valid: bool) -> None:
    if not valid:
        raise bad_request("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                          f"{label}: bad value for restricted picklist field: {record.get(name)}", [name])


def _dependencies(record: Record, flags: tuple[str, ...]) -> None:
    for flag in flags:
        missing = [need for need in NEEDS.get(flag, ()) if record.get(need) is not True and record.get(flag)]
        if missing:  # [assumed] wording
            raise bad_request("FIELD_INTEGRITY_EXCEPTION",
                              f"Permission {flag[len('Permissions'):]} depends on permission(s): "
                              f"{', '.join(m[len('Permissions'):] for m in missing)}", [flag])


def _field_permissions(store: Store, record: Record, old: Record | None) -> None:
    od = store.schema.get(str(record.get("SobjectType") or ""))
    _picklist_value(record, "SobjectType", "SObject Type Name", od is not None)
    assert od is not None
    obj, _, name = str(record.get("Field") or "").partition(".")
    found = od.field(name) if obj.lower() == od.name.lower() else None
    # Field is a restricted picklist of the object's permissionable fields [doc: FieldPermissions.Field].
    _picklist_value(record, "Field", "Field Name", found is not None and not found.required and found.type != "id")
    assert found is not None
    record.update(SobjectType=od.name, Field=f"{od.name}.{found.name}")
    _dependencies(record, ("PermissionsEdit",))
    if any(r["ParentId"] == record["ParentId"] and str(r["Field"]).lower() == record["Field"].lower()
           for r in _live(store, "FieldPermissions", record)):
        raise bad_request("DUPLICATE_VALUE", DUPLICATE_UNKNOWN, [])


def _object_permissions(store: Store, record: Record, old: Record | None) -> None:
    od = store.schema.get(str(record.get("SobjectType") or ""))
    _picklist_value(record, "SobjectType", "SObject Type Name", od is not None)
    assert od is not None
    record["SobjectType"] = od.name
    _dependencies(record, OBJECT_FLAGS)
    if any(r["ParentId"] == record["ParentId"] and r["SobjectType"] == od.name
           for r in _live(store, "ObjectPermissions", record)):
        raise bad_request("DUPLICATE_VALUE", DUPLICATE_UNKNOWN, [])


def _assignment(store: Store, record: Record, old: Record | None) -> None:
    if any(r["AssigneeId"] == record["AssigneeId"] and r["PermissionSetId"] == record["PermissionSetId"]
           for r in _live(store, "PermissionSetAssignment", record)):
        raise bad_request("DUPLICATE_VALUE", DUPLICATE_UNKNOWN, [])


RULES: dict[str, Rule] = {"PermissionSet": _permission_set, "FieldPermissions": _field_permissions,
                          "ObjectPermissions": _object_permissions, "PermissionSetAssignment": _assignment}
