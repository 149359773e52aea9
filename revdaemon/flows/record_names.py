"""The names and numbers in what a worker read (`Found`), for the store to keep beside the ids (domain.record_names).

Only what was read anyway: no read is made to learn a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from revdaemon.domain.record_names import NUE, SALESFORCE, RecordName, named
from revdaemon.flows.base import Found

# Nue's objects: the field a person calls each by, and its number (nue-api.md: orderNumber "O-…", a subscription's
# `name` "SUB-…", an invoice's `name` its number, a customer's accountNumber).
NUE_NAMING = {
    "Customer": ("name", "accountNumber"),
    "Order": ("name", "orderNumber"),
    "Subscription": (None, "name"),
    "Invoice": (None, "name"),
    "Quote": ("name", "quoteNumber"),
    "Contact": ("name", None),
}
# Salesforce's: Name where the object has one, an Order's OrderNumber, a Task's Subject.
SALESFORCE_NAME_FIELDS = ("Name", "Subject")
SALESFORCE_NUMBER_FIELDS = ("OrderNumber",)


def names_in(found: Found) -> list[RecordName]:
    names: list[RecordName | None] = []
    names += [_nue("Customer", row) for row in found.nue_customers.values() if row]
    for kind, grouped in (("Subscription", found.nue_subscriptions), ("Order", found.nue_orders),
                          ("Contact", found.nue_contacts), ("Quote", found.nue_quotes_of)):
        names += [_nue(kind, row) for rows in grouped.values() for row in rows]
    names += [_nue("Invoice", row) for row in found.nue_invoices.values() if row]
    names += [_nue("Quote", row) for row in found.nue_quotes.values() if row]
    names += [_salesforce(sobject, row) for (sobject, _), row in found.sf_records.items() if row]
    names += [_salesforce(sobject, row) for (sobject, _, _), rows in found.sf_children.items() for row in rows]
    return [n for n in names if n is not None]


def nue_names(kind: str, rows: Iterable[Mapping[str, Any]]) -> list[RecordName]:
    """Names of Nue rows of one kind read elsewhere (the reconciliation reads every customer)."""
    return [n for n in (_nue(kind, row) for row in rows) if n is not None]


def salesforce_names(sobject: str, rows: Iterable[Mapping[str, Any]]) -> list[RecordName]:
    return [n for n in (_salesforce(sobject, row) for row in rows) if n is not None]


def _nue(kind: str, row: Mapping[str, Any]) -> RecordName | None:
    name_field, number_field = NUE_NAMING[kind]
    return named(NUE, kind, row.get("id"), row.get(name_field) if name_field else None,
                 row.get(number_field) if number_field else None)


def _salesforce(sobject: str, row: Mapping[str, Any]) -> RecordName | None:
    name = next((row[f] for f in SALESFORCE_NAME_FIELDS if row.get(f)), None)
    number = next((row[f] for f in SALESFORCE_NUMBER_FIELDS if row.get(f)), None)
    return named(SALESFORCE, sobject, row.get("Id"), name, number)
