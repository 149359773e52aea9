"""The catalog's fields and objects as Salesforce Metadata API components: the `Metadata` body of a Tooling API
create, and the same as a Salesforce DX source file. Pure.

Metadata types and their attributes: Metadata API Developer Guide, CustomField and CustomObject [doc]. Long
text areas need `visibleLines`; a number's precision counts all digits and its scale the decimals; a lookup's
`deleteConstraint` SetNull keeps a record when the one it points at is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree

from revdaemon.setup.catalog import FieldDef, ObjectDef

METADATA_NAMESPACE = "http://soap.sforce.com/2006/04/metadata"
PERMISSION_SET = "revdaemon_integration"
PERMISSION_SET_LABEL = "revdaemon integration"
TEXT_MAX = 255  # a Text field's longest; longer is a Long Text Area


def field_metadata(field: FieldDef, picklist: Sequence[str] = ()) -> dict[str, Any]:
    """The CustomField metadata of `field` (without its fullName); `picklist`: the values to define."""
    meta: dict[str, Any] = {"label": field.label}
    if field.type == "string":
        meta |= {"type": "Text", "length": field.length}
    elif field.type == "textarea":
        meta |= ({"type": "LongTextArea", "length": field.length, "visibleLines": 3} if field.length > TEXT_MAX
                 else {"type": "TextArea"})
    elif field.type == "picklist":
        values = list(picklist or field.picklist)
        meta |= {"type": "Picklist", "valueSet": {
            "restricted": False,  # revdaemon writes the lookup tables' values; a person may add their own
            "valueSetDefinition": {"sorted": False,
                                   "value": [{"fullName": v, "label": v, "default": False} for v in values]}}}
    elif field.type == "currency":
        meta |= {"type": "Currency", "precision": 18, "scale": 2}
    elif field.type == "double":
        meta |= {"type": "Number", "precision": 18, "scale": 2}
    elif field.type == "percent":
        meta |= {"type": "Percent", "precision": 5, "scale": 2}
    elif field.type == "int":
        meta |= {"type": "Number", "precision": 18, "scale": 0}
    elif field.type == "boolean":
        meta |= {"type": "Checkbox", "defaultValue": "false"}
    elif field.type == "date":
        meta |= {"type": "Date"}
    elif field.type == "datetime":
        meta |= {"type": "DateTime"}
    elif field.type == "reference":
        relationship = field.name.removesuffix("__c").replace("_", "")
        meta |= {"type": "Lookup", "referenceTo": field.reference_to, "relationshipName": relationship,
                 "deleteConstraint": "SetNull"}
    else:
        raise ValueError(f"{field.qualified}: no Metadata API type for {field.type!r}")
    if field.external_id:
        meta["externalId"] = True
    if field.unique:
        meta["unique"] = True
    return meta


def object_metadata(obj: ObjectDef) -> dict[str, Any]:
    return {"label": obj.label, "pluralLabel": obj.label_plural, "deploymentStatus": "Deployed",
            "sharingModel": "ReadWrite", "nameField": {"type": "Text", "label": f"{obj.label} Name"}}


# --- Salesforce DX source format -------------------------------------------------------------------------


def field_file(field: FieldDef, picklist: Sequence[str] = ()) -> str:
    """`objects/<Object>/fields/<Field>.field-meta.xml`."""
    return _document("CustomField", {"fullName": field.name, **field_metadata(field, picklist)})


def object_file(obj: ObjectDef) -> str:
    """`objects/<Object>/<Object>.object-meta.xml`."""
    return _document("CustomObject", object_metadata(obj))


def permission_set_file(fields: Sequence[str], objects: Sequence[str]) -> str:
    """`permissionsets/revdaemon_integration.permissionset-meta.xml`: read and edit on `fields` (Object.Field),
    read, create and edit on `objects`."""
    return _document("PermissionSet", {
        "label": PERMISSION_SET_LABEL,
        "description": "What revdaemon's integration user reads and writes (made by revdaemon setup salesforce)",
        "fieldPermissions": [{"field": name, "readable": True, "editable": True} for name in sorted(fields)],
        "objectPermissions": [{"object": name, "allowRead": True, "allowCreate": True, "allowEdit": True,
                               "allowDelete": False, "viewAllRecords": False, "modifyAllRecords": False}
                              for name in sorted(objects)],
    })


def _document(root: str, body: Mapping[str, Any]) -> str:
    element = ElementTree.Element(root, xmlns=METADATA_NAMESPACE)
    _fill(element, body)
    ElementTree.indent(element, space="    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(element, encoding="unicode") + "\n"


def _fill(parent: ElementTree.Element, body: Mapping[str, Any]) -> None:
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            child = ElementTree.SubElement(parent, key)
            if isinstance(item, Mapping):
                _fill(child, item)
            else:
                child.text = str(item).lower() if isinstance(item, bool) else str(item)
