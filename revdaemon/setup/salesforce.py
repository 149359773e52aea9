"""`revdaemon setup salesforce`: read the org's describe for what the config needs, and (with --apply) create
what is missing and grant it to the integration user.

Applying creates, through the Tooling API, each custom object and field revdaemon owns that describe lacks
(a field that exists but is hidden from the integration user is refused as a duplicate and left as it is), then
the permission set `revdaemon_integration` with read/edit on every custom field and read/create/edit on every
object the flows use, and assigns it to the integration user when asked. A created field is invisible to API
users until field-level security allows it [doc: Salesforce Help, "Field-Level Security"]: the permission set is
what makes the new fields usable. It never deletes a field or changes one's type. The user that runs it needs
"Customize Application" and "Manage Profiles and Permission Sets" (an administrator) [doc].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.connectors.salesforce_wire import WriteResult, soql_literal
from revdaemon.errors import SyncError
from revdaemon.setup.catalog import FieldDef, ObjectDef
from revdaemon.setup.metadata import PERMISSION_SET, PERMISSION_SET_LABEL, field_metadata, object_metadata
from revdaemon.setup.plan import PlanRow, Requirement, Status, grants

DUPLICATE_CODES = frozenset({"DUPLICATE_DEVELOPER_NAME", "DUPLICATE_VALUE", "DUPLICATE_NAME"})
OBJECT_GRANTS = {"PermissionsRead": True, "PermissionsCreate": True, "PermissionsEdit": True}
FIELD_GRANTS = {"PermissionsRead": True, "PermissionsEdit": True}


@dataclass(frozen=True)
class Action:
    what: str  # e.g. "created field Account.MRR__c"
    ok: bool = True
    detail: str = ""


async def describe_objects(salesforce: SalesforceClient, objects: Sequence[str]
                           ) -> dict[str, dict[str, dict[str, Any]] | None]:
    """Each object's fields as the integration user sees them; None for an object it cannot see."""
    described: dict[str, dict[str, dict[str, Any]] | None] = {}
    for sobject in objects:
        try:
            body = await salesforce.describe(sobject, refresh=True)
        except SyncError as exc:
            if exc.context.status == 404 or exc.context.error_code in ("NOT_FOUND", "INVALID_TYPE"):
                described[sobject] = None
                continue
            raise
        described[sobject] = {str(f["name"]): f for f in body.get("fields", [])}
    return described


async def apply(salesforce: SalesforceClient, rows: Sequence[PlanRow], required: Sequence[Requirement], *,
                assign: bool, assign_to: str | None = None) -> list[Action]:
    """Create what the plan says is missing and revdaemon owns, then grant everything required; assign the
    permission set to the user revdaemon logged in as (`assign`), or to the user named `assign_to` (an
    administrator runs setup, the integration user syncs)."""
    actions: list[Action] = []
    missing = [row for row in rows if row.status is Status.MISSING and row.applies]
    # Objects before their fields.
    for row in sorted(missing, key=lambda r: r.requirement.field is not None):
        definition = row.requirement.definition
        if isinstance(definition, ObjectDef):
            actions.append(await _create(salesforce, "CustomObject", definition.name, object_metadata(definition)))
        elif isinstance(definition, FieldDef):
            actions.append(await _create(salesforce, "CustomField", definition.qualified,
                                         field_metadata(definition, row.requirement.picklist)))
    if not all(action.ok for action in actions):
        return actions  # granting what failed to be made would fail too; the plan names what is left
    fields, objects = grants(required)
    actions.extend(await _grant(salesforce, fields, objects, assign=assign, assign_to=assign_to))
    return actions


async def _create(salesforce: SalesforceClient, kind: str, full_name: str, metadata: Mapping[str, Any]) -> Action:
    noun = "object" if kind == "CustomObject" else "field"
    try:
        await salesforce.tooling_create(kind, full_name, metadata)
    except SyncError as exc:
        if exc.context.error_code in DUPLICATE_CODES:
            return Action(f"{noun} {full_name} exists (hidden from the integration user): granted below")
        return Action(f"create {noun} {full_name}", ok=False, detail=exc.message)
    return Action(f"created {noun} {full_name}")


async def _grant(salesforce: SalesforceClient, fields: Sequence[str], objects: Sequence[str], *,
                 assign: bool, assign_to: str | None) -> list[Action]:
    actions: list[Action] = []
    permission_set = await _one_id(salesforce,
                                   f"SELECT Id FROM PermissionSet WHERE Name = {soql_literal(PERMISSION_SET)}")
    if permission_set is None:
        permission_set = await salesforce.create("PermissionSet", {"Name": PERMISSION_SET,
                                                                   "Label": PERMISSION_SET_LABEL})
        actions.append(Action(f"created permission set {PERMISSION_SET}"))
    parent = soql_literal(permission_set)
    granted_fields = {str(r["Field"]): r async for r in salesforce.query(
        f"SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions WHERE ParentId = {parent}")}
    new_fields = [{"ParentId": permission_set, "SobjectType": name.split(".", 1)[0], "Field": name,
                   "PermissionsRead": True, "PermissionsEdit": True}
                  for name in fields if name not in granted_fields]
    short_fields = [{"Id": granted_fields[name]["Id"], "PermissionsRead": True, "PermissionsEdit": True}
                    for name in fields if name in granted_fields and not _all(granted_fields[name], FIELD_GRANTS)]
    granted_objects = {str(r["SobjectType"]): r async for r in salesforce.query(
        "SELECT Id, SobjectType, PermissionsRead, PermissionsCreate, PermissionsEdit FROM ObjectPermissions "
        f"WHERE ParentId = {parent}")}
    new_objects = [{"ParentId": permission_set, "SobjectType": name, **OBJECT_GRANTS}
                   for name in objects if name not in granted_objects]
    short_objects = [{"Id": granted_objects[name]["Id"], **OBJECT_GRANTS} for name in objects
                     if name in granted_objects and not _all(granted_objects[name], OBJECT_GRANTS)]
    # Objects first: Salesforce grants a field only where its object is readable.
    for kind, new, short, noun in (("ObjectPermissions", new_objects, short_objects, "object"),
                                   ("FieldPermissions", new_fields, short_fields, "field")):
        results = [*(await salesforce.create_many(kind, new) if new else []),
                   *(await salesforce.update_many(kind, short) if short else [])]
        failed = [r for r in results if not r.ok]
        if new or short:
            actions.append(Action(f"granted the permission set {noun} access: {len(results) - len(failed)} "
                                  f"of {len(results)}", ok=not failed,
                                  detail="; ".join(_why(r) for r in failed[:5])))
    if assign or assign_to:
        actions.append(await _assign(salesforce, permission_set, assign_to))
    return actions


async def _assign(salesforce: SalesforceClient, permission_set: str, username: str | None) -> Action:
    if username is None:
        user = salesforce.integration_user_id
        if user is None:
            return Action("assign the permission set", ok=False, detail="the login did not say who the user is")
    else:
        user = await _one_id(salesforce, f"SELECT Id FROM User WHERE Username = {soql_literal(username)}")
        if user is None:
            return Action(f"assign the permission set to {username}", ok=False, detail="no user has that username")
    found = await _one_id(salesforce, "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = "
                                      f"{soql_literal(permission_set)} AND AssigneeId = {soql_literal(user)}")
    if found is not None:
        return Action(f"permission set already assigned to the user {username or user}")
    try:
        await salesforce.create("PermissionSetAssignment", {"PermissionSetId": permission_set, "AssigneeId": user})
    except SyncError as exc:
        # An Integration-licence user takes permission sets only once it has the Salesforce API Integration
        # permission set licence [3rd: setup guides of the licence]: say so with Salesforce's own error.
        return Action(f"assign the permission set to {username or user}", ok=False, detail=exc.message)
    return Action(f"assigned the permission set to the user {username or user}")


def _all(record: Mapping[str, Any], wanted: Mapping[str, bool]) -> bool:
    return all(record.get(name) for name in wanted)


def _why(result: WriteResult) -> str:
    if result.failure is not None:
        return result.failure.message
    return "; ".join(f"{e.code}: {e.message}" for e in result.errors) or "refused"


async def _one_id(salesforce: SalesforceClient, soql: str) -> str | None:
    async for record in salesforce.query(soql):
        return str(record["Id"])
    return None
