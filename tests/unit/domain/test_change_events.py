"""Change events read and judged (domain/change_events.py): bitmaps, hints, keys. Pure: no I/O, no mocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from revdaemon.domain.change_events import (
    ChangeType,
    OwnCreates,
    UnreadableEvent,
    decode_bitmaps,
    react,
    read_change_event,
)

OPPORTUNITY_ID = "006xx000004TmiQAAS"
# The shape Salesforce documents: the header first, then the object's fields, each optional.
SCHEMA: dict[str, Any] = {
    "type": "record", "name": "OpportunityChangeEvent", "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": {"type": "record", "name": "ChangeEventHeader", "fields": []}},
        {"name": "Name", "type": ["null", "string"], "default": None},
        {"name": "StageName", "type": ["null", "string"], "default": None},
        {"name": "IsWon", "type": ["null", "boolean"], "default": None},
        {"name": "Amount", "type": ["null", "double"], "default": None},
        {"name": "BillingAddress", "type": ["null", {"type": "record", "name": "Address", "fields": [
            {"name": "Street", "type": ["null", "string"], "default": None},
            {"name": "City", "type": ["null", "string"], "default": None},
            {"name": "Country", "type": ["null", "string"], "default": None}]}], "default": None},
        {"name": "LastModifiedDate", "type": ["null", "long"], "default": None},
        {"name": "Nue_Order_Id__c", "type": ["null", "string"], "default": None},
        {"name": "Nue_Amendment_Key__c", "type": ["null", "string"], "default": None},
    ]}
COMMITTED_MS = 1_796_577_026_123  # 2026-12-06T17:10:26.123Z


def event(change_type: str = "UPDATE", changed: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    header = {"entityName": "Opportunity", "recordIds": [OPPORTUNITY_ID], "changeType": change_type,
              "changeOrigin": "com/salesforce/api/rest/62.0", "transactionKey": "tx-1", "sequenceNumber": 1,
              "commitTimestamp": COMMITTED_MS, "commitNumber": 11, "commitUser": "005xx0000012345AAA",
              "nulledFields": [], "diffFields": [], "changedFields": changed or []}
    return {"ChangeEventHeader": header, **{f["name"]: None for f in SCHEMA["fields"][1:]}, **fields}


class TestBitmaps:
    def test_a_top_level_bitmap_names_the_schemas_fields_by_position(self) -> None:
        # bits 2 (StageName), 3 (IsWon) and 6 (LastModifiedDate): 0b1001100 = 0x4C
        assert decode_bitmaps(["0x4C"], SCHEMA) == ("StageName", "IsWon", "LastModifiedDate")

    def test_a_compound_fields_bitmap_names_its_parts(self) -> None:
        # "5-0x05": fields 0 and 2 of the compound field at position 5
        assert decode_bitmaps(["0x20", "5-0x05"], SCHEMA) == ("BillingAddress", "BillingAddress.Street",
                                                               "BillingAddress.Country")

    def test_names_are_kept_and_bits_past_the_schema_ignored(self) -> None:
        assert decode_bitmaps(["StageName"], SCHEMA) == ("StageName",)
        assert decode_bitmaps(["0xC00"], SCHEMA) == ()  # bits 10 and 11: a newer schema's fields


class TestReading:
    def test_the_header_and_the_fields_carried(self) -> None:
        read = read_change_event(event(changed=["0x4C"], StageName="Closed Won", IsWon=True,
                                       LastModifiedDate=COMMITTED_MS - 123), SCHEMA, b"\x00\x07")
        assert read.change_type is ChangeType.UPDATE
        assert read.record_ids == (OPPORTUNITY_ID,)
        assert read.committed_at == datetime(2026, 12, 6, 17, 10, 26, 123000, tzinfo=UTC)
        assert read.changed_fields == ("StageName", "IsWon", "LastModifiedDate")
        assert dict(read.fields) == {"StageName": "Closed Won", "IsWon": True, "LastModifiedDate": COMMITTED_MS - 123}
        assert read.replay_id == b"\x00\x07"

    def test_no_header_is_refused(self) -> None:
        with pytest.raises(UnreadableEvent):
            read_change_event({"Name": "x"}, SCHEMA)
        with pytest.raises(UnreadableEvent):
            read_change_event(event(change_type="SNAPSHOT_OF_SOMETHING"), SCHEMA)


class TestReacting:
    def test_a_stage_change_is_a_closed_won_hint_keyed_as_the_poll_keys_it(self) -> None:
        reaction = react(read_change_event(event(changed=["0x4C"], StageName="Closed Won", IsWon=True,
                                                 LastModifiedDate=COMMITTED_MS - 123), SCHEMA, b"\x01"))
        [hint] = reaction.hints
        assert hint.event_type == "opportunity.closed_won"
        # the poll's key of the same change: sf:Opportunity:<Id>:<SystemModstamp as REST writes it>
        assert hint.key == f"sf:Opportunity:{OPPORTUNITY_ID}:2026-12-06T17:10:26.000+0000"
        assert hint.payload["data"] == {"Id": OPPORTUNITY_ID, "StageName": "Closed Won", "IsWon": True}
        assert hint.payload["change"]["changeType"] == "UPDATE"
        assert hint.payload["change"]["replayId"] == "01"

    def test_a_decoded_timestamp_keys_as_its_milliseconds_do(self) -> None:
        """fastavro turns a `timestamp-millis` long into a datetime: the key is the same either way."""
        millis = react(read_change_event(event(changed=["0x04"], StageName="Closed Won",
                                               LastModifiedDate=COMMITTED_MS), SCHEMA))
        decoded = react(read_change_event(event(changed=["0x04"], StageName="Closed Won",
                                                LastModifiedDate=datetime(2026, 12, 6, 17, 10, 26, 123000,
                                                                          tzinfo=UTC)), SCHEMA))
        assert millis.hints[0].key == decoded.hints[0].key == \
            f"sf:Opportunity:{OPPORTUNITY_ID}:2026-12-06T17:10:26.123+0000"

    def test_changes_of_other_fields_wake_nothing(self) -> None:
        """revdaemon's own write-back of the order id (and any edit that leaves the stage) is not a hint."""
        reaction = react(read_change_event(event(changed=["0x140"], Nue_Order_Id__c="o-1",
                                                 LastModifiedDate=COMMITTED_MS), SCHEMA))
        assert reaction.hints == () and reaction.poll is None
        assert "none of the watched fields" in reaction.why

    @pytest.mark.parametrize("change_type", ["CREATE", "UNDELETE"])
    def test_a_record_made_or_restored_is_a_hint(self, change_type: str) -> None:
        reaction = react(read_change_event(event(change_type=change_type, StageName="Prospecting",
                                                 LastModifiedDate=COMMITTED_MS), SCHEMA))
        assert [h.record_id for h in reaction.hints] == [OPPORTUNITY_ID]

    def test_revdaemons_own_create_is_no_hint_but_anyone_elses_is(self) -> None:
        """flow 5's amendment opportunity, created Closed Won by revdaemon's user with its key: no deal to order.
        The same create by another user (a shared integration user's tool may set any field), one by revdaemon's
        user without a key of its own, and revdaemon's user moving the stage later are each a hint."""
        own = OwnCreates(user="005xx0000012345", markers=frozenset({"Nue_Amendment_Key__c"}))
        made = event(change_type="CREATE", StageName="Closed Won", IsWon=True, Nue_Amendment_Key__c="o-9",
                     LastModifiedDate=COMMITTED_MS)
        reaction = react(read_change_event(made, SCHEMA), own)
        assert reaction.hints == () and "own create" in reaction.why
        assert react(read_change_event(made, SCHEMA)).hints  # the user not known yet: a hint, as before
        other = {**made, "ChangeEventHeader": {**made["ChangeEventHeader"], "commitUser": "005xx0000099999AAA"}}
        assert react(read_change_event(other, SCHEMA), own).hints
        unkeyed = event(change_type="CREATE", StageName="Closed Won", IsWon=True, LastModifiedDate=COMMITTED_MS)
        assert react(read_change_event(unkeyed, SCHEMA), own).hints
        moved = event(changed=["0x0C"], StageName="Closed Won", IsWon=True, Nue_Amendment_Key__c="o-9",
                      LastModifiedDate=COMMITTED_MS)
        assert react(read_change_event(moved, SCHEMA), own).hints

    def test_deletes_are_nothing_to_sync(self) -> None:
        for change_type in ("DELETE", "GAP_DELETE"):
            assert react(read_change_event(event(change_type=change_type), SCHEMA)).hints == ()

    def test_a_gap_event_names_records_to_re_read_keyed_by_its_transaction(self) -> None:
        """A gap carries ids and no fields: each record is re-read; its key cannot be the poll's (no time)."""
        raw = event(change_type="GAP_UPDATE")
        raw["ChangeEventHeader"]["recordIds"] = [OPPORTUNITY_ID, "006xx000004TmiRAAS"]
        reaction = react(read_change_event(raw, SCHEMA))
        assert [h.key for h in reaction.hints] == [f"sf:Opportunity:{OPPORTUNITY_ID}:cdc:tx-1:1",
                                                   "sf:Opportunity:006xx000004TmiRAAS:cdc:tx-1:1"]

    def test_an_overflow_polls_the_object(self) -> None:
        raw = event(change_type="GAP_OVERFLOW")
        raw["ChangeEventHeader"]["recordIds"] = []
        assert react(read_change_event(raw, SCHEMA)).poll == "Opportunity"

    def test_objects_not_watched_are_left_alone(self) -> None:
        raw = event(change_type="CREATE")
        raw["ChangeEventHeader"]["entityName"] = "Account"
        reaction = react(read_change_event(raw, SCHEMA))
        assert reaction.hints == () and "Account is not watched" in reaction.why
