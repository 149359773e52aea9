"""The brownfield scenario (issue 22): a tenant that already has orders, made the ways Nue and people make them."""

from __future__ import annotations

import json
from collections import Counter

import httpx

from revdaemon.sandbox.nue import NueSim, NueSimSettings
from revdaemon.sandbox.seed import BROWNFIELD_KINDS, build_seed
from revdaemon.sandbox.server import ServerThread

API_KEY = "sandbox-nue-api-key"


def test_brownfield_orders_carry_nues_own_links_and_no_marker() -> None:
    """Orders from quotes name the quote (whose opportunityId is the deal), orders by hand name the deal, an
    earlier tool's order has the id the opportunity shows; no order has revdaemon's marker; no webhook fired."""
    seed = build_seed(1, brownfield=100)
    kinds = Counter(d.kind for d in seed.brownfield)
    assert kinds == {kind: share * 5 for kind, share in BROWNFIELD_KINDS}
    sim = NueSim(NueSimSettings(), seed)
    try:
        with ServerThread(sim.app) as server, httpx.Client(base_url=server.url, headers={"nue-api-key": API_KEY},
                                                           timeout=10) as client:
            by_deal = {d.opportunity_id: d for d in seed.brownfield}
            customers = [c["id"] for c in sim.store.customers.values()]
            orders = client.get("/orders", params={"customerIds": json.dumps(customers)}).json()["data"]
            assert len(orders) == kinds["from_quote"] + kinds["by_hand"] + kinds["order_id_on_opportunity"]
            quotes = {q["id"]: q for q in sim.store.quotes.values()}
            linked = Counter()
            for order in orders:
                assert order["status"] == "Activated" and "sfdc-opportunity:" not in (order["description"] or "")
                if order.get("quoteId"):
                    assert by_deal[quotes[order["quoteId"]]["opportunityId"]].kind == "from_quote"
                    linked["from_quote"] += 1
                elif order.get("opportunityId"):
                    assert by_deal[order["opportunityId"]].kind == "by_hand"
                    linked["by_hand"] += 1
                else:
                    assert order["id"] in {d.order_id for d in seed.brownfield}
                    linked["order_id_on_opportunity"] += 1
            assert linked == {k: kinds[k] for k in linked}
            graphql = client.post("/async/graphql", json={"query": "query { Order(limit: 500) { id quoteId } }"})
            assert sum(1 for o in graphql.json()["data"]["Order"] if o["quoteId"]) == kinds["from_quote"]
        assert sim.webhooks.published() == []
    finally:
        sim.close()
