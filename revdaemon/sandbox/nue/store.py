"""The simulated tenant's state: tables of records (dicts in wire field names, Decimal money), one lock.

Records are kept in their wire shape so reads are a render; keys starting with "_" are bookkeeping the
API never shows. Every write goes through `touch`, which maintains createdDate/lastModifiedDate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.catalog import Catalog, Entry
from revdaemon.sandbox.nue.dates import Clock
from revdaemon.sandbox.nue.errors import unprocessable
from revdaemon.sandbox.nue.ids import NueIds
from revdaemon.sandbox.nue.pricing import ZERO, discounted, money, monthly
from revdaemon.sandbox.nue.settings import NueSimSettings
from revdaemon.sandbox.nue.table import Table, field
from revdaemon.sandbox.seed import SeedData

Record = dict[str, Any]
Publisher = Callable[[dict[str, Any]], None]
LIVE_SUBSCRIPTION = ("Active", "Scheduled for cancellation")


def subscription_orders(sub: Record) -> list[str]:
    """The orders a subscription belongs to: the one that created it, then each change order applied to it."""
    return sub.get("_orders", [sub["orderId"]])  # type: ignore[no-any-return]


class Store:
    def __init__(self, settings: NueSimSettings, seed: SeedData, publish: Publisher, clock: Clock) -> None:
        self.settings = settings
        self.seed = seed
        self.publish = publish
        self.clock = clock
        self.lock = threading.RLock()
        self.ids = NueIds(settings.seed)
        self.catalog = Catalog(seed, connected=settings.connected_to_salesforce, ids=self.ids)
        # Tables indexed by the ids requests select on, so a request costs what it touches (table.py, issue 30):
        # customerId never changes once a record is stored (a quote's may: quotes.save re-files it); the order
        # ids a subscription belongs to grow with each change order (orders.activate_order re-files it).
        # Customers are not indexed by their own fields: externalId, salesAccountId and name change, also by
        # hand in demos and tests (store.customers[id]["externalId"] = ...), which no index would hear of.
        self.customers = Table()
        self.customers_by_external: dict[str, str] = {}
        self.contacts = Table(customerId=field("customerId"))
        self.contact_emails: set[str] = set()
        self.orders = Table(customerId=field("customerId"))
        self.subscriptions = Table(customerId=field("customerId"), orderId=subscription_orders)
        self.subscriptions_by_name: dict[str, str] = {}
        self.assets = Table(customerId=field("customerId"), orderId=field("orderId"))
        self.invoices = Table(customerId=field("customerId"), orderId=field("orderId"))
        self.payment_applications: dict[str, list[Record]] = {}
        self.credit_memos = Table(customerId=field("customerId"))
        self.quotes = Table(customerId=field("customerId"))
        self.quotes_by_opportunity: dict[str, str] = {}

    # --- bookkeeping -------------------------------------------------------------------------------------
    def touch(self, record: Record, *, created: bool = False) -> Record:
        stamp = wire.timestamp(self.clock.stamp())
        if created:
            record["createdDate"] = stamp
        record["lastModifiedDate"] = stamp
        return record

    def emit(self, event_type: str, record: Record) -> None:
        allowed = self.settings.webhook_event_types
        if allowed is not None and event_type not in allowed:
            return
        event = wire.webhook_envelope(self.ids.uuid(), event_type, wire.timestamp(self.clock.now()),
                                      wire.render(record))
        self.publish(event)

    # --- lookups -----------------------------------------------------------------------------------------
    def customer(self, key: str) -> Record | None:
        """By Nue id or by Salesforce Account id (externalId) [doc]."""
        record = self.customers.get(key)
        if record is None:
            nue_id = self.customers_by_external.get(key)
            record = self.customers.get(nue_id) if nue_id else None
        return record

    def require_customer(self, key: Any) -> Record:
        record = self.customer(key) if isinstance(key, str) else None
        if record is None:
            raise unprocessable(f"customer {key!r} not found")
        return record

    def entry(self, entry_id: Any) -> Entry:
        entry = self.catalog.entries.get(entry_id) if isinstance(entry_id, str) else None
        if entry is None:
            raise unprocessable(f"price book entry {entry_id!r} not found")
        return entry

    def subscription_by_name(self, name: Any) -> Record:
        sub_id = self.subscriptions_by_name.get(name) if isinstance(name, str) else None
        if sub_id is None:
            raise unprocessable(f"asset {name!r} not found")
        return self.subscriptions[sub_id]

    # --- money -------------------------------------------------------------------------------------------
    def subscription_monthly(self, sub: Record) -> Decimal:
        """What the subscription's terms cost a month, whatever its status (free trials and included add-ons
        cost nothing)."""
        if sub.get("freeTrial") or sub.get("_included"):
            return ZERO
        entry = self.catalog.entries[sub["priceBookEntryId"]]
        return discounted(monthly(entry, Decimal(sub["quantity"])), sub.get("_discount", ZERO))

    def subscription_mrr(self, sub: Record) -> Decimal:
        return self.subscription_monthly(sub) if sub["status"] in LIVE_SUBSCRIPTION else ZERO

    def refresh_customer_metrics(self, customer_id: str) -> None:
        """todayCMRR/todayARR from live subscriptions, totalTCV from activated orders: the cross-check a
        reconciliation compares its own MRR against. A change touches lastModifiedDate (no webhook)."""
        customer = self.customers.get(customer_id)
        if customer is None:
            return
        cmrr = sum((self.subscription_mrr(s) for s in self.subscriptions.where("customerId", [customer_id])
                    if s["customerId"] == customer_id), ZERO)
        tcv = sum((o["orderTCV"] for o in self.orders.where("customerId", [customer_id])
                   if o["customerId"] == customer_id and o["status"] == "Activated"), ZERO)
        values = {"todayCMRR": money(cmrr), "todayARR": money(cmrr * 12), "totalTCV": money(tcv)}
        if any(customer.get(k) != v for k, v in values.items()):
            customer.update(values)
            self.touch(customer)
