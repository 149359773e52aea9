"""The shadow report from kept entries: pure."""

from __future__ import annotations

from revdaemon.domain.shadow_report import ShadowLine, action_of, build_report, object_of


def test_counts_per_flow_and_object_and_what_needs_a_look() -> None:
    lines = [
        ShadowLine(event_key="e1", flow="closed_won_to_order", outcome="write", system="nue",
                   action="create (unless found)", target="Customer for account 001", flags=("look-alike",)),
        ShadowLine(event_key="e1", flow="closed_won_to_order", outcome="write", system="nue", action="activate",
                   target="Order shadow:o"),
        ShadowLine(event_key="e1", flow="closed_won_to_order", outcome="nothing"),  # a later step's: not counted
        ShadowLine(event_key="e2", flow="billing_events", outcome="write", system="salesforce", action="create",
                   target="Ev__c Key__c=k", warnings=("Status__c lacks Overdue",)),
        ShadowLine(event_key="e3", flow="quote_sync", outcome="conflict", note="edited by a person"),
        ShadowLine(event_key="e4", flow="amendments", outcome="nothing", note="already shown"),
        ShadowLine(event_key="e5", flow="amendments", outcome="error", note="KeyError"),
    ]
    report = build_report(lines).as_dict()
    assert report["events"] == 5 and report["writes"] == 3
    assert report["counts"] == [
        {"flow": "billing_events", "system": "salesforce", "object": "Ev__c", "create": 1, "update": 0,
         "activate": 0, "delete": 0},
        {"flow": "closed_won_to_order", "system": "nue", "object": "Customer", "create": 1, "update": 0,
         "activate": 0, "delete": 0},
        {"flow": "closed_won_to_order", "system": "nue", "object": "Order", "create": 0, "update": 0,
         "activate": 1, "delete": 0}]
    assert report["left_alone"] == {"amendments": 1}
    assert report["conflicts"] == [{"event_key": "e3", "flow": "quote_sync", "reason": "edited by a person"}]
    assert [d["why"] for d in report["dead_letters"]] == ["Status__c lacks Overdue", "KeyError"]
    assert report["flags"] == [{"event_key": "e1", "flow": "closed_won_to_order", "system": "nue",
                                "target": "Customer for account 001", "flag": "look-alike"}]


def test_names() -> None:
    assert object_of("Order for opportunity 006") == "Order" and object_of(None) == "?"
    assert action_of("create (unless one matches)") == "create"
