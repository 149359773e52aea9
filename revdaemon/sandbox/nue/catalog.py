"""The tenant's catalog, loaded from the shared seed: Salesforce ids when connected, UUIDs when standalone."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.ids import NueIds
from revdaemon.sandbox.seed import PriceTag, SeedData


@dataclass(frozen=True, kw_only=True)
class Option:
    id: str  # productOptionId
    product_id: str
    entry_id: str
    quantity: Decimal
    required: bool


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A price book entry with its product, which is what an order line points at."""

    id: str
    product_id: str
    price_book_id: str
    sku: str
    name: str
    record_type: str
    uom: str
    unit_price: Decimal
    billing_period: str  # Month | Year | OneTime
    price_tag: PriceTag | None
    options: tuple[Option, ...]

    @property
    def recurring(self) -> bool:
        return self.billing_period != "OneTime"


class Catalog:
    def __init__(self, seed: SeedData, *, connected: bool, ids: NueIds) -> None:
        # Connected tenant: Nue shares Salesforce's ids [doc]. Standalone: Nue-native UUIDs [doc].
        def local(sf_id: str) -> str:
            return sf_id if connected else ids.uuid()

        self.price_book_id = local(seed.pricebook_id)
        self.user_ids = {u.id: local(u.id) for u in seed.users}
        product_ids = {p.id: local(p.id) for p in seed.products}
        entry_ids = {p.id: local(p.pricebook_entry_id) for p in seed.products}
        self.created = wire.timestamp(seed.created_at)
        self.entries: dict[str, Entry] = {}
        self.by_sku: dict[str, Entry] = {}
        self.options: dict[str, Option] = {}
        for p in seed.products:
            options = tuple(
                Option(id=o.id if connected else ids.uuid(), product_id=product_ids[o.product_id],
                       entry_id=entry_ids[o.product_id], quantity=o.quantity, required=o.required)
                for o in p.options
            )
            entry = Entry(id=entry_ids[p.id], product_id=product_ids[p.id], price_book_id=self.price_book_id,
                          sku=p.sku, name=p.name, record_type=p.record_type, uom=p.uom, unit_price=p.unit_price,
                          billing_period=p.billing_period, price_tag=p.price_tag, options=options)
            self.entries[entry.id] = entry
            self.by_sku[entry.sku] = entry
            for option in options:
                self.options[option.id] = option
        self.by_product = {e.product_id: e for e in self.entries.values()}
        self.products = [self._product(e) for e in self.entries.values()]

    def _product(self, e: Entry) -> dict[str, Any]:
        tags = []
        if e.price_tag is not None:
            tags.append(wire.price_tag(e.price_tag.type, [
                wire.price_tier(t.lower_bound, t.upper_bound, t.price, t.charge_model) for t in e.price_tag.tiers
            ]))
        return {
            "id": e.product_id,
            "sku": e.sku,
            "name": e.name,
            "recordType": e.record_type,
            "configurable": bool(e.options),
            "status": "Active",
            "uom": e.uom,
            "priceBookEntries": [{
                "id": e.id, "priceBookId": e.price_book_id, "productId": e.product_id, "listPrice": e.unit_price,
                "currencyIsoCode": "USD", "billingPeriod": e.billing_period, "uom": e.uom, "active": True,
                "priceTags": tags,
            }],
            "productOptions": [
                {"id": o.id, "productId": o.product_id, "priceBookEntryId": o.entry_id, "quantity": o.quantity,
                 "required": o.required}
                for o in e.options
            ],
            "createdDate": self.created,
            "lastModifiedDate": self.created,
        }
