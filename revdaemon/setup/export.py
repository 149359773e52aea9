"""`setup salesforce --export DIR`: what the config needs, as a Salesforce DX source folder for a team that
deploys metadata through its own pipeline (`sf project deploy start --source-dir force-app`). Pure: the files
as {relative path: text}; the CLI writes them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from revdaemon.setup.catalog import FieldDef, ObjectDef
from revdaemon.setup.metadata import PERMISSION_SET, field_file, object_file, permission_set_file
from revdaemon.setup.plan import Requirement, grants

SOURCE_ROOT = "force-app/main/default"
SOURCE_API_VERSION = "62.0"


def dx_source(required: Sequence[Requirement]) -> dict[str, str]:
    """revdaemon's own objects and fields among `required`, and the permission set granting the integration user
    read/edit on every field (its own and the standard ones) and read/create/edit on every object it needs."""
    files: dict[str, str] = {"sfdx-project.json": json.dumps({
        "packageDirectories": [{"path": "force-app", "default": True}], "name": "revdaemon",
        "sourceApiVersion": SOURCE_API_VERSION}, indent=2) + "\n"}
    for requirement in required:
        definition = requirement.definition
        if isinstance(definition, ObjectDef):
            files[f"{SOURCE_ROOT}/objects/{definition.name}/{definition.name}.object-meta.xml"] = object_file(
                definition)
        elif isinstance(definition, FieldDef):
            path = f"{SOURCE_ROOT}/objects/{definition.object}/fields/{definition.name}.field-meta.xml"
            files[path] = field_file(definition, requirement.picklist)
    files[f"{SOURCE_ROOT}/permissionsets/{PERMISSION_SET}.permissionset-meta.xml"] = permission_set_file(
        *grants(required))
    return files
