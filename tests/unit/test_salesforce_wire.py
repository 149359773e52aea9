"""Pure request building and response reading, on bodies quoted in ../shared/design/salesforce-api.md."""

from __future__ import annotations

import pytest

from revdaemon.connectors import salesforce_wire as wire
from revdaemon.errors import (
    AuthExpired,
    Conflict,
    Permanent,
    RequestLimitExceeded,
    Retryable,
    SyncError,
    Throttled,
)


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "body", "expected", "code"),
        [
            (401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], AuthExpired,
             "INVALID_SESSION_ID"),
            (403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
             RequestLimitExceeded, "REQUEST_LIMIT_EXCEEDED"),
            (400, [{"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW"}],
             Retryable, "UNABLE_TO_LOCK_ROW"),
            (503, [{"message": "Server Unavailable", "errorCode": "SERVER_UNAVAILABLE"}], Retryable,
             "SERVER_UNAVAILABLE"),
            (502, "<html>Bad Gateway</html>", Retryable, None),
            (400, [{"message": "Required fields are missing: [Name]", "errorCode": "REQUIRED_FIELD_MISSING",
                    "fields": ["Name"]}], Permanent, "REQUIRED_FIELD_MISSING"),
            (400, [{"message": "No such column 'X' on entity 'Opportunity'.", "errorCode": "INVALID_FIELD"}],
             Permanent, "INVALID_FIELD"),
            (400, [{"message": "duplicate value found: Ext__c duplicates value on record with id: 001000000000001",
                    "errorCode": "DUPLICATE_VALUE"}], Permanent, "DUPLICATE_VALUE"),
            (400, [{"message": "Close date must be in the future", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "fields": []}], Permanent, "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
            (404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], Permanent,
             "NOT_FOUND"),
            (404, {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}, Permanent,
             "NOT_FOUND"),
            (300, ["/services/data/v62.0/sobjects/Account/001A"], Conflict, None),
            (429, None, Throttled, None),
        ],
    )
    def test_status_and_code_pick_the_family(self, status: int, body: object, expected: type[SyncError],
                                             code: str | None) -> None:
        """Each documented error body lands in the family that says what to do next."""
        error = wire.classify(status, body, operation="op")
        assert type(error) is expected
        assert error.context.error_code == code and error.context.status == status

    def test_the_api_message_is_kept(self) -> None:
        """The dead letter shows Salesforce's own words and the fields it named."""
        error = wire.classify(400, [{"message": "Required fields are missing: [Name]",
                                     "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Name"]}], operation="op")
        assert error.message == "REQUIRED_FIELD_MISSING: Required fields are missing: [Name]"
        assert error.items[0].fields == ("Name",)

    def test_limit_exceeded_has_a_pause(self) -> None:
        """Without Retry-After the daily limit still pauses for a fixed time."""
        error = wire.classify(403, [{"message": "x", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], operation="op")
        assert isinstance(error, Throttled) and error.retry_after == wire.LIMIT_EXCEEDED_PAUSE_SECONDS

    def test_the_concurrent_limit_is_no_daily_pause(self) -> None:
        """§3.4: "ConcurrentRequests ... Limit exceeded" shares the code but clears within a second."""
        error = wire.classify(403, [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                                     "errorCode": "REQUEST_LIMIT_EXCEEDED"}], operation="op")
        assert isinstance(error, Throttled) and not isinstance(error, RequestLimitExceeded)
        assert error.retry_after == wire.CONCURRENT_RETRY_SECONDS


class TestLimitInfo:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("api-usage=10018/100000", (10018, 100000)),
            ("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)", (25, 5000)),
            ("per-app-api-usage=17/250(appName=x)", None),
            ("", None),
            (None, None),
        ],
    )
    def test_parse(self, header: str | None, expected: tuple[int, int] | None) -> None:
        """§3.2: the org-wide usage is read; the per-app figure alone is not mistaken for it."""
        assert wire.parse_limit_info(header) == expected


class TestBuilding:
    def test_collections_refuse_more_than_200(self) -> None:
        """§2.3: a chunk over the maximum is a programming error caught before sending."""
        with pytest.raises(ValueError, match="1 to 200"):
            wire.collection_create_request("62.0", "Account", [{"Name": "x"}] * 201)

    def test_chunked(self) -> None:
        """Chunks cover every item once, 200 at a time."""
        assert [len(c) for c in wire.chunked(list(range(401)))] == [200, 200, 1]

    def test_query_batch_size_is_clamped(self) -> None:
        """§2.1: batchSize stays within 200..2000."""
        assert wire.query_request("62.0", "q", batch_size=50).headers["Sforce-Query-Options"] == "batchSize=200"

    def test_next_page_must_be_a_data_path(self) -> None:
        """A nextRecordsUrl pointing elsewhere is refused rather than followed."""
        with pytest.raises(ValueError):
            wire.next_page_request("https://evil.example/x")

    def test_collection_results_must_match_inputs(self) -> None:
        """An answer with the wrong number of results cannot be mapped back and is refused."""
        with pytest.raises(ValueError):
            wire.parse_collection_results([{"success": True}], 2)


class TestIdentity:
    def test_the_token_names_its_user(self) -> None:
        """The token response's `id` URL ends in /<orgId>/<userId> (§1.4): that user is revdaemon's own."""
        token = wire.parse_token({"access_token": "t", "instance_url": "https://x.my.salesforce.com/",
                                  "id": "https://login.salesforce.com/id/00Dxx0000001gPL/005xx000001Sv6A"})
        assert token.user_id == "005xx000001Sv6A"
        assert token.org_id == "00Dxx0000001gPL"  # the Pub/Sub API's tenantid

    def test_an_identity_of_another_shape_names_nobody(self) -> None:
        """No `id`, or one that does not end in a user id, leaves the user unknown (no echo is recognised)."""
        assert wire.parse_token({"access_token": "t", "instance_url": "https://x"}).user_id is None
        assert wire.user_of_identity("https://login.salesforce.com/services/oauth2/userinfo") is None
        assert wire.org_of_identity("https://login.salesforce.com/services/oauth2/userinfo") is None
