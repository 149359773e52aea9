"""Salesforce error bodies: always a JSON list of {message, errorCode, fields}, salesforce-api.md §2 "General"."""

from __future__ import annotations

from typing import Any

NOT_FOUND_MESSAGE = "The requested resource does not exist"  # §2.2
SESSION_INVALID = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]  # §1.6
LIMIT_EXCEEDED_MESSAGE = "TotalRequests Limit exceeded."  # §3.4
ROLLED_BACK_MESSAGE = ("Record rolled back because not all records were valid and the request was using "
                       "AllOrNone header")  # §2.3
PROCESSING_HALTED_MESSAGE = ("The transaction was rolled back since another operation in the same transaction "
                             "failed.")  # §2.4


class SfError(Exception):
    """A REST error answer: HTTP status plus one error entry."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return entry

    def body(self) -> list[dict[str, Any]]:
        return [self.entry()]

    def collection_entry(self) -> dict[str, Any]:
        """Inside sObject Collections results the key is `statusCode`, not `errorCode` (§2.3)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or []}


def not_found(message: str = NOT_FOUND_MESSAGE) -> SfError:
    return SfError(404, "NOT_FOUND", message)


def bad_request(code: str, message: str, fields: list[str] | None = None) -> SfError:
    return SfError(400, code, message, fields)
