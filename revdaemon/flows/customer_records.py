"""Flow 6's first steps (architecture.md): the Salesforce account and contacts of a Nue customer. Pure.

Account.  A customer's account is, in this order: the id Nue's own sync set (`externalId`), the id link revdaemon
          keeps in its store, the id revdaemon gave when it made the customer (`salesAccountId`); then the one
          account whose external id field (`Account.Nue_Customer_Id__c`) holds the customer's id. Without any
          (a self-service sign-up, a customer made in Nue), an account of exactly the customer's name whose
          website has the customer's domain is linked (the external id set on it, nothing else changed); any
          other name match (several, or one the domain does not confirm) opens a conflict instead of guessing;
          with no name match, the account is upserted by the external id with the mapped fields
          (`mapping.objects.account`). An upsert is idempotent: a lost answer is sent again and finds the record
          it made, so there is never a second account.
Contacts. Each Nue contact of the customer is, in this order: the Salesforce contact whose external id field
          (`Contact.Nue_Contact_Id__c`) holds its id (its mapped fields corrected where they differ), a contact
          with its email and no key (the key set on it, on this account's contact first; several: a conflict),
          else upserted by the key on the account. The account of an existing contact is never moved.
Nue.      Nothing is written to Nue: `externalId` is read-only [doc], and no documented field takes the account
          id from a client afterwards (`salesAccountId` is written only on create) [assumed]. The store's id link
          and the external id on the account are what tie the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from revdaemon.connectors import nue_wire
from revdaemon.flows.base import Found, Needs
from revdaemon.flows.common import ACCOUNT_LINK, account_id_of, account_link, same, was
from revdaemon.flows.plan import OpenConflict, SfUpdate, SfUpsert, Write
from revdaemon.mapping.fields import value_at

LINK_TYPE = ACCOUNT_LINK
DEFAULT_ACCOUNT_FIELDS = {"Name": "name", "Phone": "phone", "Website": "website", "BillingCity": "billingCity"}
DEFAULT_CONTACT_FIELDS = {"FirstName": "firstName", "LastName": "lastName", "Email": "email", "Phone": "phone"}


@dataclass(frozen=True, kw_only=True)
class CustomerRecords:
    """Config: flows.onboarding.create_accounts / contacts, and mapping.objects.account / contact."""

    create_accounts: bool = True
    contacts: bool = True
    account_object: str = "Account"
    account_key: str = "Nue_Customer_Id__c"
    account_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNT_FIELDS))
    contact_key: str = "Nue_Contact_Id__c"
    contact_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CONTACT_FIELDS))

    @property
    def account_read(self) -> frozenset[str]:
        return frozenset({"Name", "Website", self.account_key} if self.create_accounts else set())

    @property
    def contact_read(self) -> frozenset[str]:
        return frozenset({"AccountId", "Email", "SystemModstamp", self.contact_key, *self.contact_fields})


@dataclass(frozen=True, kw_only=True)
class AccountOf:
    """What is known of a customer's account: its id, or the write or conflict that comes first, or `waiting`
    for a read."""

    account_id: str | None = None
    write: Write | None = None
    conflict: OpenConflict | None = None
    waiting: bool = False
    missing: str | None = None  # why there is none and none is made


def account_needs(m: CustomerRecords, flow: str, customer_id: str, found: Found) -> tuple[Needs, AccountOf]:
    """The reads that find the customer's account, and the account as far as `found` tells."""
    # The id link is read with the customer (one round): it costs a store read, no API call.
    needs = Needs(nue_customers=frozenset({customer_id})) | account_link(customer_id)
    if customer_id not in found.nue_customers or (LINK_TYPE, customer_id) not in found.id_links:
        return needs, AccountOf(waiting=True)
    customer = found.nue_customers.get(customer_id)
    if customer is None:
        return needs, AccountOf(missing=f"Nue has no customer {customer_id}")
    external = str(customer.get("externalId") or "")
    linked = found.id_links.get((LINK_TYPE, customer_id))
    if external and linked and external[:15] != linked[:15]:
        # Nue's own sync made (or chose) another account after revdaemon made one: two accounts for one customer,
        # and flows 2 to 5 now follow Nue's. A person merges them; nothing is written to either meanwhile.
        return needs, AccountOf(conflict=OpenConflict(
            flow=flow, record_ref=f"nue:Customer:{customer_id}",
            reason=f"Nue links the customer to account {external}, revdaemon linked it to {linked}: merge the two "
                   "accounts in Salesforce (keep Nue's), then replay",
            salesforce_values={"nue_account": external, "revdaemon_account": linked}))
    if external:  # Nue's own sync linked it: nothing more to read
        return needs, AccountOf(account_id=external)
    linked = account_id_of(customer_id, customer, found)
    if linked or not m.create_accounts:
        return needs, AccountOf(account_id=linked, missing=None if linked else
                                f"customer {customer_id} is not linked to a Salesforce account yet")
    fields = frozenset((m.account_object, f) for f in m.account_read)
    keyed = (m.account_object, m.account_key, customer_id)
    needs |= Needs(sf_children=frozenset({keyed}), sf_fields=fields)
    if keyed not in found.sf_children:
        return needs, AccountOf(waiting=True)
    by_key = found.sf_children[keyed]
    if len(by_key) == 1:
        return needs, AccountOf(account_id=str(by_key[0]["Id"]))
    ref = f"nue:Customer:{customer_id}"
    if by_key:
        return needs, AccountOf(conflict=OpenConflict(
            flow=flow, record_ref=ref, reason=f"{len(by_key)} accounts hold {m.account_key} = {customer_id}",
            salesforce_values={"accounts": sorted(str(a["Id"]) for a in by_key)}))
    name = str(customer.get("name") or "").strip()
    named = (m.account_object, "Name", name)
    if name:
        needs |= Needs(sf_children=frozenset({named}))
        if named not in found.sf_children:
            return needs, AccountOf(waiting=True)
    return needs, _by_name(m, flow, customer_id, customer, found.sf_children.get(named, []))


def _by_name(m: CustomerRecords, flow: str, customer_id: str, customer: Mapping[str, Any],
             rows: Sequence[Mapping[str, Any]]) -> AccountOf:
    """Link the one account of this exact name (as SOQL compares: without case) and domain; several, or one of the
    name without a website to confirm it, is a person's call; none (or only other domains): upsert one by the
    external id."""
    name = str(customer.get("name") or "").strip()
    same_name = [a for a in rows if str(a.get("Name") or "").strip().casefold() == name.casefold()
                 and not a.get(m.account_key)]  # an account keyed to another customer is that one's
    domain = domain_of(customer.get("website")) or domain_of(customer.get("email"))
    confirmed = [a for a in same_name if domain and domain_of(a.get("Website")) == domain]
    # Of the same name and no website (or a customer without one): it may be this customer; it may not.
    unsure = [a for a in same_name if not domain or not domain_of(a.get("Website"))]
    ref = f"nue:Customer:{customer_id}"
    if len(confirmed) == 1 and not unsure:
        account_id = str(confirmed[0]["Id"])
        return AccountOf(write=SfUpdate(sobject=m.account_object, record_id=account_id,
                                        fields={m.account_key: customer_id},
                                        idem_key=f"{flow}:account-link:{customer_id}:{account_id}"))
    if confirmed or unsure:  # an account of the same name and another domain is another company
        shown = [*confirmed, *unsure]
        why = (f"{len(shown)} accounts named {name!r} may be this customer (domain {domain or 'unknown in Nue'})"
               if len(shown) > 1 else
               f"an account named {name!r} has no website to confirm the domain {domain or '(none in Nue)'}")
        return AccountOf(conflict=OpenConflict(
            flow=flow, record_ref=ref,
            reason=f"{why}: set {m.account_key} = {customer_id} on the right account (or rename one), then replay",
            nue_values={"name": name, "website": customer.get("website")},
            salesforce_values={str(a["Id"]): f"{a.get('Name')} {a.get('Website') or ''}".strip() for a in shown}))
    fields = {sf: value for sf, path in m.account_fields.items() if (value := field_of(customer, path)) is not None}
    fields.setdefault("Name", name or customer_id)
    return AccountOf(write=SfUpsert(sobject=m.account_object, external_id_field=m.account_key,
                                    external_id=customer_id, fields=fields,
                                    idem_key=f"{flow}:account-create:{customer_id}"))


def contact_needs(m: CustomerRecords, customer_id: str, account_id: str, found: Found) -> Needs:
    if not m.contacts:
        return Needs()
    needs = Needs(nue_contacts_of=frozenset({customer_id}),
                  sf_fields=frozenset(("Contact", f) for f in m.contact_read))
    children = set()
    for contact in found.nue_contacts.get(customer_id, []):
        children.add(("Contact", m.contact_key, str(contact["id"])))
        if contact.get("email"):
            children.add(("Contact", "Email", str(contact["email"])))
    return needs | Needs(sf_children=frozenset(children))


@dataclass(frozen=True, kw_only=True)
class ContactsOf:
    writes: tuple[Write, ...] = ()
    salesforce_ids: Mapping[str, str] = field(default_factory=dict)  # Nue contact id -> Salesforce id (known now)
    conflict: OpenConflict | None = None


def contact_writes(m: CustomerRecords, flow: str, customer_id: str, account_id: str, found: Found) -> ContactsOf:
    """The contact writes still to make, and the Salesforce ids of the contacts that exist already."""
    if not m.contacts:
        return ContactsOf()
    writes: list[Write] = []
    ids: dict[str, str] = {}
    for contact in sorted(found.nue_contacts.get(customer_id, []), key=lambda c: str(c.get("id"))):
        nue_id = str(contact["id"])
        wanted = {sf: value for sf, path in m.contact_fields.items()
                  if (value := field_of(contact, path)) is not None}
        if not wanted.get("LastName"):
            wanted["LastName"] = contact.get("name") or contact.get("email") or nue_id  # required in Salesforce
        keyed = found.sf_children.get(("Contact", m.contact_key, nue_id), [])
        if keyed:
            existing = keyed[0]
            ids[nue_id] = str(existing["Id"])
            changed = _changed(existing, wanted)
            if changed:
                # An update of the record found, not an upsert: a contact deleted since the read is not made again
                # without its account (the write fails, and the event with it).
                writes.append(SfUpdate(sobject="Contact", record_id=str(existing["Id"]), fields=changed,
                                       idem_key=f"{flow}:contact:{nue_id}:{was(existing, changed)}"))
            continue
        email = str(contact.get("email") or "")
        by_email = [c for c in found.sf_children.get(("Contact", "Email", email), []) if email
                    and str(c.get("Email") or "").casefold() == email.casefold() and not c.get(m.contact_key)]
        # Only this account's: a contact of the same email on another company's account (an agency, a consultant)
        # is that company's person, not this customer's; this customer gets its own.
        candidates = [c for c in by_email if str(c.get("AccountId") or "")[:15] == account_id[:15]]
        if len(candidates) > 1:
            return ContactsOf(conflict=OpenConflict(
                flow=flow, record_ref=f"nue:Contact:{nue_id}",
                reason=f"{len(candidates)} Salesforce contacts have the email {email}: set {m.contact_key} = "
                       f"{nue_id} on the right one, then replay",
                nue_values={"email": email}, salesforce_values={"contacts": sorted(str(c["Id"]) for c in candidates)}))
        if candidates:
            existing = candidates[0]
            ids[nue_id] = str(existing["Id"])
            changed = {m.contact_key: nue_id, **_changed(existing, wanted)}
            writes.append(SfUpdate(sobject="Contact", record_id=str(existing["Id"]), fields=changed,
                                   idem_key=f"{flow}:contact-link:{nue_id}:{existing['Id']}"))
            continue
        writes.append(SfUpsert(sobject="Contact", external_id_field=m.contact_key, external_id=nue_id,
                               fields={**wanted, "AccountId": account_id},
                               idem_key=f"{flow}:contact-create:{nue_id}"))
    return ContactsOf(writes=tuple(writes), salesforce_ids=ids)


def primary_contact(order: Mapping[str, Any], customer: Mapping[str, Any] | None,
                    contacts: Sequence[Mapping[str, Any]]) -> str | None:
    """The Nue id of the customer's primary contact [assumed: nue_wire]: named on the order or the customer, else
    the order's bill-to contact, else the customer's first contact."""
    known = {str(c.get("id")) for c in contacts}
    for record in (order, customer or {}):
        for name in nue_wire.ASSUMED_PRIMARY_CONTACT_FIELDS:
            if record.get(name) and str(record[name]) in known:
                return str(record[name])
    for name in nue_wire.ASSUMED_BILL_TO_CONTACT_FIELDS:
        if order.get(name) and str(order[name]) in known:
            return str(order[name])
    first = sorted(contacts, key=lambda c: (str(c.get("createdDate") or ""), str(c.get("id"))))
    return str(first[0]["id"]) if first else None


def domain_of(value: Any) -> str | None:
    """"https://www.Acme.com/about" -> "acme.com"; "ops@acme.com" -> "acme.com"; else None."""
    text = str(value or "").strip().lower()
    if not text:
        return None
    if "@" in text and "/" not in text:
        host = text.rsplit("@", 1)[1]
    else:
        host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    host = host.removeprefix("www.").rstrip(".")
    return host or None


def field_of(record: Mapping[str, Any], path: str) -> Any:
    """A dotted path's value in a Nue record (None where any part is absent, or blank)."""
    value = value_at(record, path)
    return value if value not in ("", None) else None


def _changed(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wanted.items() if not same(existing.get(k), v)}
