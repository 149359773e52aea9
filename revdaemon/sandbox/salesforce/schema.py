"""The org's schema: standard objects the sync touches, configurable custom fields and objects, and describe.

Field lists follow salesforce-api.md §5. Lookups are case-insensitive like the real API; answers use the
canonical names. `Schema.version` changes on every schema edit so caches (describe, parsed SOQL) refresh; versions
are unique across every Schema, so a per-user view (permissions.py) never shares a cache key with another.

`granted` on a field or object says the integration user's profile grants it (every seeded field and object,
as before); one created through the Tooling API is not granted, and only permission sets open it (permissions.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from revdaemon.sandbox.salesforce.settings import CustomField, CustomObject
from revdaemon.sandbox.sfids import CUSTOM_PREFIX_START, KEY_PREFIXES

SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "double": "xsd:double",
    "currency": "xsd:double", "percent": "xsd:double", "int": "xsd:int", "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
TEXT_TYPES = frozenset({"string", "textarea", "picklist", "email", "phone", "url", "combobox"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})
DESCRIBE_TYPE_NAMES = {"datetime": "datetime"}
# Setup objects' key prefixes (sfids.KEY_PREFIXES holds the data objects'). 0PS: [doc] PermissionSetAssignment
# reference example id '0PS30000000000e'; 0Pa, 01k, 110: [unverified] as commonly seen in orgs.
SETUP_PREFIXES = {"PermissionSet": "0PS", "PermissionSetAssignment": "0Pa", "FieldPermissions": "01k",
                  "ObjectPermissions": "110"}
_VERSIONS = itertools.count(1)


@dataclass(frozen=True, kw_only=True)
class FieldDef:
    name: str
    type: str
    label: str
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    defaulted_on_create: bool = False
    length: int = 0
    picklist: tuple[str, ...] = ()
    restricted: bool = False  # a restricted picklist refuses values outside `picklist`
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    custom: bool = False
    calculated: bool = False
    precision: int | None = None  # None: 18 for double/currency/percent
    scale: int | None = None  # None: 2 for double/currency/percent
    granted: bool = True  # the profile grants it; False: visible only through an assigned permission set

    @property
    def required(self) -> bool:
        return self.createable and not self.nillable and not self.defaulted_on_create

    def describe(self) -> dict[str, Any]:
        is_text = self.type in TEXT_TYPES
        decimal = self.type in ("currency", "double", "percent")
        return {
            "name": self.name, "type": self.type, "label": self.label, "nillable": self.nillable,
            "createable": self.createable, "updateable": self.updateable, "externalId": self.external_id,
            "unique": self.unique, "idLookup": self.type == "id" or self.external_id,
            "defaultedOnCreate": self.defaulted_on_create, "calculated": self.calculated, "custom": self.custom,
            "length": self.length if is_text else 0, "byteLength": self.length * 3 if is_text else 0,
            "precision": (18 if self.precision is None else self.precision) if decimal else 0,
            "scale": (2 if self.scale is None else self.scale) if decimal else 0,
            "digits": 9 if self.type == "int" else 0,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "filterable": self.type != "textarea" or self.length <= 255, "sortable": self.type != "textarea",
            "groupable": self.type not in ("textarea", "double", "currency", "percent", "datetime"),
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "referenceTo": list(self.reference_to), "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted, "autoNumber": False, "caseSensitive": False,
        }


@dataclass(kw_only=True)
class ObjectDef:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool = False
    granted: bool = True  # the profile grants it; False: visible only through an assigned permission set
    # A per-user view (permissions.py) narrows these; the org's own schema leaves them open.
    can_create: bool = True
    can_edit: bool = True
    can_delete: bool = True
    read_only: frozenset[str] = frozenset()  # fields readable but not editable for this user (FLS)
    restricted: bool = False  # a view that hides or narrows something
    fields: dict[str, FieldDef] = field(default_factory=dict)
    _lower: dict[str, str] = field(default_factory=dict)
    _relationships: dict[str, FieldDef] = field(default_factory=dict)

    def add(self, f: FieldDef) -> None:
        self.fields[f.name] = f
        self._reindex()

    def remove(self, name: str) -> None:
        self.fields.pop(name, None)
        self._reindex()

    def _reindex(self) -> None:
        self._lower = {n.lower(): n for n in self.fields}
        self._relationships = {f.relationship_name.lower(): f for f in self.fields.values() if f.relationship_name}

    def field(self, name: str) -> FieldDef | None:
        canonical = self._lower.get(name.lower())
        return self.fields[canonical] if canonical else None

    def relationship(self, name: str) -> FieldDef | None:
        return self._relationships.get(name.lower())

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name, "label": self.label, "labelPlural": self.label_plural, "keyPrefix": self.key_prefix,
            "custom": self.custom, "createable": self.can_create, "updateable": self.can_edit,
            "deletable": self.can_delete, "queryable": True,
            "retrieveable": True, "searchable": True, "triggerable": True, "undeletable": True,
            "childRelationships": [], "recordTypeInfos": [],
            "fields": [f.describe() for f in self.fields.values()],
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }

    def summary(self, version: str) -> dict[str, Any]:
        full = self.describe(version)
        return {k: v for k, v in full.items() if k not in ("fields", "childRelationships", "recordTypeInfos")}


def _fd(name: str, type_: str = "string", flags: str = "", label: str | None = None, **kw: Any) -> FieldDef:
    """Compact field spec. flags: r = required, o = read-only, c = create-only, d = defaulted on create."""
    read_only = "o" in flags
    if type_ == "reference" and "relationship_name" not in kw:
        kw["relationship_name"] = name[:-2] if name.endswith("Id") else name[:-3] + "__r"
    if type_ in ("string", "textarea", "email", "phone", "url", "picklist") and "length" not in kw:
        kw["length"] = 32_000 if type_ == "textarea" else 255
    return FieldDef(
        name=name, type=type_, label=label or name, nillable="r" not in flags and type_ != "boolean",
        createable=not read_only, updateable=not read_only and "c" not in flags,
        defaulted_on_create="d" in flags or type_ == "boolean", calculated=read_only and "a" in flags, **kw,
    )


def _ref(name: str, *targets: str, flags: str = "", relationship_name: str | None = None) -> FieldDef:
    if relationship_name:
        return _fd(name, "reference", flags, reference_to=targets, relationship_name=relationship_name)
    return _fd(name, "reference", flags, reference_to=targets)


AUDIT_FIELDS = (
    _fd("IsDeleted", "boolean", "o"),
    _fd("CreatedDate", "datetime", "o"),
    _ref("CreatedById", "User", flags="o"),
    _fd("LastModifiedDate", "datetime", "o"),
    _ref("LastModifiedById", "User", flags="o"),
    _fd("SystemModstamp", "datetime", "o"),
)
OWNER = _ref("OwnerId", "User", flags="d")
STAGE_NAMES = ("Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
               "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost")
RELATED_TO = ("Account", "Opportunity", "Contract", "Product2")

STANDARD_OBJECTS: dict[str, tuple[str, tuple[FieldDef, ...]]] = {
    "Account": ("Accounts", (
        _fd("Name", flags="r"), _fd("Type", "picklist", picklist=("Prospect", "Customer - Direct", "Other")),
        _ref("ParentId", "Account"), _fd("BillingStreet", "textarea", length=255), _fd("BillingCity"),
        _fd("BillingState"), _fd("BillingPostalCode"), _fd("BillingCountry"), _fd("ShippingCity"),
        _fd("ShippingCountry"), _fd("Phone", "phone"), _fd("Website", "url"),
        _fd("Industry", "picklist", picklist=("Technology", "Retail", "Healthcare", "Finance", "Other")),
        _fd("AnnualRevenue", "currency"), _fd("NumberOfEmployees", "int"), _fd("AccountNumber"),
        _fd("Description", "textarea"), OWNER,
    )),
    "Contact": ("Contacts", (
        _ref("AccountId", "Account"), _fd("FirstName"), _fd("LastName", flags="r"), _fd("Name", flags="oa"),
        _fd("Email", "email"), _fd("Phone", "phone"), _fd("Title"), _fd("MailingCity"), _fd("MailingCountry"),
        _fd("Description", "textarea"), OWNER,
    )),
    "Opportunity": ("Opportunities", (
        _ref("AccountId", "Account"), _fd("Name", flags="r"),
        _fd("StageName", "picklist", "r", picklist=STAGE_NAMES, label="Stage"),
        _fd("CloseDate", "date", "r"), _fd("Amount", "currency"), _fd("Probability", "percent", "d"),
        _fd("Type", "picklist", picklist=("New Business", "Existing Business", "Renewal")),
        _fd("LeadSource", "picklist", picklist=("Web", "Phone Inquiry", "Partner Referral", "Other")),
        _fd("NextStep"), _fd("Description", "textarea"), _fd("IsClosed", "boolean", "oa"),
        _fd("IsWon", "boolean", "oa"),
        _fd("ForecastCategoryName", "picklist", "d",
            picklist=("Omitted", "Pipeline", "Best Case", "Commit", "Closed")),
        _ref("Pricebook2Id", "Pricebook2"), _ref("ContractId", "Contract"),
        _fd("HasOpportunityLineItem", "boolean", "oa"), OWNER,
    )),
    "OpportunityLineItem": ("Opportunity Product", (
        _ref("OpportunityId", "Opportunity", flags="rc"), _ref("PricebookEntryId", "PricebookEntry", flags="rc"),
        _ref("Product2Id", "Product2", flags="cd"), _fd("ProductCode", flags="oa"), _fd("Name", flags="oa"),
        _fd("Quantity", "double", "r"), _fd("UnitPrice", "currency", "d", label="Sales Price"),
        _fd("ListPrice", "currency", "oa"), _fd("Subtotal", "currency", "oa"), _fd("TotalPrice", "currency", "d"),
        _fd("Discount", "percent"), _fd("ServiceDate", "date"), _fd("Description", "textarea", length=255),
        _fd("SortOrder", "int"),
    )),
    "Product2": ("Products", (
        _fd("Name", flags="r"), _fd("ProductCode"), _fd("Description", "textarea"), _fd("IsActive", "boolean"),
        _fd("Family", "picklist", picklist=("Software", "Services", "Hardware")),
        _fd("QuantityUnitOfMeasure", "picklist", picklist=("Each", "User", "Hour")),
    )),
    "Pricebook2": ("Price Books", (
        _fd("Name", flags="r"), _fd("IsActive", "boolean"), _fd("IsStandard", "boolean", "oa"),
        _fd("Description", "textarea", length=255),
    )),
    "PricebookEntry": ("Price Book Entries", (
        _ref("Pricebook2Id", "Pricebook2", flags="rc"), _ref("Product2Id", "Product2", flags="rc"),
        _fd("UnitPrice", "currency", "r", label="List Price"), _fd("IsActive", "boolean"),
        _fd("UseStandardPrice", "boolean"), _fd("Name", flags="oa"), _fd("ProductCode", flags="oa"),
    )),
    "Contract": ("Contracts", (
        _ref("AccountId", "Account", flags="r"),
        _fd("Status", "picklist", "d", picklist=("Draft", "In Approval Process", "Activated")),
        _fd("StartDate", "date"), _fd("ContractTerm", "int"), _fd("EndDate", "date", "oa"),
        _fd("ContractNumber", flags="oa"), _fd("Description", "textarea"), OWNER,
    )),
    "Task": ("Tasks", (
        _fd("Subject", "combobox", length=255), _ref("WhatId", *RELATED_TO), _ref("WhoId", "Contact"),
        _fd("ActivityDate", "date", label="Due Date Only"),
        _fd("Status", "picklist", "d", picklist=("Not Started", "In Progress", "Completed", "Deferred")),
        _fd("Priority", "picklist", "d", picklist=("High", "Normal", "Low")),
        _fd("Description", "textarea"), _fd("IsClosed", "boolean", "oa"), _ref("AccountId", "Account", flags="o"),
        OWNER,
    )),
    "Note": ("Notes", (
        _ref("ParentId", "Account", "Contact", "Opportunity", "Contract", flags="rc"), _fd("Title", flags="r"),
        _fd("Body", "textarea"), _fd("IsPrivate", "boolean"), OWNER,
    )),
    "User": ("Users", (
        _fd("Username", flags="r"), _fd("FirstName"), _fd("LastName", flags="r"), _fd("Name", flags="oa"),
        _fd("Email", "email", "r"), _fd("Alias"), _fd("Title"), _fd("IsActive", "boolean"),
    )),
}
# Permission sets as records (salesforce-api.md §7.3); their rules (duplicates, valid field names) are in
# permissions.py.
_PERMISSION_FLAGS = ("PermissionsRead", "PermissionsCreate", "PermissionsEdit", "PermissionsDelete",
                     "PermissionsViewAllRecords", "PermissionsModifyAllRecords")
STANDARD_OBJECTS.update({
    "PermissionSet": ("Permission Sets", (
        _fd("Name", flags="r"), _fd("Label", flags="r"), _fd("Description", "textarea", length=255),
        _fd("IsOwnedByProfile", "boolean", "oa"),
    )),
    "FieldPermissions": ("Field Permissions", (
        _ref("ParentId", "PermissionSet", flags="rc"), _fd("SobjectType", "picklist", "rc", length=40),
        _fd("Field", "picklist", "rc", length=80), _fd("PermissionsRead", "boolean"),
        _fd("PermissionsEdit", "boolean"),
    )),
    "ObjectPermissions": ("Object Permissions", (
        _ref("ParentId", "PermissionSet", flags="rc"), _fd("SobjectType", "picklist", "rc", length=40),
        *(_fd(flag, "boolean") for flag in _PERMISSION_FLAGS),
    )),
    "PermissionSetAssignment": ("Permission Set Assignments", (
        _ref("AssigneeId", "User", flags="rc"), _ref("PermissionSetId", "PermissionSet", flags="rc"),
    )),
})
LABELS = {"OpportunityLineItem": "Opportunity Product", "Product2": "Product", "Pricebook2": "Price Book",
          "PricebookEntry": "Price Book Entry"}


def custom_field_def(cf: CustomField, *, granted: bool = True) -> FieldDef:
    return FieldDef(
        name=cf.name, type=cf.type, label=cf.label or cf.name[:-3].replace("_", " "),
        nillable=not cf.required and cf.type != "boolean", external_id=cf.external_id, unique=cf.unique,
        defaulted_on_create=cf.type == "boolean",
        length=cf.length if cf.type in TEXT_TYPES else 0, picklist=cf.picklist,
        restricted=cf.restricted and cf.type == "picklist",
        reference_to=(cf.reference_to,) if cf.reference_to else (),
        relationship_name=(cf.relationship_name or cf.name[:-3]) + "__r" if cf.type == "reference" else None,
        custom=True, precision=cf.precision, scale=cf.scale, granted=granted,
    )


class Schema:
    def __init__(self, custom_fields: tuple[CustomField, ...] = (), custom_objects: tuple[CustomObject, ...] = (),
                 removed_fields: tuple[str, ...] = (), ungranted_fields: tuple[str, ...] = (), *,
                 standard: bool = True) -> None:
        self.objects: dict[str, ObjectDef] = {}
        self._lower: dict[str, str] = {}
        self._prefixes: dict[str, str] = {}
        self.version = next(_VERSIONS)
        if not standard:
            return
        for name, (plural, fields) in STANDARD_OBJECTS.items():
            prefix = KEY_PREFIXES.get(name) or SETUP_PREFIXES[name]
            self._add_object(name, LABELS.get(name, name), plural, prefix, False, fields)
        for co in custom_objects:
            self.add_custom_object(co)
        for cf in custom_fields:
            self.add_field(cf)
        for dotted in removed_fields:
            obj, _, name = dotted.partition(".")
            self.remove_field(obj, name)
        for dotted in ungranted_fields:
            obj, _, name = dotted.partition(".")
            od = self.get(obj)
            found = od.field(name) if od else None
            if od is None or found is None:
                raise KeyError(f"no field {dotted} to leave ungranted")
            od.add(replace(found, granted=False))

    def add_custom_object(self, co: CustomObject, *, granted: bool = True, auto_number: bool = False) -> ObjectDef:
        """A custom object with Name (text, or an auto-number the org fills in), OwnerId and the audit fields."""
        index = sum(1 for o in self.objects.values() if o.custom)
        prefix = CUSTOM_PREFIX_START + "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]
        name_field = _fd("Name", flags="oa" if auto_number else "d", label=f"{co.label} Name")
        fields = (name_field, OWNER, *(custom_field_def(f, granted=granted) for f in co.fields))
        od = self._add_object(co.name, co.label, co.label_plural or co.label + "s", prefix, True, fields)
        od.granted = granted
        self.version = next(_VERSIONS)
        return od

    def _add_object(self, name: str, label: str, plural: str, prefix: str, custom: bool,
                    fields: tuple[FieldDef, ...]) -> ObjectDef:
        od = ObjectDef(name=name, label=label, label_plural=plural, key_prefix=prefix, custom=custom)
        for f in (FieldDef(name="Id", type="id", label=f"{label} ID", nillable=False, createable=False,
                           updateable=False, defaulted_on_create=True, length=18), *fields, *AUDIT_FIELDS):
            od.fields[f.name] = f
        od._reindex()
        self.put(od)
        return od

    def put(self, od: ObjectDef) -> None:
        """Adds (or replaces) a whole object; views (permissions.py) are built this way."""
        self.objects[od.name] = od
        self._lower = {n.lower(): n for n in self.objects}
        self._prefixes = {o.key_prefix: o.name for o in self.objects.values()}
        self.version = next(_VERSIONS)

    def get(self, name: str) -> ObjectDef | None:
        canonical = self._lower.get(name.lower())
        return self.objects[canonical] if canonical else None

    def object_for_id(self, record_id: str) -> str | None:
        return self._prefixes.get(record_id[:3])

    def add_field(self, cf: CustomField, *, granted: bool = True) -> FieldDef:
        """Adds the field, or replaces the one of that name (a metadata update)."""
        od = self.get(cf.object)
        if od is None:
            raise KeyError(f"no object {cf.object!r} to add {cf.name!r} to")
        fd = custom_field_def(cf, granted=granted)
        od.add(fd)
        self.version = next(_VERSIONS)
        return fd

    def remove_field(self, obj: str, name: str) -> None:
        od = self.get(obj)
        found = od.field(name) if od else None
        if od is None or found is None:
            raise KeyError(f"no field {obj}.{name} to remove")
        od.remove(found.name)
        self.version = next(_VERSIONS)

    def global_describe(self, version: str) -> dict[str, Any]:
        return {"encoding": "UTF-8", "maxBatchSize": 200,
                "sobjects": [o.summary(version) for o in self.objects.values()]}
