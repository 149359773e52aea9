"""A write's fields against describe: what Salesforce would refuse, found before anything is sent."""

from __future__ import annotations

from typing import Any

from revdaemon.domain.describe_check import WriteProblem, check_write


def field(name: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "createable": True, "updateable": True, "length": 255, **extra}


STATUS = field("Status__c", "picklist", restrictedPicklist=True, picklistValues=[
    {"value": "Posted", "active": True}, {"value": "Paid", "active": True}, {"value": "Old", "active": False}])
EVENT = {"Name": field("Name", length=80), "Status__c": STATUS,
         "Created_Only__c": field("Created_Only__c", updateable=False),
         "Formula__c": field("Formula__c", "currency", createable=False, updateable=False),
         "Loose__c": field("Loose__c", "picklist", restrictedPicklist=False, picklistValues=[{"value": "A"}]),
         "Tags__c": field("Tags__c", "multipicklist", restrictedPicklist=True,
                          picklistValues=[{"value": "a"}, {"value": "b"}])}


def codes(problems: tuple[WriteProblem, ...]) -> list[tuple[str | None, str]]:
    return [(p.field, p.code) for p in problems]


class TestCheckWrite:
    def test_a_write_describe_allows_has_no_problem(self) -> None:
        """Visible, writable fields with values the field takes: nothing to warn about."""
        assert check_write("Ev__c", {"Name": "x", "Status__c": "Paid", "Loose__c": "anything", "Tags__c": "a;b",
                                     "Created_Only__c": "y"}, EVENT, creates=True, updates=False) == ()

    def test_restricted_picklist_lacking_the_value(self) -> None:
        """A value outside the set, or only inactive there, is refused; matching is exact; null clears."""
        problems = check_write("Ev__c", {"Status__c": "Overdue"}, EVENT, creates=True, updates=True)
        assert codes(problems) == [("Status__c", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")]
        assert "'Overdue'" in problems[0].message and "Ev__c.Status__c" in str(problems[0])
        assert check_write("Ev__c", {"Status__c": "Old"}, EVENT, creates=True, updates=True) != ()
        assert check_write("Ev__c", {"Status__c": "paid"}, EVENT, creates=True, updates=True) != ()
        assert check_write("Ev__c", {"Status__c": None}, EVENT, creates=True, updates=True) == ()
        assert codes(check_write("Ev__c", {"Tags__c": "a;c"}, EVENT, creates=True, updates=True)) == [
            ("Tags__c", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")]

    def test_missing_or_hidden_field(self) -> None:
        """A field not in describe (absent, or hidden by field-level security) is INVALID_FIELD; names match
        whatever their case."""
        assert codes(check_write("Ev__c", {"MRR__c": 1, "name": "x"}, EVENT, creates=True, updates=True)) == [
            ("MRR__c", "INVALID_FIELD")]

    def test_not_createable_or_not_updateable(self) -> None:
        """A create-only field is refused to an update, not to a create; an upsert may do either, so both count."""
        assert check_write("Ev__c", {"Created_Only__c": "y"}, EVENT, creates=True, updates=False) == ()
        [update] = check_write("Ev__c", {"Created_Only__c": "y"}, EVENT, creates=False, updates=True)
        assert update.code == "INVALID_FIELD_FOR_INSERT_UPDATE" and "may not update" in update.message
        [either] = check_write("Ev__c", {"Formula__c": 1}, EVENT, creates=True, updates=True)
        assert "may not create or update Ev__c.Formula__c" in either.message

    def test_text_too_long(self) -> None:
        """A text value past the field's length is STRING_TOO_LONG."""
        [problem] = check_write("Ev__c", {"Name": "x" * 81}, EVENT, creates=True, updates=True)
        assert problem.code == "STRING_TOO_LONG" and "81 characters" in problem.message and "at most 80" in \
            problem.message

    def test_an_object_the_user_cannot_see(self) -> None:
        """No describe for the object: one problem about the object itself."""
        assert codes(check_write("Ev__c", {"Name": "x"}, None, creates=True, updates=True)) == [
            (None, "INVALID_TYPE")]
