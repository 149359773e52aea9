"""Salesforce REST and OAuth on the wire: building requests and reading responses, with no I/O.

Every shape here is from ../shared/design/salesforce-api.md; section numbers are cited beside each.
`SalesforceClient` (salesforce.py) sends what these functions build and hands back what they parse.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import jwt

from revdaemon.errors import (
    ApiErrorItem,
    AuthExpired,
    AuthFailed,
    Conflict,
    ErrorContext,
    Permanent,
    RequestLimitExceeded,
    Retryable,
    SyncError,
    Throttled,
)

SYSTEM = "salesforce"
COLLECTION_MAX = 200  # §2.3: sObject Collections take at most 200 records
QUERY_BATCH_MIN, QUERY_BATCH_MAX = 200, 2000  # §2.1: Sforce-Query-Options batchSize bounds
JWT_LIFETIME_SECONDS = 180  # §1.2: exp about 3 minutes ahead
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# §1.4: Salesforce returns no expires_in; a daily allocation pause has no Retry-After either, so wait this long.
LIMIT_EXCEEDED_PAUSE_SECONDS = 15 * 60
# §3.4: the concurrent-request limit shares the REQUEST_LIMIT_EXCEEDED code but says "ConcurrentRequests" (or
# "ConcurrentPerOrgLongTxn" for Apex); it clears as soon as requests in flight finish, so wait about a second,
# never the daily pause.
CONCURRENT_LIMIT_MARKERS = ("ConcurrentRequests", "ConcurrentPerOrgLongTxn")
CONCURRENT_RETRY_SECONDS = 1.0

RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})  # §2.2, §3.4
SESSION_CODES = frozenset({"INVALID_SESSION_ID", "INVALID_AUTH_HEADER"})  # §1.6

_LIMIT_INFO = re.compile(r"(?:^|[^-])api-usage=(?P<used>\d+)/(?P<total>\d+)")  # §3.2, as simple-salesforce

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class WireRequest:
    """A request as a value: the client adds the host, the token and sends it."""

    method: str
    path: str  # absolute path on the instance (or login) host
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    form: Mapping[str, str] | None = field(default=None, repr=False)  # may hold a secret or an assertion
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Token:
    access_token: str = field(repr=False)
    instance_url: str
    issued_at: str | None = None
    # The user the token acts as: the identity URL `id` ends in /<orgId>/<userId> (§1.2, §1.4). revdaemon's
    # own writes carry it as LastModifiedById, which is how their echo is told apart from a person's edit.
    user_id: str | None = None
    org_id: str | None = None  # the same URL's org id: the Pub/Sub API's `tenantid` (§4.3)


@dataclass(frozen=True, kw_only=True)
class WriteResult:
    """One record's outcome inside a collections call (§2.3), in input order."""

    ok: bool
    id: str | None = None
    created: bool | None = None
    errors: tuple[ApiErrorItem, ...] = ()
    failure: SyncError | None = None  # the whole call failed: this record's fate is that error's

    @property
    def retryable(self) -> bool:
        return not self.ok and all(e.code in RETRYABLE_CODES for e in self.errors) and bool(self.errors)


@dataclass(frozen=True, kw_only=True)
class QueryPage:
    records: list[dict[str, Any]]
    total_size: int
    next_records_url: str | None


# --- building requests ------------------------------------------------------------------------------


SF_ID_LENGTHS = (15, 18)  # a Salesforce id, and the same id with its case-checksum suffix


def id_key(value: Any) -> str:
    """A Salesforce id as the org compares it: its first 15 characters, case-sensitive, so a 15-character id
    finds the 18-character one the API returns. Anything not shaped like an id is returned as its text."""
    text = str(value)
    return text[:15] if looks_like_id(text) else text


def looks_like_id(text: str) -> bool:
    return len(text) in SF_ID_LENGTHS and text.isalnum()


def same_id(value: Any, salesforce_id: Any) -> bool:
    """Whether two non-empty values name the same Salesforce id (15 or 18 characters)."""
    return bool(value) and bool(salesforce_id) and id_key(value) == id_key(salesforce_id)


# A REST call's URI and headers together may be 16,384 bytes; past it Salesforce answers 414 or 431 [doc]
# (salesforce-api.md §2.1). A query's `q` parameter, URL-encoded, is kept under this, leaving room for the path,
# the host and the session's headers; and an `Id IN` list under one page of results.
MAX_QUERY_PARAM_CHARS = 14_500
MAX_IN_VALUES = 2_000
# 18-character ids one IN list holds at least, for estimates (a SELECT of up to 1,000 encoded characters around it)
IDS_PER_IN_LIST = (MAX_QUERY_PARAM_CHARS - 1_000) // len(quote_plus("'001000000000000AAA', "))


def where_in_batches(select: str, lists: Sequence[tuple[str, Sequence[Any]]], *, tail: str = "",
                     limit: int = MAX_QUERY_PARAM_CHARS, max_values: int = MAX_IN_VALUES
                     ) -> Iterator[tuple[str, dict[str, list[Any]]]]:
    """Queries `<select> WHERE f1 IN (...) OR f2 IN (...) <tail>` asking for every value of `lists` (field,
    values) once, each under `limit` URL-encoded characters and `max_values` values; yields each query with the
    values it asks for, by field. Fewer, longer queries: each is one API call whatever its length, and one query
    may ask by several fields of the same object."""
    # URL-encoding works character by character: a query's encoded length is the sum of its parts'.
    fixed = len(quote_plus(f"{select} WHERE ")) + (len(quote_plus(f" {tail}")) if tail else 0)
    separator, either = len(quote_plus(", ")), len(quote_plus(" OR "))
    literals: dict[str, list[str]] = {}
    asked: dict[str, list[Any]] = {}
    length = count = 0

    def query() -> str:
        where = " OR ".join(f"{name} IN ({', '.join(values)})" for name, values in literals.items())
        return f"{select} WHERE {where}" + (f" {tail}" if tail else "")

    for name, values in lists:
        clause = len(quote_plus(f"{name} IN (")) + len(quote_plus(")"))
        for value in values:
            literal = soql_literal(value)
            size = len(quote_plus(literal))
            if fixed + clause + size > limit:
                raise ValueError(f"one IN value alone makes the query longer than {limit} characters encoded")
            grow = size + (separator if name in literals else clause + (either if literals else 0))
            if count and (fixed + length + grow > limit or count >= max_values):
                yield query(), asked
                literals, asked, length, count = {}, {}, 0, 0
                grow = size + clause
            literals.setdefault(name, []).append(literal)
            asked.setdefault(name, []).append(value)
            length += grow
            count += 1
    if count:
        yield query(), asked


def soql_literal(value: Any) -> str:
    """A value as a SOQL literal; strings quoted with backslash and quote escaped (SOQL's own rules)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def data_path(version: str, *parts: str) -> str:
    return "/".join([f"/services/data/v{version}", *parts])


def query_request(version: str, soql: str, *, include_deleted: bool = False, batch_size: int | None = None
                  ) -> WireRequest:
    headers = {}
    if batch_size is not None:
        size = min(max(batch_size, QUERY_BATCH_MIN), QUERY_BATCH_MAX)
        headers["Sforce-Query-Options"] = f"batchSize={size}"
    return WireRequest(method="GET", path=data_path(version, "queryAll" if include_deleted else "query"),
                       params={"q": soql}, headers=headers)


def next_page_request(next_records_url: str) -> WireRequest:
    if not next_records_url.startswith("/services/data/"):
        raise ValueError(f"nextRecordsUrl is not an absolute data path: {next_records_url!r}")
    return WireRequest(method="GET", path=next_records_url)


def get_request(version: str, sobject: str, record_id: str, fields: Sequence[str] = ()) -> WireRequest:
    params = {"fields": ",".join(fields)} if fields else {}
    return WireRequest(method="GET", path=data_path(version, "sobjects", sobject, record_id), params=params)


def create_request(version: str, sobject: str, values: Mapping[str, Any]) -> WireRequest:
    return WireRequest(method="POST", path=data_path(version, "sobjects", sobject), json=dict(values))


def update_request(version: str, sobject: str, record_id: str, values: Mapping[str, Any]) -> WireRequest:
    return WireRequest(method="PATCH", path=data_path(version, "sobjects", sobject, record_id), json=dict(values))


def upsert_request(version: str, sobject: str, external_field: str, external_value: str,
                   values: Mapping[str, Any]) -> WireRequest:
    # §2.2: the external id value is a path segment; the body must not repeat the key field.
    body = {k: v for k, v in values.items() if k != external_field}
    path = data_path(version, "sobjects", sobject, external_field, quote(external_value, safe=""))
    return WireRequest(method="PATCH", path=path, json=body)


def delete_request(version: str, sobject: str, record_id: str) -> WireRequest:
    return WireRequest(method="DELETE", path=data_path(version, "sobjects", sobject, record_id))


def describe_request(version: str, sobject: str) -> WireRequest:
    return WireRequest(method="GET", path=data_path(version, "sobjects", sobject, "describe"))


def tooling_create_request(version: str, metadata_type: str, full_name: str, metadata: Mapping[str, Any]
                           ) -> WireRequest:
    """Create a metadata component (CustomObject, CustomField) through the Tooling API [doc]."""
    return WireRequest(method="POST", path=data_path(version, "tooling", "sobjects", metadata_type),
                       json={"FullName": full_name, "Metadata": dict(metadata)})


def limits_request(version: str) -> WireRequest:
    return WireRequest(method="GET", path=data_path(version, "limits"))


def collection_create_request(version: str, sobject: str, records: Sequence[Mapping[str, Any]],
                              *, all_or_none: bool = False) -> WireRequest:
    _check_chunk(records)
    body = {"allOrNone": all_or_none,
            "records": [{"attributes": {"type": sobject}, **dict(r)} for r in records]}
    return WireRequest(method="POST", path=data_path(version, "composite", "sobjects"), json=body)


def collection_update_request(version: str, sobject: str, records: Sequence[Mapping[str, Any]],
                              *, all_or_none: bool = False) -> WireRequest:
    _check_chunk(records)
    for record in records:
        if not record.get("Id") and not record.get("id"):
            raise ValueError("every record of a collections update needs its Id")
    body = {"allOrNone": all_or_none,
            "records": [{"attributes": {"type": sobject}, **dict(r)} for r in records]}
    return WireRequest(method="PATCH", path=data_path(version, "composite", "sobjects"), json=body)


def collection_upsert_request(version: str, sobject: str, external_field: str,
                              records: Sequence[Mapping[str, Any]], *, all_or_none: bool = False) -> WireRequest:
    _check_chunk(records)
    for record in records:
        if record.get(external_field) in (None, ""):
            raise ValueError(f"every record of a collections upsert needs {external_field}")
    body = {"allOrNone": all_or_none,
            "records": [{"attributes": {"type": sobject}, **dict(r)} for r in records]}
    return WireRequest(method="PATCH", path=data_path(version, "composite", "sobjects", sobject, external_field),
                       json=body)


def _check_chunk(records: Sequence[object]) -> None:
    if not 1 <= len(records) <= COLLECTION_MAX:
        raise ValueError(f"a collections call takes 1 to {COLLECTION_MAX} records, got {len(records)}")


def chunked(items: Sequence[T], size: int = COLLECTION_MAX) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- OAuth (§1) -------------------------------------------------------------------------------------


def jwt_assertion(*, client_id: str, username: str, audience: str, private_key_pem: str,
                  now: float | None = None) -> str:
    issued = time.time() if now is None else now
    claims = {"iss": client_id, "sub": username, "aud": audience, "exp": int(issued) + JWT_LIFETIME_SECONDS}
    return jwt.encode(claims, private_key_pem, algorithm="RS256")


def jwt_token_request(*, assertion: str) -> WireRequest:
    return WireRequest(method="POST", path="/services/oauth2/token",
                       form={"grant_type": JWT_GRANT, "assertion": assertion})


def client_credentials_token_request(*, client_id: str, client_secret: str) -> WireRequest:
    return WireRequest(method="POST", path="/services/oauth2/token",
                       form={"grant_type": "client_credentials", "client_id": client_id,
                             "client_secret": client_secret})


def refresh_token_request(*, client_id: str, client_secret: str | None, refresh_token: str) -> WireRequest:
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}
    if client_secret:
        form["client_secret"] = client_secret
    return WireRequest(method="POST", path="/services/oauth2/token", form=form)


def parse_token(body: Any) -> Token:
    if not isinstance(body, dict) or not body.get("access_token") or not body.get("instance_url"):
        raise ValueError("token response lacks access_token or instance_url")
    return Token(access_token=body["access_token"], instance_url=str(body["instance_url"]).rstrip("/"),
                 issued_at=body.get("issued_at"), user_id=user_of_identity(body.get("id")),
                 org_id=org_of_identity(body.get("id")))


def user_of_identity(identity: Any) -> str | None:
    """`https://login.salesforce.com/id/00Dxx.../005xx...` -> `005xx...`; None when it is not that shape."""
    if not isinstance(identity, str):
        return None
    parts = identity.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id" or not parts[-1].startswith("005"):
        return None
    return parts[-1]


def org_of_identity(identity: Any) -> str | None:
    """`https://login.salesforce.com/id/00Dxx.../005xx...` -> `00Dxx...`; None when it is not that shape."""
    if user_of_identity(identity) is None:
        return None
    org = str(identity).rstrip("/").split("/")[-2]
    return org if org.startswith("00D") else None


def token_error(status: int, body: Any) -> SyncError:
    """§1.5: the token endpoint answers {"error", "error_description"}."""
    context = ErrorContext(system=SYSTEM, operation="login", status=status,
                           error_code=body.get("error") if isinstance(body, dict) else None)
    if status >= 500 or status == 429:
        return Retryable(f"token endpoint answered {status}", context)
    if isinstance(body, dict) and "error" in body:
        return AuthFailed(f"{body['error']}: {body.get('error_description', '')}".strip(), context)
    return AuthFailed(f"token endpoint answered {status}", context)


# --- reading responses ------------------------------------------------------------------------------


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """§3.2: `api-usage=25/5000; per-app-api-usage=...` -> (25, 5000)."""
    if not header:
        return None
    match = _LIMIT_INFO.search(header)
    if match is None:
        return None
    return int(match["used"]), int(match["total"])


def parse_error_items(body: Any) -> tuple[ApiErrorItem, ...]:
    """The error list (§2: always an array of {message, errorCode, fields}), read tolerantly."""
    entries = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    items = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        code = entry.get("errorCode") or entry.get("statusCode") or entry.get("error") or "UNKNOWN"
        message = entry.get("message") or entry.get("error_description") or ""
        fields = entry.get("fields") or ()
        items.append(ApiErrorItem(code=str(code), message=str(message), fields=tuple(str(f) for f in fields)))
    return tuple(items)


def classify(status: int, body: Any, *, operation: str, record_ref: str | None = None,
             retry_after: float | None = None) -> SyncError:
    """Status and error codes -> the exception family that says what to do next."""
    items = parse_error_items(body)
    first = items[0] if items else None
    code = first.code if first else None
    message = "; ".join(f"{i.code}: {i.message}" for i in items) if items else f"HTTP {status}"
    context = ErrorContext(system=SYSTEM, operation=operation, status=status, error_code=code, record_ref=record_ref)
    if status == 401 or code in SESSION_CODES:
        return AuthExpired(message, context, items)
    if code == "REQUEST_LIMIT_EXCEEDED" and any(m in message for m in CONCURRENT_LIMIT_MARKERS):
        return Throttled(message, context, items,
                         retry_after=retry_after if retry_after is not None else CONCURRENT_RETRY_SECONDS)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RequestLimitExceeded(message, context, items,
                                    retry_after=retry_after if retry_after is not None
                                    else LIMIT_EXCEEDED_PAUSE_SECONDS)
    if status == 429:
        return Throttled(message, context, items, retry_after=retry_after)
    if status >= 500 or code in RETRYABLE_CODES:
        return Retryable(message, context, items)
    if status == 300:
        return Conflict(f"several records match the external id ({operation})", context, items)
    return Permanent(message, context, items)


def parse_query_page(body: Any) -> QueryPage:
    """§2.1: {done, totalSize, records[], nextRecordsUrl?}; `attributes` is dropped from each record."""
    records = [_without_attributes(r) for r in body.get("records", [])]
    next_url = None if body.get("done", True) else body.get("nextRecordsUrl")
    return QueryPage(records=records, total_size=int(body.get("totalSize", len(records))), next_records_url=next_url)


def _without_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        out[key] = _without_attributes(value) if isinstance(value, dict) else value
    return out


def parse_collection_results(body: Any, expected: int) -> list[WriteResult]:
    """§2.3: a 200 answer lists one result per input record, in order; errors use `statusCode`."""
    if not isinstance(body, list) or len(body) != expected:
        raise ValueError(f"collections answer has {len(body) if isinstance(body, list) else 'no'} results "
                         f"for {expected} records")
    results = []
    for entry in body:
        ok = bool(entry.get("success"))
        results.append(WriteResult(ok=ok, id=entry.get("id"), created=entry.get("created"),
                                   errors=() if ok else parse_error_items(entry.get("errors") or [])))
    return results
