from __future__ import annotations

from revdaemon.flows.base import Found, Needs


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
