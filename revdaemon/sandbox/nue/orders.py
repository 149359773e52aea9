"""Orders [doc]: drafts with order products (bundles with nested addOns), change orders, and their
activation, which creates or changes subscriptions and assets and may generate an invoice."""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from revdaemon.sandbox.nue import billing, customers, wire
from revdaemon.sandbox.nue.catalog import Entry
from revdaemon.sandbox.nue.dates import add_months, months_between, parse_day
from revdaemon.sandbox.nue.errors import bad_request, conflict, not_found, unprocessable
from revdaemon.sandbox.nue.pricing import ZERO, charge, discounted, money, monthly
from revdaemon.sandbox.nue.store import Record, Store, subscription_orders

DEFAULT_TERM = 12
ORDER_BODY_FIELDS = ("customer", "effectiveDate", "name", "description", "orderProducts", "billToContact",
                     "options", "assetChanges", "products")


def to_decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad_request(f"{field} must be a number, got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise bad_request(f"{field} must be a number, got {value!r}") from None


def _term(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{field} must be a whole number of months, got {value!r}")
    return value


# --- order products -----------------------------------------------------------------------------------
def _line(store: Store, item: Any, where: str, start: date, *, entry: Entry, option_id: str | None,
          default_quantity: Decimal, included: bool) -> Record:
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object")
    quantity = to_decimal(item.get("quantity", default_quantity), f"{where}.quantity")
    if quantity <= 0:
        raise bad_request(f"{where}.quantity must be positive")
    line_start = parse_day(item["subscriptionStartDate"], f"{where}.subscriptionStartDate") \
        if item.get("subscriptionStartDate") else start
    discount = to_decimal(item.get("discount", 0), f"{where}.discount")
    if not ZERO <= discount <= 100:
        raise bad_request(f"{where}.discount is a percentage")
    line: Record = {
        "id": store.ids.uuid(), "priceBookEntryId": entry.id, "productId": entry.product_id, "sku": entry.sku,
        "productName": entry.name, "quantity": quantity, "listPrice": entry.unit_price, "discount": discount,
        "freeTrial": bool(item.get("isFreeTrial", False)),  # [assumed] how a free trial is ordered
        "_included": included,
    }
    if option_id is not None:
        line["productOptionId"] = option_id
    if entry.recurring:
        term = _term(item.get("subscriptionTerm", DEFAULT_TERM), f"{where}.subscriptionTerm")
        if term <= 0:
            raise bad_request(f"{where}.subscriptionTerm must be positive")
        line.update(subscriptionStartDate=line_start.isoformat(), subscriptionTerm=term,
                    subscriptionEndDate=add_months(line_start, term).isoformat())
        month = ZERO if line["freeTrial"] or included else monthly(entry, quantity)
        line["_listTotal"] = money(month * term)
    else:
        line["_listTotal"] = ZERO if included else charge(entry, quantity)
    line["totalAmount"] = discounted(line["_listTotal"], discount)
    add_ons = item.get("addOns") or []
    if not isinstance(add_ons, list):
        raise bad_request(f"{where}.addOns must be an array")
    options = {o.id: o for o in entry.options}
    line["addOns"] = []
    for index, add_on in enumerate(add_ons):
        option = options.get(str(add_on.get("productOptionId"))) if isinstance(add_on, dict) else None
        if option is None:
            raise unprocessable(f"{where}.addOns[{index}]: not an option of {entry.sku}")
        # Options of a bundle are priced in the bundle's price [assumed]; they inherit its dates.
        child = {"subscriptionStartDate": line_start.isoformat(),
                 "subscriptionTerm": line.get("subscriptionTerm", DEFAULT_TERM), **add_on}
        line["addOns"].append(_line(store, child, f"{where}.addOns[{index}]", line_start,
                                    entry=store.catalog.entries[option.entry_id], option_id=option.id,
                                    default_quantity=option.quantity, included=True))
    return line


def flatten(lines: list[Record]) -> list[Record]:
    out = []
    for line in lines:
        out.append(line)
        out.extend(flatten(line.get("addOns", [])))
    return out


def _parse_lines(store: Store, items: Any, field: str, start: date) -> list[Record]:
    if not isinstance(items, list):
        raise bad_request(f"{field} must be an array")
    return [_line(store, item, f"{field}[{i}]", start, entry=store.entry(item.get("priceBookEntryId")
                                                                              if isinstance(item, dict) else None),
                  option_id=None, default_quantity=Decimal(1), included=False)
            for i, item in enumerate(items)]


def _totals(store: Store, order: Record, lines: list[Record], tax: bool, delta: Decimal = ZERO) -> None:
    every = flatten(lines)
    subtotal = sum((li["_listTotal"] for li in every), ZERO) + delta
    net = sum((li["totalAmount"] for li in every), ZERO) + delta
    acv = delta
    for li in every:
        if "subscriptionTerm" in li:
            share = li["totalAmount"] / Decimal(li["subscriptionTerm"]) * min(Decimal(li["subscriptionTerm"]), 12)
            acv += share
        else:
            acv += li["totalAmount"]
    tax_amount = money(net * Decimal(store.settings.tax_rate_percent) / 100) if tax else ZERO
    order.update(
        subtotal=money(subtotal), discountAmount=money(subtotal - net),
        discount=money((subtotal - net) / subtotal * 100) if subtotal else ZERO,
        taxAmount=tax_amount, totalAmount=money(net + tax_amount), orderTCV=money(net), orderACV=money(acv),
    )


def _new_order(store: Store, body: dict[str, Any], customer: Record, order_type: str) -> Record:
    effective = parse_day(body["effectiveDate"], "effectiveDate") if body.get("effectiveDate") \
        else store.clock.today()
    order: Record = {
        "id": store.ids.uuid(), "orderNumber": store.ids.number("order"), "name": body.get("name"),
        "description": body.get("description"), "orderType": order_type,  # [assumed] New | Change
        "status": "Draft", "customerId": customer["id"], "effectiveDate": effective.isoformat(),
        "orderStartDate": effective.isoformat(), "orderPlacedDate": None, "activatedDate": None,
        "billToContactId": None,
    }
    contact = body.get("billToContact")
    if contact is not None:
        contact_id = contact.get("id") if isinstance(contact, dict) else None
        if contact_id not in store.contacts:
            raise unprocessable(f"billToContact {contact_id!r} not found")
        order["billToContactId"] = contact_id
    # Custom fields (e.g. the Salesforce opportunity id the daemon matches on) are stored as sent.
    for key, value in body.items():
        if key not in ORDER_BODY_FIELDS and key not in order and not isinstance(value, dict | list):
            order[key] = value
    return order


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad_request("options must be an object")
    return options


def create_order(store: Store, raw: Any) -> dict[str, Any]:
    body = _body(raw)
    ref = body.get("customer")
    if not isinstance(ref, dict) or not ref.get("id"):
        raise bad_request("customer.id is required")
    if not body.get("orderProducts"):
        raise bad_request("orderProducts is required")
    options = _options(body)
    with store.lock:
        customer = store.require_customer(ref["id"])
        order = _new_order(store, body, customer, "New")
        lines = _parse_lines(store, body["orderProducts"], "orderProducts", date.fromisoformat(order["effectiveDate"]))
        starts = [li["subscriptionStartDate"] for li in lines if "subscriptionStartDate" in li]
        order["orderStartDate"] = min(starts, default=order["effectiveDate"])
        order["orderProducts"] = lines
        _totals(store, order, lines, bool(options.get("calculateTax")))
        store.touch(order, created=True)
        store.orders[order["id"]] = order
        store.emit("order.created", order)
        result: dict[str, Any] = {"order": order}
        if options.get("previewInvoice"):
            result["previewInvoice"] = billing.preview(store, customer["id"], billing.items_for_lines(store, lines),
                                                       order["id"])
        return result


# --- change orders ------------------------------------------------------------------------------------
def subscription_tcv(store: Store, sub: Record) -> Decimal:
    start = date.fromisoformat(sub["subscriptionStartDate"])
    end = date.fromisoformat(sub["subscriptionEndDate"])
    return money(store.subscription_monthly(sub) * max(months_between(start, end), ZERO))


def _apply_change(store: Store, sub: Record, change: dict[str, Any], where: str) -> None:
    """Applies one asset change to (a copy of) a subscription; raises 422 when it cannot apply."""
    kind = change["changeType"]
    status = sub["status"]
    if status in ("Canceled", "Expired") or (status == "Ended" and kind != "Renew"):
        raise unprocessable(f"{where}: subscription {sub['name']} is {status}")
    today = store.clock.today()
    end = date.fromisoformat(sub["subscriptionEndDate"])
    if kind == "UpdateQuantity":
        delta = to_decimal(change.get("quantity"), f"{where}.quantity")  # a delta [doc]
        if delta == 0:
            raise bad_request(f"{where}.quantity is a non-zero delta")
        if sub["quantity"] + delta < 0:
            raise unprocessable(f"{where}: quantity would become {sub['quantity'] + delta}")
        sub["quantity"] = sub["quantity"] + delta
    elif kind == "UpdateTerm":
        delta_term = _term(change.get("term"), f"{where}.term")  # months, a delta [doc]
        if delta_term == 0 or Decimal(sub["subscriptionTerm"]) + delta_term <= 0:
            raise unprocessable(f"{where}: term delta {delta_term} is not applicable")
        sub["subscriptionTerm"] = sub["subscriptionTerm"] + delta_term
        sub["subscriptionEndDate"] = add_months(end, delta_term).isoformat()
    elif kind == "Renew":
        renewal = _term(change.get("renewalTerm", sub["renewalTerm"]), f"{where}.renewalTerm")
        if renewal <= 0:
            raise bad_request(f"{where}.renewalTerm must be positive")
        sub["subscriptionTerm"] = sub["subscriptionTerm"] + renewal
        sub["subscriptionEndDate"] = add_months(end, renewal).isoformat()
        sub["status"] = "Active"
        sub["cancellationDate"] = None
    elif kind == "CoTerm":
        co_term = parse_day(change.get("coTermDate"), f"{where}.coTermDate")
        start = date.fromisoformat(sub["subscriptionStartDate"])
        if co_term <= start:
            raise unprocessable(f"{where}: coTermDate is before the subscription starts")
        sub["subscriptionEndDate"] = co_term.isoformat()
        term = months_between(start, co_term)
        sub["subscriptionTerm"] = int(term) if term == int(term) else term
    elif kind == "Cancel":
        cancel = parse_day(change.get("cancellationDate"), f"{where}.cancellationDate")
        sub["cancellationDate"] = cancel.isoformat()
        sub["subscriptionEndDate"] = min(cancel, end).isoformat()
        sub["status"] = "Canceled" if cancel <= today else "Scheduled for cancellation"
        sub["autoRenew"] = False
    elif kind == "ConvertFreeTrial":
        if not sub.get("freeTrial"):
            raise unprocessable(f"{where}: subscription {sub['name']} is not a free trial")
        sub["freeTrial"] = False
    elif kind in ("Upgrade", "Downgrade", "Swap"):
        # [doc] the subscription stays (same id and number) and moves to the related product; which products
        # relate is Nue's catalog configuration, not modelled here [assumed: any recurring entry].
        target = store.entry(change.get(wire.CHANGE_TARGET_ENTRY_FIELD))
        if not target.recurring or target.id == sub["priceBookEntryId"]:
            raise unprocessable(f"{where}: {target.sku} is not another subscription product")
        sub["priceBookEntryId"], sub["productId"] = target.id, target.product_id
    elif kind == "Reconfigure":
        options = change.get("addOns")
        if not isinstance(options, list):
            raise bad_request(f"{where}.addOns must be an array")
        sub["_options"] = copy.deepcopy(options)  # priced inside the bundle [assumed]: the MRR does not move
    elif kind == "AdjustPrice":
        discount = to_decimal(change.get("discount"), f"{where}.discount")
        if not ZERO <= discount <= 100:
            raise bad_request(f"{where}.discount is a percentage")
        sub["_discount"] = discount
    else:
        raise bad_request(f"{where}.changeType must be one of {', '.join(wire.CHANGE_TYPES)}")


def _plan(store: Store, changes: list[Any]) -> dict[str, tuple[Record, Record, Decimal]]:
    """Per subscription id: (current record, record after all its changes, TCV before)."""
    plan: dict[str, tuple[Record, Record, Decimal]] = {}
    for index, change in enumerate(changes):
        where = f"assetChanges[{index}]"
        if not isinstance(change, dict) or change.get("changeType") not in wire.CHANGE_TYPES:
            raise bad_request(f"{where}.changeType must be one of {', '.join(wire.CHANGE_TYPES)}")
        sub = store.subscription_by_name(change.get("assetNumber"))
        if sub["id"] not in plan:
            plan[sub["id"]] = (sub, copy.deepcopy(sub), subscription_tcv(store, sub))
        _apply_change(store, plan[sub["id"]][1], change, where)
    return plan


def _plan_delta(store: Store, plan: dict[str, tuple[Record, Record, Decimal]]) -> Decimal:
    return sum((subscription_tcv(store, after) - before for _, after, before in plan.values()), ZERO)


def create_change_order(store: Store, raw: Any) -> dict[str, Any]:
    body = _body(raw)
    changes = body.get("assetChanges") or []
    products = body.get("products") or []
    if not isinstance(changes, list) or not isinstance(products, list) or not (changes or products):
        raise bad_request("assetChanges or products is required")
    with store.lock:
        plan = _plan(store, changes)
        owners = {sub["customerId"] for sub, _, _ in plan.values()}
        ref = body.get("customer")
        if isinstance(ref, dict) and ref.get("id"):
            owners.add(store.require_customer(ref["id"])["id"])
        if len(owners) != 1:
            raise unprocessable("a change order needs exactly one customer (from its assets or customer.id)")
        customer = store.customers[owners.pop()]
        order = _new_order(store, body, customer, "Change")
        order["assetChanges"] = copy.deepcopy(changes)
        lines = _parse_lines(store, products, "products", date.fromisoformat(order["effectiveDate"]))
        order["orderProducts"] = lines
        _totals(store, order, lines, bool(_options(body).get("calculateTax")), _plan_delta(store, plan))
        store.touch(order, created=True)
        store.orders[order["id"]] = order
        store.emit("order.created", order)
        return {"order": order}


# --- activation ---------------------------------------------------------------------------------------
def asset_view(sub: Record) -> Record:
    return {"id": sub["id"], "assetNumber": sub["name"], "assetType": "Subscription",
            "customerId": sub["customerId"], "productId": sub["productId"],
            "priceBookEntryId": sub["priceBookEntryId"], "orderProductId": sub["orderProductId"],
            "quantity": sub["quantity"], "startDate": sub["subscriptionStartDate"],
            "endDate": sub["subscriptionEndDate"], "status": sub["status"],
            "subscriptionVersion": sub["subscriptionVersion"]}


def _materialise(store: Store, order: Record, lines: list[Record], parent: Record | None = None
                 ) -> tuple[list[Record], list[Record]]:
    subs: list[Record] = []
    assets: list[Record] = []
    for line in lines:
        entry = store.catalog.entries[line["priceBookEntryId"]]
        created: Record
        if entry.recurring:
            created = {
                "id": store.ids.uuid(), "name": store.ids.number("subscription"), "subscriptionVersion": 1,
                "customerId": order["customerId"], "productId": entry.product_id, "priceBookEntryId": entry.id,
                "orderProductId": line["id"], "orderId": order["id"],
                "parentSubscriptionId": parent["id"] if parent else None,
                "subscriptionStartDate": line["subscriptionStartDate"],
                "subscriptionEndDate": line["subscriptionEndDate"], "subscriptionTerm": line["subscriptionTerm"],
                "renewalTerm": DEFAULT_TERM, "autoRenew": False, "quantity": line["quantity"], "status": "Active",
                "nextBillingDate": line["subscriptionStartDate"], "freeTrial": line["freeTrial"],
                "cancellationDate": None, "_discount": line["discount"], "_included": line["_included"],
            }
            created["subscriptionCompositeId"] = wire.composite_id(created["name"], 1)
            store.touch(created, created=True)
            store.subscriptions[created["id"]] = created
            store.subscriptions_by_name[created["name"]] = created["id"]
            subs.append(created)
        else:
            created = {
                "id": store.ids.uuid(), "assetNumber": store.ids.number("asset"), "assetType": "Asset",
                "customerId": order["customerId"], "productId": entry.product_id, "priceBookEntryId": entry.id,
                "orderProductId": line["id"], "orderId": order["id"], "quantity": line["quantity"],
                "startDate": order["effectiveDate"], "endDate": None, "status": "Active",
            }
            store.touch(created, created=True)
            store.assets[created["id"]] = created
            assets.append(created)
        more_subs, more_assets = _materialise(store, order, line.get("addOns", []), created)
        subs += more_subs
        assets += more_assets
    return subs, assets


def order_assets(store: Store, order: Record) -> list[Record]:
    subs = [asset_view(s) for s in store.subscriptions.where("orderId", [order["id"]])
            if order["id"] in subscription_orders(s)]
    return subs + [a for a in store.assets.where("orderId", [order["id"]]) if a["orderId"] == order["id"]]


def activate_order(store: Store, order_id: str, raw: Any) -> dict[str, Any]:
    body = _body(raw) if raw is not None else {}
    options = _options(body)
    with store.lock:
        order = store.orders.get(order_id)
        if order is None:
            raise not_found(f"order {order_id} not found")
        if order["status"] != "Draft":
            raise conflict(f"order {order['orderNumber']} is {order['status']}, not Draft")
        changed: list[Record] = []
        if order["orderType"] == "Change":
            plan = _plan(store, order["assetChanges"])
            _totals(store, order, order["orderProducts"], order["taxAmount"] != ZERO, _plan_delta(store, plan))
            for sub, after, _ in plan.values():
                after["subscriptionVersion"] = sub["subscriptionVersion"] + 1
                after["subscriptionCompositeId"] = wire.composite_id(sub["name"], after["subscriptionVersion"])
                after["_orders"] = [*sub.get("_orders", [sub["orderId"]]), order["id"]]
                sub.update(after)
                store.subscriptions.reindex(sub["id"])
                store.touch(sub)
                changed.append(sub)
        new_subs, _assets = _materialise(store, order, order["orderProducts"])
        now = store.clock.now()
        order.update(status="Activated", activatedDate=wire.timestamp(now), orderPlacedDate=now.date().isoformat())
        store.touch(order)
        customer = store.customers[order["customerId"]]
        linked = store.settings.external_id_sync == "on_activation" and customers.sync_external_id(store, customer)
        store.refresh_customer_metrics(customer["id"])
        store.emit("order.activated", order)
        for sub in new_subs:
            store.emit("subscription.created", sub)
        for sub in changed:
            store.emit("subscription.updated", sub)
        if linked:
            store.touch(customer)
            store.emit("customer.updated", customer)
        invoices = []
        if options.get("generateInvoice"):
            items = (billing.items_for_lines(store, order["orderProducts"]) + billing.items_for_changes(store, changed))
            invoices.append(billing.create_invoice(store, customer["id"], items, order["id"],
                                                   activate=bool(options.get("activateInvoice"))))
        return {"order": order, "assets": order_assets(store, order), "subscriptions": new_subs + changed,
                "invoices": invoices}


# --- reads --------------------------------------------------------------------------------------------
def customer_ids(store: Store, raw: str | None) -> set[str] | None:
    """`customerIds` is a URL-encoded JSON array of Nue or Salesforce ids [doc]; None: no filter."""
    if raw is None:
        return None
    try:
        values = json.loads(raw)
    except ValueError:
        raise bad_request("customerIds must be a JSON array of ids") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise bad_request("customerIds must be a JSON array of ids")
    found = (store.customer(v) for v in values)
    return {c["id"] for c in found if c is not None}


def list_orders(store: Store, ids_param: str | None, includes: str | None, status: str | None) -> list[Record]:
    wanted = {s.strip() for s in (includes or "").split(",") if s.strip()}
    unknown = wanted - {"assets", "invoices"}
    if unknown:
        raise bad_request(f"unknown includes: {', '.join(sorted(unknown))}")
    statuses = {s.strip().lower() for s in status.split(",")} if status else None
    with store.lock:
        ids = customer_ids(store, ids_param)
        candidates = store.orders.values() if ids is None else store.orders.where("customerId", ids)
        chosen = [order for order in candidates
                  if (ids is None or order["customerId"] in ids)
                  and (statuses is None or order["status"].lower() in statuses)]
        # The included records of all chosen orders in one pass over each collection, as order_assets and the
        # invoices' orderId select them: per order, a pass over every subscription, asset and invoice made each
        # read cost in proportion to the whole store (a burst's reads grew with the burst; issue 30).
        chosen_ids = {order["id"] for order in chosen}
        assets: dict[str, list[Record]] = {}
        invoices: dict[str, list[Record]] = {}
        # Now through the tables' orderId indexes: only the records of the chosen orders are read, in table order.
        if "assets" in wanted:
            for sub in store.subscriptions.where("orderId", chosen_ids):
                for order_id in dict.fromkeys(subscription_orders(sub)):
                    if order_id in chosen_ids:
                        assets.setdefault(order_id, []).append(asset_view(sub))
            for asset in store.assets.where("orderId", chosen_ids):
                if asset["orderId"] in chosen_ids:
                    assets.setdefault(asset["orderId"], []).append(asset)
        if "invoices" in wanted:
            for invoice in store.invoices.where("orderId", chosen_ids):
                if invoice["orderId"] in chosen_ids:
                    invoices.setdefault(invoice["orderId"], []).append(invoice)
        out = []
        for order in chosen:
            view = wire.render(order)
            if "assets" in wanted:
                view["assets"] = [wire.render(a) for a in assets.get(order["id"], [])]
            if "invoices" in wanted:
                view["invoices"] = [wire.render(i) for i in invoices.get(order["id"], [])]
            out.append(view)
        return out


def list_subscriptions(store: Store, ids_param: str | None, status: str | None) -> list[Record]:
    statuses = {s.strip().lower() for s in status.split(",")} if status else None
    with store.lock:
        ids = customer_ids(store, ids_param)
        candidates = store.subscriptions.values() if ids is None else store.subscriptions.where("customerId", ids)
        return [wire.render(s) for s in candidates
                if (ids is None or s["customerId"] in ids)
                and (statuses is None or s["status"].lower() in statuses)]


SUBSCRIPTION_PATCHABLE = ("autoRenew", "renewalTerm", "description")
NEEDS_CHANGE_ORDER = ("quantity", "subscriptionTerm", "subscriptionStartDate", "subscriptionEndDate", "status",
                      "priceBookEntryId", "productId", "subscriptionVersion", "subscriptionCompositeId")


def update_subscription(store: Store, sub_id: str, raw: Any) -> tuple[Record, list[str]]:
    body = _body(raw)
    blocked = sorted(k for k in body if k in NEEDS_CHANGE_ORDER)
    if blocked:
        raise unprocessable(f"{', '.join(blocked)} change through a change order")
    if "autoRenew" in body and not isinstance(body["autoRenew"], bool):
        raise bad_request("autoRenew must be a boolean")
    if "renewalTerm" in body and (_term(body["renewalTerm"], "renewalTerm") <= 0):
        raise bad_request("renewalTerm must be positive")
    warnings = []
    with store.lock:
        sub = store.subscriptions.get(sub_id)
        if sub is None:
            sub = store.subscriptions.get(store.subscriptions_by_name.get(sub_id, ""))
        if sub is None:
            raise not_found(f"subscription {sub_id} not found")
        for key, value in body.items():
            if key in SUBSCRIPTION_PATCHABLE or key.endswith("__c"):
                sub[key] = value
            else:
                warnings.append(f"unknown field {key} was ignored")
        store.touch(sub)
        store.emit("subscription.updated", sub)
        return sub, warnings


# --- time passing ---------------------------------------------------------------------------------------
def sweep(store: Store) -> list[Record]:
    """Statuses that follow the calendar: scheduled cancellations take effect, ended terms end or renew."""
    today = store.clock.today()
    changed = []
    with store.lock:
        for sub in store.subscriptions.values():
            end = date.fromisoformat(sub["subscriptionEndDate"])
            if sub["status"] == "Scheduled for cancellation" and sub["cancellationDate"] <= today.isoformat():
                sub["status"] = "Canceled"
            elif sub["status"] == "Active" and end <= today:
                if sub["autoRenew"]:
                    sub["subscriptionEndDate"] = add_months(end, sub["renewalTerm"]).isoformat()
                    sub["subscriptionTerm"] = sub["subscriptionTerm"] + sub["renewalTerm"]
                    sub["subscriptionVersion"] += 1
                    sub["subscriptionCompositeId"] = wire.composite_id(sub["name"], sub["subscriptionVersion"])
                else:
                    sub["status"] = "Ended"
            else:
                continue
            store.touch(sub)
            changed.append(sub)
        for customer_id in {s["customerId"] for s in changed}:
            store.refresh_customer_metrics(customer_id)
        for sub in changed:
            store.emit("subscription.updated", sub)
    return changed


def expire(store: Store, name: str) -> Record:
    """Ended -> Expired (final, locked)."""
    with store.lock:
        sub = store.subscription_by_name(name)
        if sub["status"] != "Ended":
            raise unprocessable(f"subscription {name} is {sub['status']}, not Ended")
        sub["status"] = "Expired"
        store.touch(sub)
        store.emit("subscription.updated", sub)
        return sub
