"""What the current config needs in Salesforce, compared with the org's describe: the setup plan. Pure.

`requirements` turns the fields each enabled flow reads and writes (engine/schema.flow_fields) into one
requirement per object and field, with its definition where revdaemon owns the field (catalog.py) and the
picklist values config.yaml's lookup tables add. `compare` sets each against describe, as the integration user
sees it (a field it may not read is absent from describe: field-level security), and says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from revdaemon.setup.catalog import FieldDef, ObjectDef, known_fields, known_objects

# Describe types a field of the defined type may have and still take what revdaemon writes.
COMPATIBLE_TYPES: Mapping[str, frozenset[str]] = {
    "string": frozenset({"string", "textarea"}),
    "textarea": frozenset({"textarea"}),
    "picklist": frozenset({"picklist", "string", "textarea"}),
    "currency": frozenset({"currency", "double"}),
    "double": frozenset({"double", "currency", "percent"}),
    "percent": frozenset({"percent", "double"}),
    "int": frozenset({"int", "double"}),
}
TEXT_TYPES = frozenset({"string", "textarea"})


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"  # setup --apply creates it (or, not revdaemon's own, a person does)
    READ_ONLY = "read-only"  # the integration user may read it, not write it
    WRONG = "wrong"  # present, but not as revdaemon needs it: a person changes it


@dataclass(frozen=True, kw_only=True)
class Requirement:
    object: str
    field: str | None  # None: the object itself
    definition: FieldDef | ObjectDef | None  # None: not revdaemon's own field (standard, or named by the mapping)
    picklist: tuple[str, ...] = ()  # the values revdaemon may write
    needed_by: tuple[str, ...] = ()  # the flows (or "sync status") that need it

    @property
    def name(self) -> str:
        return self.object if self.field is None else f"{self.object}.{self.field}"


@dataclass(frozen=True, kw_only=True)
class PlanRow:
    requirement: Requirement
    status: Status
    detail: str = ""
    fix: str = ""
    applies: bool = False  # `setup salesforce --apply` fixes it

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


def requirements(needed: Mapping[str, Mapping[str, frozenset[str]]],
                 lookups: Mapping[str, Mapping[str, str]]) -> list[Requirement]:
    """One requirement per object and per field that `needed` ({flow: {object: fields}}) names, objects first."""
    fields = known_fields()
    objects = known_objects()
    users: dict[tuple[str, str | None], set[str]] = {}
    for flow, by_object in needed.items():
        for sobject, names in by_object.items():
            users.setdefault((sobject, None), set()).add(flow)
            for name in names:
                if name != "Id":
                    users.setdefault((sobject, name), set()).add(flow)
    result: list[Requirement] = []
    for (sobject, field_name), flows in sorted(users.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        definition: FieldDef | ObjectDef | None
        picklist: tuple[str, ...] = ()
        if field_name is None:
            definition = objects.get(sobject)
        else:
            definition = fields.get(f"{sobject}.{field_name}")
            if definition is not None and definition.type == "picklist":
                from_table = lookups.get(definition.values_from or "", {}).values()
                picklist = tuple(dict.fromkeys((*definition.picklist, *from_table)))
        result.append(Requirement(object=sobject, field=field_name, definition=definition, picklist=picklist,
                                  needed_by=tuple(sorted(flows))))
    return result


def grants(required: Sequence[Requirement]) -> tuple[list[str], list[str]]:
    """What the integration user's permission set grants: read/edit on the custom fields (`Object.Field`;
    standard fields' access comes with the object and the profile, and most take no field permission), and
    read/create/edit on every object."""
    fields = sorted({r.name for r in required if r.field is not None and r.field.endswith("__c")})
    return fields, sorted({r.object for r in required})


def compare(required: list[Requirement], described: Mapping[str, Mapping[str, Mapping[str, Any]] | None]
            ) -> list[PlanRow]:
    """Each requirement against describe: {object: {field name: describe's field}, or None when the integration
    user cannot see the object (it does not exist, or no permission)}."""
    return [_compare_one(requirement, described.get(requirement.object)) for requirement in required]


def _compare_one(requirement: Requirement, fields: Mapping[str, Mapping[str, Any]] | None) -> PlanRow:
    own = requirement.definition is not None
    if requirement.field is None:
        if fields is not None:
            return PlanRow(requirement=requirement, status=Status.OK)
        if own:
            return PlanRow(requirement=requirement, status=Status.MISSING, applies=True,
                           detail="the object is not there, or the integration user may not read it",
                           fix="setup salesforce --apply creates it and grants the integration user access")
        return PlanRow(requirement=requirement, status=Status.MISSING,
                       detail="the integration user cannot see this object",
                       fix=f"give the integration user read/create/edit on {requirement.object} (profile or "
                           "permission set)")
    if fields is None:
        return PlanRow(requirement=requirement, status=Status.MISSING, applies=own,
                       detail="its object is not visible",
                       fix="see the object's row" if own else f"see the {requirement.object} row")
    found = {name.lower(): value for name, value in fields.items()}.get(requirement.field.lower())
    if found is None:
        if own:
            return PlanRow(requirement=requirement, status=Status.MISSING, applies=True,
                           detail="not in describe: not created, or not visible to the integration user",
                           fix="setup salesforce --apply creates it, or grants read/edit if it exists")
        return PlanRow(requirement=requirement, status=Status.MISSING,
                       detail="the mapping names it; revdaemon does not know its type",
                       fix="create it in Setup (or correct the mapping in config.yaml), and grant the integration "
                           "user read/edit")
    definition = requirement.definition
    if isinstance(definition, FieldDef):
        problems = _differences(definition, found, requirement.picklist)
        if problems:
            return PlanRow(requirement=requirement, status=Status.WRONG, detail="; ".join(problems),
                           fix="change the field in Setup (revdaemon never changes an existing field's type)")
    if not (found.get("updateable") or found.get("createable")) and not found.get("calculated"):
        return PlanRow(requirement=requirement, status=Status.READ_ONLY, applies=own,
                       detail="the integration user may read it but not edit it",
                       fix="setup salesforce --apply grants edit" if own else
                           "grant the integration user edit access to it (field-level security)")
    return PlanRow(requirement=requirement, status=Status.OK)


def _differences(definition: FieldDef, found: Mapping[str, Any], values: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    kind = str(found.get("type", ""))
    if kind not in COMPATIBLE_TYPES.get(definition.type, frozenset({definition.type})):
        problems.append(f"type {kind}, revdaemon writes {definition.type}")
        return problems
    if definition.type in TEXT_TYPES and kind in TEXT_TYPES and int(found.get("length") or 0) < definition.length:
        problems.append(f"length {found.get('length')}, needs {definition.length}")
    if definition.external_id and not found.get("externalId"):
        problems.append("not an External ID (revdaemon finds records again by it)")
    if definition.unique and not found.get("unique"):
        problems.append("not Unique (a second record with the same key would not be refused)")
    if kind == "picklist" and found.get("restrictedPicklist"):
        have = {str(v.get("value")) for v in found.get("picklistValues") or () if v.get("active", True)}
        absent = [v for v in values if v not in have]
        if absent:
            problems.append("restricted picklist lacks " + ", ".join(repr(v) for v in absent))
    return problems
