from __future__ import annotations

from revdaemon.flows import sources
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
