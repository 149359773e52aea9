"""Customers and contacts [doc]: created in arrays, read by Nue id or Salesforce id, patched."""

from __future__ import annotations

from typing import Any

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.errors import bad_request, conflict, not_found
from revdaemon.sandbox.nue.pricing import ZERO
from revdaemon.sandbox.nue.store import Record, Store
from revdaemon.sandbox.sfids import is_valid_id

ADDRESS_FIELDS = tuple(f"{kind}{part}" for kind in ("billing", "shipping")
                       for part in ("Street", "City", "State", "PostalCode", "Country"))
WRITABLE = ("name", "recordType", "email", "phone", "website", "paymentTerm", "billCycleDay",
            "salesAccountId", "description", *ADDRESS_FIELDS)
READ_ONLY = ("id", "externalId", "accountNumber", "todayARR", "todayCMRR", "totalTCV", "createdDate",
             "lastModifiedDate")


def _check(item: Any, index: int, *, partial: bool) -> None:
    if not isinstance(item, dict):
        raise bad_request(f"customer [{index}] must be an object")
    if not partial or "name" in item:
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request(f"customer [{index}]: name is required")
    if (not partial or "recordType" in item) and item.get("recordType") not in wire.RECORD_TYPES:
        raise bad_request(f"customer [{index}]: recordType must be one of {', '.join(wire.RECORD_TYPES)}")


def _apply(store: Store, customer: Record, item: dict[str, Any], warnings: list[str]) -> None:
    for key, value in item.items():
        if key in WRITABLE or key.endswith("__c"):
            customer[key] = value
        elif key in READ_ONLY:
            warnings.append(f"{key} is read-only and was ignored")
        else:
            warnings.append(f"unknown field {key} was ignored")
    if store.settings.external_id_sync == "on_create":
        sync_external_id(store, customer)


def sync_external_id(store: Store, customer: Record) -> bool:
    """Nue's own Salesforce sync fills externalId from the Account the customer points at [doc]."""
    account_id = customer.get("salesAccountId")
    if (not store.settings.connected_to_salesforce or customer.get("externalId")
            or not isinstance(account_id, str) or not is_valid_id(account_id)):
        return False
    if account_id in store.customers_by_external:
        return False
    customer["externalId"] = account_id
    store.customers_by_external[account_id] = customer["id"]
    return True


def new_customer(store: Store) -> Record:
    return {
        "id": store.ids.uuid(), "name": None, "recordType": None, "accountNumber": store.ids.number("customer"),
        "externalId": None, "email": None, "phone": None, "website": None,
        **dict.fromkeys(ADDRESS_FIELDS), "paymentTerm": "Net 30", "billCycleDay": 1, "salesAccountId": None,
        "todayARR": ZERO, "todayCMRR": ZERO, "totalTCV": ZERO,
    }


def create_customers(store: Store, items: Any) -> tuple[list[Record], list[str]]:
    limit = store.settings.max_customers_per_create
    if not isinstance(items, list) or not items:
        raise bad_request("the body must be a non-empty JSON array of customers")
    if len(items) > limit:
        raise bad_request(f"at most {limit} customers per request, got {len(items)}")
    for index, item in enumerate(items):
        _check(item, index, partial=False)
    warnings: list[str] = []
    created = []
    with store.lock:
        for item in items:
            customer = new_customer(store)
            _apply(store, customer, item, warnings)
            store.touch(customer, created=True)
            store.customers[customer["id"]] = customer
            created.append(customer)
            store.emit("customer.created", customer)
    return created, sorted(set(warnings))


def link_synced_customer(store: Store, *, account_id: str, fields: dict[str, Any]) -> Record:
    """A customer arriving through Nue's Salesforce sync: linked by externalId at birth (connected
    tenants); it fires customer.created like any other, which is the echo hazard nue-api.md warns of."""
    with store.lock:
        existing = store.customer(account_id)
        if existing is not None:
            return existing
        customer = new_customer(store)
        customer.update(fields)
        if store.settings.connected_to_salesforce:
            customer["salesAccountId"] = account_id
            customer["externalId"] = account_id
            store.customers_by_external[account_id] = customer["id"]
        store.touch(customer, created=True)
        store.customers[customer["id"]] = customer
        store.emit("customer.created", customer)
        return customer


def get_customer(store: Store, key: str) -> Record:
    customer = store.customer(key)
    if customer is None:
        raise not_found(f"customer {key} not found")
    return customer


def update_customer(store: Store, key: str, item: Any) -> tuple[Record, list[str]]:
    _check(item, 0, partial=True)
    warnings: list[str] = []
    with store.lock:
        customer = get_customer(store, key)
        _apply(store, customer, item, warnings)
        store.touch(customer)
        store.emit("customer.updated", customer)
    return customer, sorted(set(warnings))


def create_contacts(store: Store, key: str, items: Any) -> list[Record]:
    if not isinstance(items, list) or not items:
        raise bad_request("the body must be a non-empty JSON array of contacts")
    with store.lock:
        customer = get_customer(store, key)
        emails: set[str] = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad_request(f"contact [{index}] must be an object")
            email = item.get("email")
            if not isinstance(email, str) or "@" not in email:
                raise bad_request(f"contact [{index}]: email is required")
            if not (item.get("lastName") or item.get("name")):
                raise bad_request(f"contact [{index}]: lastName or name is required")
            if email.lower() in store.contact_emails or email.lower() in emails:
                raise conflict(f"a contact with email {email} already exists")
            emails.add(email.lower())
        created = []
        for item in items:
            first, last = item.get("firstName"), item.get("lastName")
            contact = {
                "id": store.ids.uuid(), "customerId": customer["id"], "firstName": first, "lastName": last,
                "name": item.get("name") or " ".join(p for p in (first, last) if p), "email": item["email"],
                "phone": item.get("phone"), "title": item.get("title"),
            }
            store.touch(contact, created=True)
            store.contacts[contact["id"]] = contact
            store.contact_emails.add(item["email"].lower())
            created.append(contact)
            store.emit("contact.created", contact)
    return created
