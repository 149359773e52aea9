"""Would Salesforce take this write? One write's fields set against describe as the integration user sees it.

Pure: given an object's describe fields ({name: describe's field}, or None when the user cannot see the object)
and a write (object, fields and values, whether it may create and whether it may update), the problems Salesforce
would answer with, each with the error code it would give. Used to warn before a dead letter is replayed into the
same error, and meant for any other dry run of writes (shadow mode).

What describe tells (salesforce-api.md §7.2 [doc]/[3rd]): a field the user may not read is absent, as if it did not
exist (INVALID_FIELD); one it may read but not edit is there with `createable`/`updateable` false
(INVALID_FIELD_FOR_INSERT_UPDATE); a restricted picklist lists its values (`restrictedPicklist`, `picklistValues`,
each `active`) and refuses any other (INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST; the value set is matched exactly
[assumed, as the simulator does]); a text field has a `length` (STRING_TOO_LONG). Rules describe cannot show
(validation and duplicate rules, required fields set by triggers, sharing) are not checked: no problem found is
not a promise that the write succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Described = Mapping[str, Mapping[str, Any]]  # field name -> describe's field
TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "encryptedstring"})


@dataclass(frozen=True, kw_only=True)
class WriteProblem:
    sobject: str
    field: str | None  # None: the object itself
    code: str  # the error code Salesforce would answer with
    message: str  # in words, for a person

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def check_write(sobject: str, fields: Mapping[str, Any], described: Described | None, *,
                creates: bool, updates: bool) -> tuple[WriteProblem, ...]:
    """The problems Salesforce would find in writing `fields` to `sobject`: `creates`/`updates` say which the
    write may do (an upsert may do either). Empty when describe shows none."""
    if described is None:
        return (WriteProblem(sobject=sobject, field=None, code="INVALID_TYPE",
                             message=f"the integration user cannot see the object {sobject} (it does not exist, "
                                     "or no permission)"),)
    by_name = {name.lower(): found for name, found in described.items()}
    problems: list[WriteProblem] = []
    for name, value in fields.items():
        found = by_name.get(name.lower())
        if found is None:
            problems.append(WriteProblem(sobject=sobject, field=name, code="INVALID_FIELD",
                                         message=f"{sobject}.{name} is not in describe: it does not exist, or "
                                                 "field-level security hides it from the integration user"))
            continue
        problem = _not_writable(sobject, name, found, creates=creates, updates=updates) or \
            _value_refused(sobject, name, found, value)
        if problem is not None:
            problems.append(problem)
    return tuple(problems)


def _not_writable(sobject: str, name: str, found: Mapping[str, Any], *, creates: bool,
                  updates: bool) -> WriteProblem | None:
    refused = [verb for verb, may, key in (("create", creates, "createable"), ("update", updates, "updateable"))
               if may and not found.get(key, False)]
    if not refused:
        return None
    return WriteProblem(sobject=sobject, field=name, code="INVALID_FIELD_FOR_INSERT_UPDATE",
                        message=f"the integration user may not {' or '.join(refused)} {sobject}.{name} "
                                "(field-level security, or a field Salesforce computes)")


def _value_refused(sobject: str, name: str, found: Mapping[str, Any], value: Any) -> WriteProblem | None:
    if value is None or value == "":
        return None  # null and "" clear a field; a required one is not describe's to say
    kind = str(found.get("type", ""))
    if kind in ("picklist", "multipicklist") and found.get("restrictedPicklist"):
        allowed = {str(v.get("value")) for v in found.get("picklistValues") or () if v.get("active", True)}
        chosen = str(value).split(";") if kind == "multipicklist" else [str(value)]
        absent = [v for v in chosen if v not in allowed]
        if absent:
            return WriteProblem(sobject=sobject, field=name, code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                message=f"the restricted picklist {sobject}.{name} has no value "
                                        f"{', '.join(repr(v) for v in absent)}")
    if kind in TEXT_TYPES and found.get("length") and len(str(value)) > int(found["length"]):
        return WriteProblem(sobject=sobject, field=name, code="STRING_TOO_LONG",
                            message=f"the value for {sobject}.{name} has {len(str(value))} characters; the field "
                                    f"takes at most {found['length']}")
    return None
