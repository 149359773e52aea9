"""What a person calls a record: an account's or customer's name, an order's, invoice's or subscription's
number, beside the id revdaemon keeps. And where the record opens in its own system's app.

The names are taken from records the workers read anyway (flows.record_names) and kept by the store, so a
page shows "Acme Corp" and "O-00000300" without an API call. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

SALESFORCE = "salesforce"
NUE = "nue"
SYSTEMS = (SALESFORCE, NUE)

# Salesforce's key prefixes of the standard objects a link may need when no name was kept [doc] (Salesforce
# Help, "Standard Field Record ID Prefix Decoder"). Another id opens as `<instance>/<Id>`, which Salesforce
# redirects to the record's page [assumed] (salesforce-api.md §2.7).
SALESFORCE_KEY_PREFIXES = {"001": "Account", "003": "Contact", "006": "Opportunity", "00T": "Task", "801": "Order",
                           "00Q": "Lead", "005": "User", "0Q0": "Quote"}
_SALESFORCE_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOKEN = re.compile(r"[A-Za-z0-9-]{15,36}")
REF_SYSTEMS = {"salesforce": SALESFORCE, "sf": SALESFORCE, "nue": NUE}  # record refs' and event keys' prefixes
NAME_MAX = 255  # longer names are cut: a page shows a name, it does not keep documents


@dataclass(frozen=True, kw_only=True)
class RecordName:
    system: str  # salesforce | nue
    object: str  # Salesforce's sObject name, or Nue's object (Customer, Order, Subscription, Invoice, ...)
    record_id: str
    name: str | None = None
    number: str | None = None  # O-..., INV-..., SUB-..., a customer's account number

    @property
    def text(self) -> str:
        """'Acme Corp', 'O-00000300', or 'Acme renewal (Q-00000012)': what a person reads beside the id."""
        if self.name and self.number and self.number != self.name:
            return f"{self.name} ({self.number})"
        return self.name or self.number or ""


def named(system: str, sobject: str, record_id: Any, name: Any = None, number: Any = None) -> RecordName | None:
    """A RecordName from values as an API returned them; None when there is no id or nothing to call it."""
    name_text, number_text = _clean(name), _clean(number)
    if not record_id or not (name_text or number_text):
        return None
    return RecordName(system=system, object=sobject, record_id=str(record_id), name=name_text, number=number_text)


def _clean(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = " ".join(str(value).split())
    return text[:NAME_MAX] or None


def candidate_ids(texts: Iterable[str | None]) -> list[str]:
    """Every token of `texts` shaped like a Salesforce id or a Nue id (record refs, event keys, targets): the
    ids a page may name. Loose on purpose: the store answers only for the ids it has a name for."""
    found: dict[str, None] = {}
    for text in texts:
        for token in _TOKEN.findall(text or ""):
            if _SALESFORCE_ID.match(token) or _UUID.match(token):
                found[token] = None
    return list(found)


class NameBook:
    """The names a page may show, by id: `of` picks the one of a system when an id is known to both (a Nue
    tenant connected to Salesforce uses Salesforce ids for some records, nue-api.md)."""

    def __init__(self, names: Iterable[RecordName] = ()) -> None:
        self._by_id: dict[str, list[RecordName]] = {}
        for name in names:
            self._by_id.setdefault(name.record_id, []).append(name)

    def of(self, record_id: str | None, system: str | None = None) -> RecordName | None:
        choices = self._by_id.get(record_id or "", [])
        return next((n for n in choices if system is None or n.system == system), None)

    def text_of(self, *texts: str | None) -> str:
        """The names of the records `texts` mention, in the order they are mentioned: 'Acme Corp · O-00000300'."""
        shown = [name.text for record_id in candidate_ids(texts) if (name := self.of(record_id)) is not None]
        return " · ".join(dict.fromkeys(shown))

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True, kw_only=True)
class RecordRef:
    """A record named by a record ref (`salesforce:Account:001…`), an event key (`sf:Opportunity:006…:…`) or
    a bare id."""

    system: str | None
    object: str | None
    record_id: str


def parse_ref(text: str) -> RecordRef:
    parts = text.split(":")
    if len(parts) >= 3 and parts[0] in REF_SYSTEMS and parts[2]:
        return RecordRef(system=REF_SYSTEMS[parts[0]], object=parts[1], record_id=parts[2])
    return RecordRef(system=None, object=None, record_id=text)


def target_ref(target: str | None, system: str | None = None) -> str:
    """A planned write's target (`Account 001…`, `Order <uuid>`) as a record ref (`salesforce:Account:001…`) that
    pages link out, when it names one record by id; any other target (`Account` to create, `Order for opportunity
    006…`, an id made up for a record not yet created) stays as it is. `system`: the write's, else by the id's
    shape."""
    text = target or ""
    sobject, _, record_id = text.partition(" ")
    if not sobject or not record_id or " " in record_id or ":" in record_id:
        return text  # not "<Object> <id>", or an id shadow mode made up ("shadow:…", flows/what_if.py)
    system = system or _system_of(record_id)
    return f"{system}:{sobject}:{record_id}" if system in (SALESFORCE, NUE) else text


@dataclass(frozen=True, kw_only=True)
class LinkOut:
    """Where records open in their own apps. `salesforce_base`: the org's instance URL (None: no links);
    `nue_pattern`: a URL with {object}, {object_lower} and {id} (None: Nue's app URLs are not documented, so
    there are no Nue links unless one is configured)."""

    salesforce_base: str | None = None
    nue_pattern: str | None = None

    def url(self, record_id: str, *, system: str | None = None, sobject: str | None = None) -> str | None:
        system = system or _system_of(record_id)
        if system == SALESFORCE and self.salesforce_base and _SALESFORCE_ID.match(record_id):
            base = self.salesforce_base.rstrip("/")
            sobject = sobject or SALESFORCE_KEY_PREFIXES.get(record_id[:3])
            if sobject:  # [assumed] the Lightning record page, salesforce-api.md §2.7
                return f"{base}/lightning/r/{quote(sobject)}/{quote(record_id)}/view"
            return f"{base}/{quote(record_id)}"
        if system == NUE and self.nue_pattern and sobject:
            return self.nue_pattern.format(object=quote(sobject), object_lower=quote(sobject.lower()),
                                           id=quote(record_id))
        return None


def _system_of(record_id: str) -> str | None:
    """A bare id's system by its shape: a UUID is Nue's; a 15/18-character id Salesforce's (a Nue record with
    a Salesforce id is named by its record ref or its kept name instead)."""
    if _UUID.match(record_id):
        return NUE
    if _SALESFORCE_ID.match(record_id):
        return SALESFORCE
    return None


def changed(kept: Mapping[tuple[str, str], RecordName], names: Sequence[RecordName]) -> list[RecordName]:
    """The names not already kept as they are (the worker skips rewriting names it has kept this run)."""
    return [n for n in dict(((n.system, n.record_id), n) for n in names).values()
            if kept.get((n.system, n.record_id)) != n]

