from __future__ import annotations

from decimal import Decimal

import pytest

from revdaemon.mapping.fields import FieldSpec, MappingError, parse_spec, render

SOURCE = {"customer": {"billingCity": "Chicago", "tier": "gold"}, "status": "Active", "mrr": Decimal("1400.004"),
          "next_renewal": "2027-11-26T00:00:00Z", "discount": "12.5"}
LOOKUPS = {"tiers": {"gold": "Gold", "silver": "Silver"}}


class TestParse:
    @pytest.mark.parametrize(("text", "spec"), [
        ("path:customer.billingCity", FieldSpec(kind="path", path="customer.billingCity")),
        ("const:Self-serve", FieldSpec(kind="const", constant="Self-serve")),
        ("lookup:tiers:customer.tier", FieldSpec(kind="lookup", table="tiers", path="customer.tier")),
        ("money:mrr", FieldSpec(kind="money", path="mrr")),
    ])
    def test_valid_specs(self, text: str, spec: FieldSpec) -> None:
        """Each spec kind parses into its parts."""
        assert parse_spec(text) == spec

    @pytest.mark.parametrize("text", ["customer.billingCity", "path:", "path:a..b", "lookup:tiers", "nope:x"])
    def test_invalid_specs_say_why(self, text: str) -> None:
        """A malformed spec is refused with a reason."""
        with pytest.raises(ValueError):
            parse_spec(text)


class TestRender:
    def test_each_kind(self) -> None:
        """Paths, constants, lookups and transforms give the values the flow writes."""
        specs = {name: parse_spec(text) for name, text in {
            "City__c": "path:customer.billingCity", "Source__c": "const:revdaemon",
            "Tier__c": "lookup:tiers:customer.tier", "Mrr_Copy__c": "money:mrr",
            "Renewal__c": "date:next_renewal", "Disc__c": "percent:discount", "Missing__c": "path:customer.nope",
        }.items()}
        assert render(specs, SOURCE, LOOKUPS) == {
            "City__c": "Chicago", "Source__c": "revdaemon", "Tier__c": "Gold", "Mrr_Copy__c": Decimal("1400.00"),
            "Renewal__c": "2027-11-26", "Disc__c": Decimal("12.5"), "Missing__c": None,
        }

    def test_a_value_missing_from_its_lookup_names_the_field(self) -> None:
        """A value the table lacks is an error naming the field and the spec, not a silent blank."""
        with pytest.raises(MappingError, match=r"Tier__c <- lookup:tiers:customer\.tier"):
            render({"Tier__c": parse_spec("lookup:tiers:customer.tier")},
                   {"customer": {"tier": "bronze"}}, LOOKUPS)
