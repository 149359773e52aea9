"""How to fix a refused write: one plain sentence of what to change and where, for the errors operators meet most.

Read from what a dead letter keeps (the system, the API's error code, HTTP status and message, the fields the
error names, and the record revdaemon sent), never from a call. The hint sits beside the verbatim error, so it
only adds what the error does not say: where in Setup the fix lives, and that a replay follows. An error not
listed here gets no hint (None): a wrong hint costs an operator more than none. The codes and message shapes are
those in docs/design/salesforce-api.md (§2.2, §7.2) and nue-api.md (Transport: errors).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from revdaemon.domain.record_names import parse_ref

SETUP_FIELDS = "Setup > Object Manager > {obj} > Fields & Relationships > {field}"
PERMISSION_SET = "revdaemon_integration"  # setup/metadata.py PERMISSION_SET
APPLY = "`revdaemon setup salesforce --apply`"

_PICKLIST_VALUE = re.compile(r"bad value for restricted picklist field: (?P<value>.*)\Z", re.S)
_NO_SUCH_COLUMN = re.compile(r"No such column '(?P<field>[^']+)' on (?:sobject of type|entity) '?(?P<obj>\w+)")
_READ_ONLY = re.compile(r"Unable to create/update fields: (?P<fields>[^.]+)\.")
_MAX_LENGTH = re.compile(r"max length=(?P<max>\d+)")
_DUPLICATE_VALUE = re.compile(r"duplicate value found: (?P<field>\S+) duplicates value on record with id: (?P<id>\S+)")


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """One error an API gave for one write, with what is known of the write."""

    system: str  # "salesforce" | "nue"
    code: str | None
    status: int | None
    message: str
    fields: tuple[str, ...] = ()  # the fields the error names
    sobject: str | None = None  # the object written, when known ("Account", or Nue's "Customer")
    sent: Mapping[str, Any] = field(default_factory=dict)  # the fields sent, when known


def fix_hint(refusal: Refusal) -> str | None:
    """What to change and where so that a replay succeeds; None for an error this module does not know."""
    if refusal.system == "nue":
        return _nue(refusal)
    if refusal.system != "salesforce" or not refusal.code:
        return None
    code = refusal.code
    hint = _SALESFORCE.get(code)
    if hint is None and code.startswith("INSUFFICIENT_ACCESS"):
        hint = _insufficient_access
    return hint(refusal) if hint else None


def letter_hint(system: str, error_code: str | None, status: int | None, error: str,
                request: Mapping[str, Any] | None, record_ref: str | None = None) -> str | None:
    """The hint for a dead letter as the store keeps it: one sentence per distinct error item (a write refused
    for two reasons needs both fixed), or from the letter's own code and message when it has no items."""
    request = request or {}
    sent: Mapping[str, Any] = request.get("sent") or {}
    sobject = _object_of(sent.get("target")) or _object_of(record_ref)
    values = sent.get("fields") or sent.get("payload") or {}
    items = [i for i in request.get("items") or [] if isinstance(i, Mapping)]
    refusals = [Refusal(system=system, code=i.get("code") or error_code, status=status,
                        message=str(i.get("message") or error), fields=tuple(i.get("fields") or ()),
                        sobject=sobject, sent=values) for i in items] or \
               [Refusal(system=system, code=error_code, status=status, message=error, sobject=sobject, sent=values)]
    hints = [h for h in (fix_hint(r) for r in refusals) if h]
    return " ".join(dict.fromkeys(hints)) or None


def _object_of(ref: Any) -> str | None:
    """`salesforce:Account:001...` -> Account (a record reference as the executor writes it)."""
    return parse_ref(ref).object if isinstance(ref, str) else None


def _obj(refusal: Refusal) -> str:
    return refusal.sobject or "the object"


def _names(fields: Sequence[str]) -> str:
    return ", ".join(fields)


def _restricted_picklist(refusal: Refusal) -> str:
    name = refusal.fields[0] if refusal.fields else None
    value = refusal.sent.get(name) if name and name in refusal.sent else None
    if value is None:
        found = _PICKLIST_VALUE.search(refusal.message)
        value = found.group("value") if found else None
    obj = _obj(refusal)
    what = f"the value {value!r}" if value is not None else "the value sent"
    where = f"{obj}.{name}" if name else f"the restricted picklist on {obj}"
    setup = SETUP_FIELDS.format(obj=obj, field=name or "the field")
    return (f"Add {what} to the restricted picklist {where} ({setup} > Values > New), then replay; or map it to "
            "a value the picklist has in config.yaml and replay with --remap.")


def _invalid_field(refusal: Refusal) -> str:
    found = _NO_SUCH_COLUMN.search(refusal.message)
    obj = (found.group("obj") if found else None) or _obj(refusal)
    name = found.group("field") if found else _names(refusal.fields) or "the field"
    return (f"The integration user cannot see {obj}.{name}: the field does not exist, or field-level security "
            f"hides it. Create it or grant Read and Edit on it in the permission set {PERMISSION_SET} ({APPLY} "
            "does both), then replay; or correct its name in config.yaml's mapping and replay with --remap.")


def _read_only_field(refusal: Refusal) -> str:
    found = _READ_ONLY.search(refusal.message)
    names = _names(refusal.fields) or (found.group("fields").strip() if found else "the field")
    obj = _obj(refusal)
    return (f"The integration user may read but not edit {names} on {obj}: grant Edit on it in the permission set "
            f"{PERMISSION_SET} (Setup > Permission Sets > {PERMISSION_SET} > Object Settings > {obj}), or run "
            f"{APPLY}, then replay. If the field is read-only by nature (a formula or roll-up), take it out of "
            "config.yaml's mapping and replay with --remap.")


def _required_field(refusal: Refusal) -> str:
    names = _names(refusal.fields) or "a required field"
    obj = _obj(refusal)
    empty = [f for f in refusal.fields if f in refusal.sent and refusal.sent[f] in (None, "")]
    how = "sent it empty" if empty else "did not send it"
    return (f"{obj} requires {names} and revdaemon {how}: fill it on the record it comes from and replay, or "
            "map it in config.yaml and replay with --remap.")


def _validation_rule(refusal: Refusal) -> str:
    obj = _obj(refusal)
    return (f"A validation rule on {obj} refused the record with the message above: change the source record so "
            f"it passes, or edit the rule (Setup > Object Manager > {obj} > Validation Rules); then replay.")


def _duplicate_rule(refusal: Refusal) -> str:
    obj = _obj(refusal)
    return (f"A duplicate rule on {obj} blocks this record as a duplicate of an existing one: merge the records, "
            "or set the rule's action to Allow for the integration user (Setup > Duplicate Management > Duplicate "
            "Rules); then replay.")


def _duplicate_value(refusal: Refusal) -> str | None:
    found = _DUPLICATE_VALUE.search(refusal.message)
    if found is None or found.group("field") == "<unknown>":
        return None
    return (f"Another {_obj(refusal)} record ({found.group('id')}) already holds this value of the unique field "
            f"{found.group('field')}: merge or correct the two records; then replay.")


def _locked(refusal: Refusal) -> str:
    return ("Another process held the record locked (often a bulk job, or automation on related records) for "
            "every retry: replay later, once it has finished.")


def _deleted(refusal: Refusal) -> str:
    return (f"The {_obj(refusal)} record revdaemon wrote to was deleted in Salesforce: restore it from the Recycle "
            "Bin and replay; if it was deleted on purpose, leave this letter unreplayed.")


def _insufficient_access(refusal: Refusal) -> str:
    obj = _obj(refusal)
    if refusal.code == "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY":
        return (f"A record this {obj} refers to (a lookup, or its owner) is not shared with the integration user: "
                "share it (ownership, role or a sharing rule); then replay.")
    return (f"The integration user may not change this {obj}: grant Create and Edit on {obj} in the permission set "
            f"{PERMISSION_SET} ({APPLY}), and check the record is shared with it (ownership, sharing rules); "
            "then replay.")


def _too_long(refusal: Refusal) -> str:
    name = refusal.fields[0] if refusal.fields else "the field"
    found = _MAX_LENGTH.search(refusal.message)
    limit = f" (at most {found.group('max')} characters)" if found else ""
    obj = _obj(refusal)
    return (f"The value sent for {obj}.{name} is longer than the field takes{limit}: lengthen the field "
            f"({SETUP_FIELDS.format(obj=obj, field=name)} > Edit) or shorten the value on the source record; "
            "then replay.")


def _nue(refusal: Refusal) -> str | None:
    # Nue's error codes are not documented (nue-api.md, Transport): only its validation statuses get a hint.
    if refusal.status not in (400, 422):
        return None
    what = f"the {refusal.sobject}" if refusal.sobject else "the record"
    return (f"Nue refused {what} as invalid; its message above names what. Correct the value on the Salesforce "
            "record it came from and replay, or correct config.yaml's mapping and replay with --remap.")


_SALESFORCE: dict[str, Callable[[Refusal], str | None]] = {
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": _restricted_picklist,
    "INVALID_FIELD": _invalid_field,
    "INVALID_FIELD_FOR_INSERT_UPDATE": _read_only_field,
    "REQUIRED_FIELD_MISSING": _required_field,
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": _validation_rule,
    "DUPLICATES_DETECTED": _duplicate_rule,
    "DUPLICATE_VALUE": _duplicate_value,
    "UNABLE_TO_LOCK_ROW": _locked,
    "ENTITY_IS_DELETED": _deleted,
    "STRING_TOO_LONG": _too_long,
}
