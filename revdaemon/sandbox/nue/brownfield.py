"""A tenant that already has orders (issue 22): the seed's brownfield deals ordered in Nue the ways a real
tenant orders them, before revdaemon is installed. No webhook fires for this history.

- from_quote: Nue's quote-to-order flow; the quote names the opportunity [doc], the order names the quote
  [assumed: wire.ORDER_QUOTE_FIELD], no revdaemon marker.
- by_hand: a person ordered it, naming the opportunity on the order [assumed: wire.ORDER_OPPORTUNITY_FIELD].
- order_id_on_opportunity: an earlier tool; the order names nothing, the opportunity shows its id (the seed
  gives both sides the id).
- before_go_live and new: no order in Nue.
"""

from __future__ import annotations

from typing import Any

from revdaemon.sandbox.nue import credit_memos, wire
from revdaemon.sandbox.nue.scenario import Scenario
from revdaemon.sandbox.nue.store import Store


def load_brownfield(store: Store, scenario: Scenario) -> None:
    deals = store.seed.brownfield
    if not deals:
        return
    publish = store.publish

    def silent(event: dict[str, Any]) -> None:
        """History is not news: nothing is published while it is loaded."""

    store.publish = silent
    try:
        for deal in deals:
            if deal.kind == "from_quote":
                scenario.order_from_quote(deal.opportunity_id)
            elif deal.kind == "by_hand":
                customer = scenario.create_customer(deal.account_id)
                link: dict[str, Any] = {wire.ORDER_OPPORTUNITY_FIELD: deal.opportunity_id}
                scenario.order_for(deal.opportunity_id, customer["id"], description="Entered by hand", **link)
            elif deal.kind == "order_id_on_opportunity":
                customer = scenario.create_customer(deal.account_id)
                scenario.order_for(deal.opportunity_id, customer["id"], order_id=deal.order_id,
                                   description="Imported by an earlier tool")
        credit_memos.seed(store)
    finally:
        store.publish = publish
