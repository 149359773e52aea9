"""How-to-fix hints, read from the errors as Salesforce and Nue word them (salesforce-api.md §2.2, §7.2)."""

from __future__ import annotations

from revdaemon.domain.fix_hints import Refusal, fix_hint, letter_hint


def sf(code: str, message: str, fields: tuple[str, ...] = (), sobject: str | None = "Account",
       sent: dict[str, object] | None = None) -> str | None:
    return fix_hint(Refusal(system="salesforce", code=code, status=400, message=message, fields=fields,
                            sobject=sobject, sent=sent or {}))


class TestSalesforceHints:
    def test_restricted_picklist_names_the_value_and_the_field(self) -> None:
        """The value comes from what was sent, the field from the error, and the way there in Setup."""
        hint = sf("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Status: bad value for restricted picklist field: Overdue",
                  ("Status__c",), "Nue_Billing_Event__c", {"Status__c": "Overdue", "Name": "x"})
        assert hint is not None
        assert hint.startswith("Add the value 'Overdue' to the restricted picklist Nue_Billing_Event__c.Status__c ")
        assert "Setup > Object Manager > Nue_Billing_Event__c > Fields & Relationships > Status__c > Values" in hint
        assert "replay" in hint

    def test_restricted_picklist_value_from_the_message_when_the_send_was_not_kept(self) -> None:
        """An older letter without the sent record still names the value, read from the error's message."""
        hint = sf("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Status: bad value for restricted picklist field: Late",
                  ("Status__c",), None)
        assert hint is not None and "'Late'" in hint and "the object.Status__c" in hint

    def test_invalid_field_is_field_level_security_or_a_missing_field(self) -> None:
        """The field and object come from the message; the fix names the permission set and the setup command."""
        hint = sf("INVALID_FIELD", "No such column 'MRR__c' on sobject of type Account")
        assert hint is not None and "Account.MRR__c" in hint
        assert "revdaemon_integration" in hint and "revdaemon setup salesforce --apply" in hint

    def test_read_only_field_asks_for_edit(self) -> None:
        """A field the user may read but not edit: grant Edit in the permission set."""
        hint = sf("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: MRR__c. Please check the "
                  "security settings of this field and verify that it is read/write for your profile or permission "
                  "set.", ("MRR__c",))
        assert hint is not None and hint.startswith("The integration user may read but not edit MRR__c on Account")
        assert "Edit" in hint and "revdaemon setup salesforce --apply" in hint

    def test_required_field_says_whether_it_was_sent_empty(self) -> None:
        """A required field sent as null reads differently from one not sent at all."""
        empty = sf("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ("Name",), sent={"Name": None})
        absent = sf("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ("Name",), sent={})
        assert empty is not None and empty.startswith("Account requires Name and revdaemon sent it empty")
        assert absent is not None and "did not send it" in absent

    def test_validation_rule(self) -> None:
        """A validation rule: where the rules live for that object."""
        hint = sf("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Close date must be in the future", sobject="Opportunity")
        assert hint is not None and "Setup > Object Manager > Opportunity > Validation Rules" in hint

    def test_duplicate_rule(self) -> None:
        """A duplicate rule: Duplicate Management in Setup."""
        hint = sf("DUPLICATES_DETECTED", "Use one of these records?")
        assert hint is not None and "Duplicate Rules" in hint

    def test_duplicate_value_names_the_other_record_or_says_nothing(self) -> None:
        """A unique field's clash names the record holding the value; the wording without names gets no hint."""
        hint = sf("DUPLICATE_VALUE",
                  "duplicate value found: Nue_Id__c duplicates value on record with id: 001000000000001")
        assert hint is not None and "001000000000001" in hint and "Nue_Id__c" in hint
        assert sf("DUPLICATE_VALUE", "duplicate value found: <unknown> duplicates value on record with id: "
                  "<unknown>") is None

    def test_locked_row_replay_later(self) -> None:
        """A lock held through every retry: replay later."""
        hint = sf("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
        assert hint is not None and "replay later" in hint

    def test_deleted_record(self) -> None:
        """A deleted target: the Recycle Bin."""
        hint = sf("ENTITY_IS_DELETED", "entity is deleted", sobject="Opportunity")
        assert hint is not None and "Opportunity record" in hint and "Recycle Bin" in hint

    def test_insufficient_access_of_both_kinds(self) -> None:
        """No access to the object itself, and no access to a record it refers to, read differently."""
        own = sf("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id")
        cross = sf("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", "insufficient access rights on cross-reference id")
        assert own is not None and "Create and Edit on Account" in own
        assert cross is not None and "refers to" in cross and cross != own

    def test_string_too_long_names_the_limit(self) -> None:
        """The field's maximum, read from the message."""
        hint = sf("STRING_TOO_LONG", "Name: data value too large: aaaaaaaaaaaaaaaaaaaa... (max length=80)", ("Name",))
        assert hint is not None and "Account.Name" in hint and "at most 80 characters" in hint

    def test_unknown_errors_get_no_hint(self) -> None:
        """An error this module does not know gets None, never a guess."""
        assert sf("MALFORMED_QUERY", "unexpected token: FORM") is None
        assert sf("", "HTTP 500") is None
        assert fix_hint(Refusal(system="revdaemon", code="X", status=None, message="crash")) is None


class TestNueHints:
    def test_validation_statuses(self) -> None:
        """Nue's 400 and 422 are validation errors: fix the source record or the mapping."""
        for status in (400, 422):
            hint = fix_hint(Refusal(system="nue", code="UNPROCESSABLE_ENTITY", status=status,
                                    message="products.0: no product with that productSku", sobject="Order"))
            assert hint is not None and hint.startswith("Nue refused the Order as invalid") and "--remap" in hint

    def test_other_statuses_get_no_hint(self) -> None:
        """A 404 or 409 from Nue is not a validation error: no hint."""
        assert fix_hint(Refusal(system="nue", code="NOT_FOUND", status=404, message="no such order")) is None
        assert fix_hint(Refusal(system="nue", code="CONFLICT", status=409, message="already active")) is None


class TestLetterHint:
    def test_from_a_letters_items_and_sent_record(self) -> None:
        """A letter's items each get their hint (once each), with the object from the sent write's target."""
        request = {"sent": {"kind": "SfUpsert", "target": "salesforce:Nue_Billing_Event__c:Nue_Event_Key__c=INV-1",
                            "fields": {"Status__c": "Overdue"}},
                   "items": [{"code": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              "message": "Status: bad value for restricted picklist field: Overdue",
                              "fields": ["Status__c"]}] * 2}
        hint = letter_hint("salesforce", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", 400,
                           "Status: bad value for restricted picklist field: Overdue", request)
        assert hint is not None and hint.count("Add the value 'Overdue'") == 1
        assert "Nue_Billing_Event__c.Status__c" in hint

    def test_an_old_letter_without_request(self) -> None:
        """A letter with no request still gets a hint from its code, the object from its record reference."""
        hint = letter_hint("salesforce", "FIELD_CUSTOM_VALIDATION_EXCEPTION", 400, "Amount must be positive", {},
                           "salesforce:Opportunity:006000000000001AAA")
        assert hint is not None and "Opportunity > Validation Rules" in hint
        assert letter_hint("revdaemon", None, None, "flow crashed", None) is None
