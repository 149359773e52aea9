from __future__ import annotations

import importlib
import pkgutil

from revdaemon import flows
from revdaemon.flows import registry, sources
from revdaemon.flows.base import Found, Needs, takes, why_not_taken
from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
from revdaemon.flows.renewals import RenewalFlow
from revdaemon.flows.subscription_status import SubscriptionStatusFlow


class TestNeedsMinus:
    def test_a_record_read_without_a_field_now_asked_for_is_read_again(self) -> None:
        """A later round asking for more fields of an object re-reads it, not the narrower earlier copy."""
        found = Found(sf_records={("Opportunity", "006A"): {"Id": "006A", "Name": "x"}},
                      sf_selected={"Opportunity": frozenset({"Id", "Name"})})
        asked = Needs(sf_records=frozenset({("Opportunity", "006A")}),
                      sf_fields=frozenset({("Opportunity", "Name"), ("Opportunity", "Nue_Quote_Version__c")}))
        assert asked.minus(found).sf_records == {("Opportunity", "006A")}

    def test_a_record_read_with_every_field_is_not_read_again(self) -> None:
        """When the earlier read selected every field asked for, nothing is fetched twice."""
        found = Found(sf_records={("Opportunity", "006A"): {"Id": "006A"}},
                      sf_selected={"Opportunity": frozenset({"Id", "Name"})})
        asked = Needs(sf_records=frozenset({("Opportunity", "006A")}),
                      sf_fields=frozenset({("Opportunity", "Name")}))
        assert not asked.minus(found)


class TestTakes:
    def test_a_flow_takes_its_types_from_its_sources_only(self) -> None:
        """The type alone is not enough: the source must be one the flow lists."""
        flow = RenewalFlow()
        assert takes(flow, "renewal.due", sources.SCHEDULE)
        assert not takes(flow, "renewal.due", sources.NUE_WEBHOOK)
        assert not takes(flow, "order.activated", sources.SCHEDULE)

    def test_no_flow_takes_an_internal_type_from_a_webhook(self) -> None:
        """Renewals are the scan's to decide and won deals Salesforce's: never a Nue webhook's."""
        flows = [RenewalFlow(), ClosedWonToOrderFlow(), SubscriptionStatusFlow()]
        for event_type in ("renewal.due", "opportunity.closed_won"):
            assert not any(takes(f, event_type, sources.NUE_WEBHOOK) for f in flows), event_type
        assert any(takes(f, "opportunity.closed_won", sources.SALESFORCE_SWEEP) for f in flows)

    def test_why_not_taken_names_the_flow_and_its_sources(self) -> None:
        """The log line of an ignored event says which flow would have taken it, and from where."""
        flows = [RenewalFlow(), SubscriptionStatusFlow()]
        assert why_not_taken(flows, "widget.exploded", sources.NUE_WEBHOOK) == "no flow handles this type"
        assert why_not_taken(flows, "renewal.due", sources.NUE_WEBHOOK) == \
            "renewals take renewal.due only from schedule, not from nue_webhook"


class TestRegistry:
    def test_every_flow_module_is_registered(self) -> None:
        """A flow module (one with EVENT_TYPES) left out of the registry would leave its types unguarded."""
        modules = [importlib.import_module(f"revdaemon.flows.{m.name}") for m in pkgutil.iter_modules(flows.__path__)]
        declared = {m.NAME for m in modules if hasattr(m, "EVENT_TYPES")}
        assert declared == {flow.name for flow in registry.FLOWS}

    def test_sources_are_named_ones(self) -> None:
        """Every source a flow lists is one flows/sources.py names (a typo would trust nothing)."""
        named = {value for name, value in vars(sources).items() if name.isupper() and isinstance(value, str)}
        assert all(flow.sources <= named for flow in registry.FLOWS)

    def test_internal_types_are_those_no_flow_takes_from_a_webhook(self) -> None:
        """Derived from the flows: the renewal scan's type and Salesforce's won deal."""
        assert {"renewal.due", "opportunity.closed_won"} == registry.INTERNAL_TYPES
        assert registry.types_from(sources.NUE_POLL) == registry.WEBHOOK_TYPES
        assert not registry.WEBHOOK_TYPES & registry.INTERNAL_TYPES


def test_union_of_many_needs_is_their_pairwise_or() -> None:
    from functools import reduce

    from revdaemon.flows.base import Needs

    parts = [Needs(nue_customers=frozenset({"a"}), sf_fields=frozenset({("Account", "Name")})),
             Needs(sf_records=frozenset({("Account", "001")}), catalog=True),
             Needs(nue_customers=frozenset({"b"}), go_live=True, id_links=frozenset({("account", "n1")})),
             Needs()]
    assert Needs.union(parts) == reduce(lambda a, b: a | b, parts)
    assert Needs.union([]) == Needs() and Needs.union(parts[:1]) == parts[0]
