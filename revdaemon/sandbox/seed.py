"""The seed data set both simulators start from, deterministic for a given seed.

In a Nue tenant connected to Salesforce (nue-api.md, "Identifiers"), products, price books, price book
entries and users carry the same Salesforce ids on both sides, so one catalog is built here and each
simulator loads it into its own model. Accounts exist in Salesforce; Nue learns them as customers only
when an order makes them (or the scenario driver does).

`build_seed(brownfield=N)` adds a tenant that already has orders (issue 22): N more accounts, each with one
won opportunity, most of them already ordered in Nue the ways a real tenant orders them (BROWNFIELD_KINDS).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from revdaemon.sandbox.sfids import IdFactory

# Standard opportunity stages: (name, probability, is_closed, is_won). salesforce-api.md §5.
OPPORTUNITY_STAGES: tuple[tuple[str, int, bool, bool], ...] = (
    ("Prospecting", 10, False, False),
    ("Qualification", 10, False, False),
    ("Needs Analysis", 20, False, False),
    ("Value Proposition", 50, False, False),
    ("Id. Decision Makers", 60, False, False),
    ("Perception Analysis", 70, False, False),
    ("Proposal/Price Quote", 75, False, False),
    ("Negotiation/Review", 90, False, False),
    ("Closed Won", 100, True, True),
    ("Closed Lost", 0, True, False),
)


@dataclass(frozen=True, kw_only=True)
class SeedUser:
    id: str
    username: str
    name: str
    email: str
    role: str  # "sales" | "customer_success" | "integration"


@dataclass(frozen=True, kw_only=True)
class PriceTier:
    lower_bound: Decimal
    upper_bound: Decimal | None
    price: Decimal
    charge_model: str  # "PerUnit" | "FlatFee"


@dataclass(frozen=True, kw_only=True)
class PriceTag:
    type: str  # "Tiered" | "Volume"
    tiers: tuple[PriceTier, ...]


@dataclass(frozen=True, kw_only=True)
class BundleOption:
    id: str  # Nue productOptionId
    product_id: str
    quantity: Decimal
    required: bool


@dataclass(frozen=True, kw_only=True)
class SeedProduct:
    id: str  # Product2 id (01t), shared with Nue in a connected tenant
    sku: str  # ProductCode in Salesforce, sku in Nue
    name: str
    record_type: str  # "Product" | "Service" | "Bundle"
    uom: str
    pricebook_entry_id: str  # PricebookEntry id (01u)
    unit_price: Decimal  # per unit per billing period
    billing_period: str  # "Month" | "Year" | "OneTime"
    price_tag: PriceTag | None = None
    options: tuple[BundleOption, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SeedAccount:
    id: str
    name: str
    owner_id: str
    industry: str
    billing_city: str
    billing_country: str
    website: str
    phone: str


@dataclass(frozen=True, kw_only=True)
class SeedContact:
    id: str
    account_id: str
    first_name: str
    last_name: str
    email: str


@dataclass(frozen=True, kw_only=True)
class SeedLineItem:
    id: str
    product_id: str
    pricebook_entry_id: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal  # percent


@dataclass(frozen=True, kw_only=True)
class SeedOpportunity:
    id: str
    account_id: str
    owner_id: str
    name: str
    stage: str
    close_date: date
    type: str
    term_months: int
    lines: tuple[SeedLineItem, ...]


# How a brownfield deal already stands, and how many in 20 stand so (deterministic by index).
BROWNFIELD_KINDS: tuple[tuple[str, int], ...] = (
    ("from_quote", 12),  # Nue's own quote-to-order flow: the order names the quote, the quote the opportunity
    ("by_hand", 2),  # a person ordered it in Nue, naming the opportunity on the order
    ("order_id_on_opportunity", 2),  # an earlier tool ordered it and wrote the order id on the opportunity
    ("before_go_live", 3),  # won long before the go-live cut-off; never ordered in Nue
    ("new", 1),  # won after the cut-off, not ordered anywhere: the only ones revdaemon should order
)
BROWNFIELD_GO_LIVE_DAYS = 60  # the scenario's go-live cut-off: this many days before today


@dataclass(frozen=True, kw_only=True)
class BrownfieldDeal:
    opportunity_id: str
    account_id: str
    kind: str  # one of BROWNFIELD_KINDS
    order_id: str | None = None  # the Nue order's id, known to both sides (order_id_on_opportunity)


@dataclass(frozen=True, kw_only=True)
class SeedData:
    seed: int
    created_at: datetime
    organization_id: str
    pricebook_id: str
    users: tuple[SeedUser, ...]
    products: tuple[SeedProduct, ...]
    accounts: tuple[SeedAccount, ...]
    contacts: tuple[SeedContact, ...]
    opportunities: tuple[SeedOpportunity, ...]
    extra: dict[str, object] = field(default_factory=dict)
    brownfield: tuple[BrownfieldDeal, ...] = ()
    go_live: date | None = None  # the brownfield scenario's cut-off (flows.closed_won.won_since)

    def product(self, sku: str) -> SeedProduct:
        return next(p for p in self.products if p.sku == sku)


def build_seed(seed: int = 1, *, now: datetime | None = None, ids: IdFactory | None = None,
               brownfield: int = 0) -> SeedData:
    """The same seed gives the same records, ids and dates (relative to `now`, truncated to the day);
    `brownfield` adds that many won deals of a tenant that already has orders."""
    rng = random.Random(seed)
    ids = ids or IdFactory(seed)
    created = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
    today = created.date() + timedelta(days=30)

    users = (
        SeedUser(id=ids.for_object("User"), username="integration@revdaemon.sandbox", name="Integration User",
                 email="integration@revdaemon.sandbox", role="integration"),
        SeedUser(id=ids.for_object("User"), username="ava.seller@revdaemon.sandbox", name="Ava Seller",
                 email="ava.seller@revdaemon.sandbox", role="sales"),
        SeedUser(id=ids.for_object("User"), username="sam.success@revdaemon.sandbox", name="Sam Success",
                 email="sam.success@revdaemon.sandbox", role="customer_success"),
    )
    seller = users[1].id

    def tier(lower: int, upper: int | None, price: str, model: str = "PerUnit") -> PriceTier:
        return PriceTier(lower_bound=Decimal(lower), upper_bound=None if upper is None else Decimal(upper),
                         price=Decimal(price), charge_model=model)

    def product(sku: str, name: str, record_type: str, uom: str, price: str, period: str,
                tag: PriceTag | None = None, options: tuple[BundleOption, ...] = ()) -> SeedProduct:
        return SeedProduct(
            id=ids.for_object("Product2"), sku=sku, name=name, record_type=record_type, uom=uom,
            pricebook_entry_id=ids.for_object("PricebookEntry"), unit_price=Decimal(price),
            billing_period=period, price_tag=tag, options=options,
        )

    platform = product("PLAT-SUB", "Platform Subscription", "Product", "Each", "500.00", "Month")
    seats = product(
        "SEAT-VOL", "User Seats", "Product", "User", "40.00", "Month",
        PriceTag(type="Volume", tiers=(tier(1, 50, "40.00"), tier(51, 200, "32.00"), tier(201, None, "25.00"))),
    )
    api_calls = product(
        "API-TIER", "API Calls (thousands)", "Product", "Each", "2.00", "Month",
        PriceTag(type="Tiered",
                 tiers=(tier(0, 100, "0", "FlatFee"), tier(100, 1000, "2.00"), tier(1000, None, "1.50"))),
    )
    support = product("SUP-PREM", "Premium Support", "Service", "Each", "300.00", "Month")
    onboarding = product("ONB-SVC", "Onboarding Package", "Service", "Each", "2500.00", "OneTime")
    bundle = product(
        "GROW-BNDL", "Growth Bundle", "Bundle", "Each", "1200.00", "Month",
        options=(
            BundleOption(id=f"opt-{seed}-platform", product_id=platform.id, quantity=Decimal(1), required=True),
            BundleOption(id=f"opt-{seed}-seats", product_id=seats.id, quantity=Decimal(10), required=False),
            BundleOption(id=f"opt-{seed}-support", product_id=support.id, quantity=Decimal(1), required=False),
        ),
    )
    products = (platform, seats, api_calls, support, onboarding, bundle)

    names = ["Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Logistics", "Wayne Foods"]
    cities = [("Chicago", "US"), ("Springfield", "US"), ("Austin", "US"), ("London", "GB"), ("Berlin", "DE"),
              ("Toronto", "CA")]
    accounts = tuple(
        SeedAccount(
            id=ids.for_object("Account"), name=name, owner_id=seller, industry=rng.choice(["Technology", "Retail",
                                                                                            "Healthcare"]),
            billing_city=cities[i][0], billing_country=cities[i][1],
            website=f"https://{name.split()[0].lower()}.example", phone=f"+1-555-01{i:02d}",
        )
        for i, name in enumerate(names)
    )
    firsts = ["Alex", "Blair", "Casey", "Drew", "Emery", "Finley"]
    contacts = tuple(
        SeedContact(id=ids.for_object("Contact"), account_id=account.id, first_name=first,
                    last_name=account.name.split()[0],
                    email=f"{first.lower()}@{account.name.split()[0].lower()}.example")
        for account, first in zip(accounts, firsts, strict=True)
    )

    def lines(*items: tuple[SeedProduct, int, str]) -> tuple[SeedLineItem, ...]:
        return tuple(
            SeedLineItem(id=ids.for_object("OpportunityLineItem"), product_id=p.id,
                         pricebook_entry_id=p.pricebook_entry_id, quantity=Decimal(q),
                         unit_price=p.unit_price, discount=Decimal(d))
            for p, q, d in items
        )

    def opportunity(account: SeedAccount, name: str, stage: str, days: int, kind: str,
                    items: tuple[SeedLineItem, ...], term: int = 12) -> SeedOpportunity:
        return SeedOpportunity(
            id=ids.for_object("Opportunity"), account_id=account.id, owner_id=seller, name=name, stage=stage,
            close_date=today + timedelta(days=days), type=kind, term_months=term, lines=items,
        )

    opportunities = (
        opportunity(accounts[0], "Acme Corp - Platform", "Negotiation/Review", 5, "New Business",
                    lines((platform, 1, "0"), (seats, 25, "10"), (onboarding, 1, "0"))),
        opportunity(accounts[1], "Globex - Growth Bundle", "Proposal/Price Quote", 14, "New Business",
                    lines((bundle, 1, "5"), (api_calls, 1500, "0")), term=24),
        opportunity(accounts[2], "Initech - Seats", "Prospecting", 45, "New Business",
                    lines((seats, 60, "0"))),
        opportunity(accounts[3], "Umbrella Health - Platform and Support", "Closed Won", -2, "New Business",
                    lines((platform, 2, "0"), (support, 1, "0"), (seats, 120, "15"))),
        opportunity(accounts[4], "Stark Logistics - Pilot", "Closed Lost", -20, "New Business",
                    lines((platform, 1, "20"))),
        opportunity(accounts[5], "Wayne Foods - API", "Value Proposition", 30, "New Business",
                    lines((api_calls, 800, "0"), (support, 1, "0"))),
    )
    deals: list[BrownfieldDeal] = []
    go_live = today - timedelta(days=BROWNFIELD_GO_LIVE_DAYS)
    kinds = [kind for kind, share in BROWNFIELD_KINDS for _ in range(share)]
    more_accounts: list[SeedAccount] = []
    more_opportunities: list[SeedOpportunity] = []
    for i in range(brownfield):
        kind = kinds[i % len(kinds)]
        account = SeedAccount(id=ids.for_object("Account"), name=f"Brownfield {i:04d}", owner_id=seller,
                              industry="Technology", billing_city="Chicago", billing_country="US",
                              website=f"https://brownfield{i:04d}.example", phone=f"+1-555-9{i:04d}")
        # Before the go-live: one to two years back; otherwise within the weeks since the go-live.
        days_back = 365 + i % 365 if kind == "before_go_live" else i % BROWNFIELD_GO_LIVE_DAYS
        deal = opportunity(account, f"Brownfield {i:04d} - Platform", "Closed Won", -days_back, "New Business",
                           lines((platform, 1 + i % 3, "0"), (seats, 10 + i % 40, "0")))
        order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if kind == "order_id_on_opportunity" \
            else None
        more_accounts.append(account)
        more_opportunities.append(deal)
        deals.append(BrownfieldDeal(opportunity_id=deal.id, account_id=account.id, kind=kind, order_id=order_id))
    return SeedData(
        brownfield=tuple(deals),
        go_live=go_live if brownfield else None,
        seed=seed,
        created_at=created,
        organization_id=ids.for_object("Organization"),
        pricebook_id=ids.for_object("Pricebook2"),
        users=users,
        products=products,
        accounts=(*accounts, *more_accounts),
        contacts=contacts,
        opportunities=(*opportunities, *more_opportunities),
    )
