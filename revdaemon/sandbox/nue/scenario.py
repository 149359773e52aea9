"""The scenario driver: business events as one call each, through the same domain code as the API, so
each fires the same webhooks. Returns wire-shaped records (money still Decimal)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol

from revdaemon.sandbox.nue import billing, credit_memos, customers, orders, quotes, wire
from revdaemon.sandbox.nue.errors import unprocessable
from revdaemon.sandbox.nue.store import Record, Store
from revdaemon.sandbox.seed import SeedAccount, SeedOpportunity


class _Host(Protocol):
    store: Store


def _out(value: dict[str, Any]) -> dict[str, Any]:
    return wire.render(value)


class Scenario:
    def __init__(self, host: _Host) -> None:
        self._host = host

    @property
    def store(self) -> Store:
        return self._host.store

    # --- seed lookups ------------------------------------------------------------------------------------
    def account(self, key: str | int) -> SeedAccount:
        accounts = self.store.seed.accounts
        if isinstance(key, int):
            return accounts[key]
        found = next((a for a in accounts if a.id == key or a.name == key), None)
        if found is None:
            raise unprocessable(f"no seed account {key!r}")
        return found

    def opportunity(self, key: str | int) -> SeedOpportunity:
        opportunities = self.store.seed.opportunities
        if isinstance(key, int):
            return opportunities[key]
        found = next((o for o in opportunities if o.id == key or o.name == key), None)
        if found is None:
            raise unprocessable(f"no seed opportunity {key!r}")
        return found

    def entry_id(self, sku: str) -> str:
        return self.store.catalog.by_sku[sku].id

    def _sku_of(self, seed_product_id: str) -> str:
        return next(p.sku for p in self.store.seed.products if p.id == seed_product_id)

    # --- customers ---------------------------------------------------------------------------------------
    def create_customer(self, account: str | int = 0) -> Record:
        """A customer arriving from a Salesforce Account (Nue's sync), linked by externalId when connected."""
        a = self.account(account)
        fields = {"name": a.name, "recordType": "Business", "website": a.website, "phone": a.phone,
                  "billingCity": a.billing_city, "billingCountry": a.billing_country}
        return _out(customers.link_synced_customer(self.store, account_id=a.id, fields=fields))

    def update_customer(self, customer: str, **fields: Any) -> Record:
        return _out(customers.update_customer(self.store, customer, fields)[0])

    # --- orders ------------------------------------------------------------------------------------------
    def order_products(self, opportunity: str | int, *, term: int | None = None) -> list[dict[str, Any]]:
        """The opportunity's lines as orderProducts; a bundle takes all its options as addOns."""
        o = self.opportunity(opportunity)
        out = []
        for line in o.lines:
            entry = self.store.catalog.by_sku[self._sku_of(line.product_id)]
            item: dict[str, Any] = {"priceBookEntryId": entry.id, "quantity": line.quantity,
                                    "discount": line.discount}
            if entry.recurring:
                item["subscriptionTerm"] = term or o.term_months
            if entry.options:
                item["addOns"] = [{"productOptionId": opt.id, "quantity": opt.quantity} for opt in entry.options]
            out.append(item)
        return out

    def create_order(self, customer: str, *, opportunity: str | int | None = None,
                     order_products: list[dict[str, Any]] | None = None, **fields: Any) -> Record:
        if order_products is None:
            order_products = self.order_products(opportunity if opportunity is not None else 0)
        body = {"customer": {"id": customer}, "orderProducts": order_products, **fields}
        return _out(orders.create_order(self.store, body)["order"])

    def activate_order(self, order_id: str, *, generate_invoice: bool = False,
                       activate_invoice: bool = False) -> dict[str, Any]:
        options = {"generateInvoice": generate_invoice, "activateInvoice": activate_invoice}
        return _out(orders.activate_order(self.store, order_id, {"options": options}))

    def create_and_activate_order(self, customer: str, *, generate_invoice: bool = False,
                                  activate_invoice: bool = False, **kwargs: Any) -> dict[str, Any]:
        order = self.create_order(customer, **kwargs)
        return self.activate_order(order["id"], generate_invoice=generate_invoice,
                                   activate_invoice=activate_invoice)

    def change(self, asset_number: str, change_type: str, *, generate_invoice: bool = False,
               **fields: Any) -> dict[str, Any]:
        """Creates and activates a change order with one asset change, e.g.
        change("SUB-00000001", "UpdateQuantity", quantity=5)."""
        body = {"assetChanges": [{"changeType": change_type, "assetNumber": asset_number, **fields}]}
        order = orders.create_change_order(self.store, body)["order"]
        return self.activate_order(order["id"], generate_invoice=generate_invoice)

    def advance_days(self, days: float) -> list[Record]:
        """Moves the simulated calendar; scheduled cancellations and ended terms follow."""
        self.store.clock.advance(days)
        return [_out(sub) for sub in orders.sweep(self.store)]

    def expire_subscription(self, name: str) -> Record:
        return _out(orders.expire(self.store, name))

    # --- billing -----------------------------------------------------------------------------------------
    def post_invoice(self, customer: str, *, activate: bool = False) -> Record:
        """What a bill run posts: one month of every live subscription."""
        store = self.store
        with store.lock:
            owner = store.require_customer(customer)
            items = billing.items_for_customer(store, owner["id"])
            return _out(billing.create_invoice(store, owner["id"], items, None, activate=activate))

    def submit_invoice(self, invoice_id: str) -> Record:
        return _out(billing.submit_invoice(self.store, invoice_id))

    def activate_invoice(self, invoice_id: str) -> Record:
        return _out(billing.activate_invoice(self.store, invoice_id))

    def cancel_invoice(self, invoice_id: str) -> Record:
        return _out(billing.cancel_invoice(self.store, invoice_id))

    def pay_invoice(self, invoice_id: str, amount: Decimal | str | None = None,
                    payment_method: str = "Credit Card") -> dict[str, Any]:
        store = self.store
        with store.lock:
            invoice = store.invoices.get(invoice_id)
            if invoice is None:
                raise unprocessable(f"invoice {invoice_id} not found")
            value = Decimal(str(amount)) if amount is not None else invoice["balance"]
            body = {"payInvoices": [{"invoiceId": invoice_id, "customerId": invoice["customerId"],
                                     "transactionAmount": str(value), "paymentSource": "Sandbox",
                                     "paymentMethod": payment_method}]}
            return _out(billing.pay(store, body))

    def issue_credit_memo(self, customer: str, amount: Decimal | str, invoice_id: str | None = None,
                          activate: bool = True) -> Record:
        return _out(credit_memos.issue(self.store, customer, Decimal(str(amount)), invoice_id=invoice_id,
                                       activate=activate))

    def fail_collection(self, invoice_id: str) -> Record:
        return _out(billing.set_payment_status(self.store, invoice_id, "TransferError"))

    def transfer_invoice(self, invoice_id: str) -> Record:
        return _out(billing.set_payment_status(self.store, invoice_id, "Transferred"))

    # --- quotes ------------------------------------------------------------------------------------------
    def quote_body(self, opportunity: str | int, quantities: dict[str, Any] | None = None) -> dict[str, Any]:
        o = self.opportunity(opportunity)
        products = []
        for line in o.lines:
            sku = self._sku_of(line.product_id)
            quantity = (quantities or {}).get(sku, line.quantity)
            products.append({"productSku": sku, "uom": self.store.catalog.by_sku[sku].uom, "quantity": quantity})
        for sku, quantity in (quantities or {}).items():
            if all(p["productSku"] != sku for p in products):
                products.append({"productSku": sku, "quantity": quantity})
        body: dict[str, Any] = {"opportunityId": o.id, "name": o.name, "subscriptionTerm": o.term_months,
                                "products": products}
        owner = self.store.customer(o.account_id)
        if owner is not None:
            body["customerId"] = owner["id"]
        return body

    def commit_quote(self, opportunity: str | int = 0) -> Record:
        return _out(quotes.save(self.store, self.quote_body(opportunity)))

    def requote(self, opportunity: str | int = 0, quantities: dict[str, Any] | None = None) -> Record:
        """Same opportunity, new lines: the quote keeps its id, quoteVersion + 1, quote.updated fires."""
        return _out(quotes.save(self.store, self.quote_body(opportunity, quantities)))

    def order_from_quote(self, opportunity: str | int, *, activate: bool = True, order_id: str | None = None
                         ) -> Record:
        """Nue's own quote-to-order flow: the opportunity's quote (committed first if missing) becomes an order
        of its customer that names the quote [assumed: wire.ORDER_QUOTE_FIELD] and carries no revdaemon
        marker; activated unless told otherwise (no invoice)."""
        o = self.opportunity(opportunity)
        customer = self.store.customer(o.account_id) or self.create_customer(o.account_id)
        quote_id = self.store.quotes_by_opportunity.get(o.id) or self.commit_quote(o.id)["id"]
        return self.order_for(o.id, customer["id"], activate=activate, order_id=order_id,
                              description=f"From quote {self.store.quotes[quote_id]['quoteNumber']}",
                              **{wire.ORDER_QUOTE_FIELD: quote_id})

    def order_for(self, opportunity: str | int, customer: str, *, activate: bool = True,
                  order_id: str | None = None, **fields: Any) -> Record:
        """An order of the opportunity's lines made outside revdaemon (a person, another tool); `order_id`
        gives it a known id (one an earlier tool wrote on the opportunity)."""
        order = self.create_order(customer, opportunity=opportunity, name=self.opportunity(opportunity).name,
                                  **fields)
        if order_id is not None:
            with self.store.lock:
                record = self.store.orders.pop(order["id"])
                record["id"] = order_id
                self.store.orders[order_id] = record
        if not activate:
            return _out(self.store.orders[order_id or order["id"]])
        return self.activate_order(order_id or order["id"])["order"]  # type: ignore[no-any-return]

    def set_quote_status(self, opportunity: str, status: str) -> Record:
        return _out(quotes.set_status(self.store, opportunity, status))

    # --- late commits ------------------------------------------------------------------------------------
    def commit_late(self, kind: str, record_id: str, minutes_ago: float = 5.0, at: str | None = None,
                    **fields: Any) -> Record:
        """A change whose transaction began `minutes_ago` (or at `at`, a wire timestamp) and commits only now:
        the record takes `fields` and that earlier lastModifiedDate, visible from now on, behind any poll
        cursor that has passed it. No webhook fires: the poll's overlap is what must find it."""
        tables = {"Customer": self.store.customers, "Order": self.store.orders,
                  "Subscription": self.store.subscriptions, "Invoice": self.store.invoices,
                  "Quote": self.store.quotes}
        if kind not in tables:
            raise unprocessable(f"commit_late: no table {kind!r}; known: {', '.join(tables)}")
        with self.store.lock:
            record = tables[kind].get(record_id)
            if record is None:
                raise unprocessable(f"commit_late: no {kind} {record_id!r}")
            record.update(fields)
            tables[kind].reindex(record_id)  # the fields may include an indexed one (table.py)
            record["lastModifiedDate"] = at or wire.timestamp(self.store.clock.now() - timedelta(minutes=minutes_ago))
            return _out(record)
