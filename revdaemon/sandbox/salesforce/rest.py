"""The REST resources under /services/data/vNN.0 (salesforce-api.md §2), independent of HTTP plumbing.

`RestApi.handle(call)` maps one request to a `Reply`; the app wraps it with auth, limits and faults, and
Composite (§2.4) calls it again for each subrequest.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from revdaemon.sandbox.salesforce.errors import (
    PROCESSING_HALTED_MESSAGE,
    ROLLED_BACK_MESSAGE,
    SfError,
    bad_request,
    not_found,
)
from revdaemon.sandbox.salesforce.permissions import check_write
from revdaemon.sandbox.salesforce.schema import ObjectDef, Schema
from revdaemon.sandbox.salesforce.soql import INVALID_FIELD_TAIL, Compiled, QueryEngine, positioned, project
from revdaemon.sandbox.salesforce.store import MultipleMatches, Record, Store, normalize_id
from revdaemon.sandbox.salesforce.values import parse_datetime, wire_from_datetime

COLLECTION_MAX = 200  # salesforce-api.md §2.3
COMPOSITE_MAX = 25  # salesforce-api.md §2.4
BATCH_MIN, BATCH_MAX = 200, 2_000  # Sforce-Query-Options batchSize bounds, §2.1
CURSOR_IDLE_SECONDS = 15 * 60  # query locators expire after ~15 min idle, §2.1
UPSERT_200_SINCE = 46.0  # upsert update answers 200 + created:false from v46, 204 before (§2.2)
BATCH_RE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)
REFERENCE_RE = re.compile(r"@\{([^}]+)\}")
VERSION_RE = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")
OTHER_LIMITS = {"DailyBulkApiRequests": 5_000, "DailyBulkV2QueryJobs": 10_000, "DataStorageMB": 5,
                "FileStorageMB": 20, "HourlyODataCallout": 10_000, "ConcurrentAsyncGetReportInstances": 200}


@dataclass(kw_only=True)
class Call:
    method: str
    segments: list[str]  # path after /services/data/vNN.0/, split and URL-decoded
    version: str
    params: dict[str, str]
    body: Any
    headers: Mapping[str, str]
    user_id: str


@dataclass(kw_only=True)
class Reply:
    status: int
    body: Any = None  # None: empty body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class Cursor:
    compiled: Compiled
    rows: list[Record]
    batch: int
    version: str
    touched: float


def error_reply(error: SfError, version: str = "") -> Reply:
    if isinstance(error, MultipleMatches):
        return Reply(status=300, body=[f"/services/data/v{version}/sobjects/{error.object}/{i}" for i in error.ids])
    return Reply(status=error.status, body=error.body())


class RestApi:
    """`schema_for(user_id)` is the schema that user sees (permissions.py); `mounts` route other resource
    families by their first path segment (the Tooling API, tooling.py)."""

    def __init__(self, store: Store, schema: Schema, engine: QueryEngine, *, page_size: int, max_cursors: int,
                 clock: Callable[[], float], usage: Callable[[], tuple[int, int]],
                 schema_for: Callable[[str], Schema] | None = None) -> None:
        self.store = store
        self.schema = schema
        self.schema_for = schema_for or (lambda _user: schema)
        self.mounts: dict[str, Callable[[Call], Reply]] = {}
        self.engine = engine
        self.page_size = page_size
        self.max_cursors = max_cursors
        self.clock = clock
        self.usage = usage
        self.cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._describe_cache: dict[tuple[str, str, int], Any] = {}

    # ---- dispatch ----------------------------------------------------------------------------------

    def handle(self, call: Call) -> Reply:
        try:
            return self._route(call)
        except SfError as error:
            return error_reply(error, call.version)

    def _route(self, call: Call) -> Reply:
        seg, method = call.segments, call.method
        head = seg[0] if seg else ""
        if not seg:
            return self._only(method, "GET", lambda: Reply(status=200, body=self._resources(call.version)))
        if head in ("query", "queryAll"):
            if len(seg) == 1:
                return self._only(method, "GET", lambda: self._query(call, include_deleted=head == "queryAll"))
            if len(seg) == 2:
                return self._only(method, "GET", lambda: self._next_page(seg[1]))
        if head == "limits" and len(seg) == 1:
            return self._only(method, "GET", lambda: Reply(status=200, body=self._limits()))
        if head == "sobjects":
            return self._sobjects(call)
        if head in self.mounts:
            return self.mounts[head](call)
        if head == "composite":
            if len(seg) == 1:
                return self._only(method, "POST", lambda: self._composite(call))
            if seg[1] == "sobjects":
                return self._collections(call)
        raise not_found()

    @staticmethod
    def _only(method: str, allowed: str, action: Callable[[], Reply]) -> Reply:
        if method != allowed:
            raise SfError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")
        return action()

    def _resources(self, version: str) -> dict[str, str]:
        base = f"/services/data/v{version}"
        return {name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "limits", "composite")}

    def _limits(self) -> dict[str, Any]:
        used, limit = self.usage()
        limits: dict[str, Any] = {"DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)}}
        limits.update({name: {"Max": value, "Remaining": value} for name, value in OTHER_LIMITS.items()})
        return limits

    # ---- query -------------------------------------------------------------------------------------

    def _query(self, call: Call, *, include_deleted: bool) -> Reply:
        compiled = self.engine.compile(call.params.get("q", ""), self.schema_for(call.user_id))
        with self.store.lock:
            rows = self.engine.run(compiled, self.store.table(compiled.object.name), self.store.lookup,
                                   include_deleted=include_deleted, now=self.clock(),
                                   rows_where_any=self.store.rows_where_any)
        if compiled.count:
            return Reply(status=200, body={"totalSize": len(rows), "done": True, "records": []})
        batch = self.page_size
        match = BATCH_RE.search(call.headers.get("sforce-query-options", ""))
        if match:
            batch = min(max(int(match.group(1)), BATCH_MIN), BATCH_MAX)
        cursor = Cursor(compiled=compiled, rows=rows, batch=batch, version=call.version, touched=self.clock())
        return Reply(status=200, body=self._page(cursor, None, 0))

    def _page(self, cursor: Cursor, locator: str | None, offset: int) -> dict[str, Any]:
        end = offset + cursor.batch
        records = [project(cursor.compiled, r, self.store.lookup, cursor.version, self.schema.object_for_id)
                   for r in cursor.rows[offset:end]]
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if end < len(cursor.rows):
            if locator is None:
                locator = self.store.ids.new("01g")
                self._expire_cursors()
                while len(self.cursors) >= self.max_cursors:
                    self.cursors.popitem(last=False)  # the oldest locator goes, like the 10-per-user cap
            cursor.touched = self.clock()
            self.cursors[locator] = cursor
            self.cursors.move_to_end(locator)
            body["nextRecordsUrl"] = f"/services/data/v{cursor.version}/query/{locator}-{end}"
        elif locator is not None:
            self.cursors.pop(locator, None)
        body["records"] = records
        return body

    def _expire_cursors(self) -> None:
        horizon = self.clock() - CURSOR_IDLE_SECONDS
        for locator in [k for k, c in self.cursors.items() if c.touched < horizon]:
            del self.cursors[locator]

    def _next_page(self, token: str) -> Reply:
        locator, _, offset_text = token.rpartition("-")
        self._expire_cursors()
        cursor = self.cursors.get(locator)
        if cursor is None or not offset_text.isdigit():
            raise bad_request("INVALID_QUERY_LOCATOR", "invalid query locator")
        return Reply(status=200, body=self._page(cursor, locator, int(offset_text)))

    # ---- sObject resources -------------------------------------------------------------------------

    def _object(self, name: str, call: Call) -> ObjectDef:
        """The object as the caller sees it; one they may not read does not exist for them."""
        od = self.schema_for(call.user_id).get(name)
        if od is None:
            raise not_found()
        return od

    def _sobjects(self, call: Call) -> Reply:
        seg, method = call.segments, call.method
        if len(seg) == 1:
            view = self.schema_for(call.user_id)
            return self._only(method, "GET", lambda: Reply(status=200, body=self._cached(
                "global", "", call.version, lambda: view.global_describe(call.version), view)))
        od = self._object(seg[1], call)
        if len(seg) == 2:
            if method == "POST":
                return self._create(od, call)
            return self._only(method, "GET", lambda: Reply(status=200, body={
                "objectDescribe": od.summary(call.version), "recentItems": []}))
        if len(seg) == 3 and seg[2] == "describe":
            return self._only(method, "GET", lambda: Reply(status=200, body=self._cached(
                "describe", od.name, call.version, lambda: od.describe(call.version),
                self.schema_for(call.user_id))))
        if len(seg) == 3 and seg[2] in ("updated", "deleted"):
            return self._only(method, "GET", lambda: self._replication(od, seg[2], call.params))
        if len(seg) == 3:
            return self._by_id(od, seg[2], call)
        if len(seg) == 4:
            return self._by_external_id(od, seg[2], seg[3], call)
        raise not_found()

    def _cached(self, kind: str, name: str, version: str, build: Callable[[], Any], view: Schema) -> Any:
        key = (kind + name, version, view.version)
        if key not in self._describe_cache:
            if len(self._describe_cache) > 256:
                self._describe_cache.clear()
            self._describe_cache[key] = build()
        return self._describe_cache[key]

    def _record_body(self, od: ObjectDef, record: Record, version: str,
                     fields: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": {"type": od.name,
                                              "url": f"/services/data/v{version}/sobjects/{od.name}/{record['Id']}"}}
        for name in fields if fields is not None else od.fields:
            out[name] = record.get(name)
        return out

    def _field_list(self, od: ObjectDef, text: str | None) -> list[str] | None:
        if text is None:
            return None
        names: list[str] = []
        pos = 0
        for part in text.split(","):
            found = od.field(part.strip())
            if found is None:
                at = pos + len(part) - len(part.lstrip())
                raise bad_request("INVALID_FIELD", positioned(text, at, f"No such column '{part.strip()}' on entity "
                                                                        f"'{od.name}'. {INVALID_FIELD_TAIL}"))
            names.append(found.name)
            pos += len(part) + 1
        return names

    def _body(self, call: Call) -> dict[str, Any]:
        if not isinstance(call.body, dict):
            raise bad_request("JSON_PARSER_ERROR", "The request body must be a JSON object")
        return call.body

    def _create(self, od: ObjectDef, call: Call) -> Reply:
        check_write(od, self._body(call), "create")
        record_id = self.store.create(od.name, self._body(call), call.user_id)
        return Reply(status=201, body={"id": record_id, "success": True, "errors": []},
                     headers={"Location": f"/services/data/v{call.version}/sobjects/{od.name}/{record_id}"})

    def _by_id(self, od: ObjectDef, raw_id: str, call: Call) -> Reply:
        if call.method == "GET":
            with self.store.lock:
                record = self.store.find_live(od, raw_id)
            fields = self._field_list(od, call.params.get("fields"))
            return Reply(status=200, body=self._record_body(od, record, call.version, fields))
        if call.method == "PATCH":
            check_write(od, self._body(call), "update")
            self.store.update(od.name, raw_id, self._body(call), call.user_id)
            return Reply(status=204)
        if call.method == "DELETE":
            check_write(od, {}, "delete")
            self.store.delete(od.name, raw_id, call.user_id)
            return Reply(status=204)
        raise SfError(405, "METHOD_NOT_ALLOWED",
                      f"HTTP Method '{call.method}' not allowed. Allowed are HEAD,GET,PATCH,DELETE")

    def _by_external_id(self, od: ObjectDef, field_name: str, value: str, call: Call) -> Reply:
        ext = od.field(field_name)
        if ext is None:
            raise not_found()  # unknown external id field: 404 NOT_FOUND (§2.2)
        if call.method == "PATCH":
            check_write(od, self._body(call), "upsert")
            record_id, created = self.store.upsert(od.name, ext.name, value, self._body(call), call.user_id)
            if not created and float(call.version) < UPSERT_200_SINCE:
                return Reply(status=204)
            body: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
            if float(call.version) >= UPSERT_200_SINCE:
                body["created"] = created
            return Reply(status=201 if created else 200, body=body)
        if call.method not in ("GET", "DELETE"):
            raise SfError(405, "METHOD_NOT_ALLOWED",
                          f"HTTP Method '{call.method}' not allowed. Allowed are HEAD,GET,PATCH,DELETE")
        with self.store.lock:
            matches = self.store.find_external(od, ext, value) if ext.type != "id" else [normalize_id(value) or ""]
            if len(matches) > 1:
                raise MultipleMatches(od, matches)
            if not matches:
                raise not_found()
            if call.method == "DELETE":
                check_write(od, {}, "delete")
                self.store.delete(od.name, matches[0], call.user_id)
                return Reply(status=204)
            record = self.store.find_live(od, matches[0])
        fields = self._field_list(od, call.params.get("fields"))
        return Reply(status=200, body=self._record_body(od, record, call.version, fields))

    def _replication(self, od: ObjectDef, kind: str, params: Mapping[str, str]) -> Reply:
        """getUpdated / getDeleted (§4.2): minute granularity, start must precede end."""
        try:
            start = parse_datetime(params["start"]).replace(second=0, microsecond=0)
            end = parse_datetime(params["end"]).replace(second=0, microsecond=0)
        except (KeyError, ValueError) as exc:
            raise bad_request("MALFORMED_QUERY", "start and end must be ISO 8601 date-times") from exc
        if start >= end:
            raise bad_request("INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate by more "
                                                          "than one minute")
        # latestDateCovered is the last time the call covered, "less than or equal to endDate" [doc]: never a
        # future end, but the current minute at most (the changes of a minute still running are not covered
        # yet, so they are left to the next call, which starts from here).
        now = datetime.fromtimestamp(self.clock(), UTC).replace(second=0, microsecond=0)
        covered = max(start, min(end, now))
        low, high = wire_from_datetime(start), wire_from_datetime(covered)
        with self.store.lock:
            rows = [r for r in self.store.table(od.name).values() if low <= r["SystemModstamp"] < high]
        if kind == "updated":
            ids = [r["Id"] for r in rows if not r["IsDeleted"]]
            return Reply(status=200, body={"ids": ids, "latestDateCovered": high})
        deleted = [{"id": r["Id"], "deletedDate": r["SystemModstamp"]} for r in rows if r["IsDeleted"]]
        return Reply(status=200, body={"deletedRecords": deleted, "earliestDateAvailable": low,
                                       "latestDateCovered": high})

    # ---- sObject Collections (§2.3) ----------------------------------------------------------------

    def _collections(self, call: Call) -> Reply:
        seg, method = call.segments, call.method
        if len(seg) == 2 and method in ("POST", "PATCH"):
            body = self._body(call)
            records = body.get("records")
            if not isinstance(records, list):
                raise bad_request("JSON_PARSER_ERROR", "records is required")
            self._check_collection_size(len(records))
            write = self._collection_create if method == "POST" else self._collection_update
            return self._collection_run(records, bool(body.get("allOrNone")),
                                        lambda item: write(item, call), call)
        if len(seg) == 2 and method == "DELETE":
            ids = [i for i in call.params.get("ids", "").split(",") if i]
            self._check_collection_size(len(ids))
            return self._collection_run(ids, call.params.get("allOrNone", "").lower() == "true",
                                        lambda item: self._collection_delete(item, call), call)
        if len(seg) == 3 and method == "GET":
            od = self._object(seg[2], call)
            ids = [i for i in call.params.get("ids", "").split(",") if i]
            fields = self._field_list(od, call.params.get("fields"))
            out: list[Any] = []
            with self.store.lock:
                for raw in ids:
                    record_id = normalize_id(raw)
                    record = self.store.table(od.name).get(record_id or "")
                    live = record is not None and not record["IsDeleted"]
                    out.append(self._record_body(od, record, call.version, fields) if live and record else None)
            return Reply(status=200, body=out)
        if len(seg) == 4 and method == "PATCH":
            od = self._object(seg[2], call)
            ext = od.field(seg[3])
            if ext is None:
                raise not_found()
            body = self._body(call)
            records = body.get("records")
            if not isinstance(records, list):
                raise bad_request("JSON_PARSER_ERROR", "records is required")
            self._check_collection_size(len(records))

            def upsert(item: Any) -> dict[str, Any]:
                if not isinstance(item, dict) or item.get(ext.name) in (None, ""):
                    raise bad_request("MISSING_ARGUMENT", f"{ext.name} not specified", [])
                check_write(od, item, "upsert")
                try:
                    record_id, created = self.store.upsert(od.name, ext.name, str(item[ext.name]), item,
                                                           call.user_id)
                except MultipleMatches as error:
                    raise bad_request("DUPLICATE_EXTERNAL_ID", f"{ext.name}: more than one record found for "
                                                               f"external id field: {error.ids}", []) from error
                return {"id": record_id, "success": True, "errors": [], "created": created}

            return self._collection_run(records, bool(body.get("allOrNone")), upsert, call)
        raise not_found()

    @staticmethod
    def _check_collection_size(count: int) -> None:
        if count > COLLECTION_MAX:
            # §2.3 caps collections at 200 records [unverified wording].
            raise bad_request("EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into "
                                                   "this call")

    def _collection_run(self, items: list[Any], all_or_none: bool, action: Callable[[Any], dict[str, Any]],
                        call: Call) -> Reply:
        results: list[dict[str, Any]] = []
        with self.store.transaction() as rollback:
            for item in items:
                try:
                    results.append(action(item))
                except SfError as error:
                    failure: dict[str, Any] = {"success": False, "errors": [error.collection_entry()]}
                    if call.method != "POST" and isinstance(item, dict | str):
                        item_id = item if isinstance(item, str) else item.get("id") or item.get("Id")
                        if item_id:
                            failure = {"id": item_id, **failure}
                    results.append(failure)
            if all_or_none and any(not r["success"] for r in results):
                rollback()
                rolled = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": ROLLED_BACK_MESSAGE,
                          "fields": []}
                results = [r if not r["success"] else {"success": False, "errors": [rolled]} for r in results]
        return Reply(status=200, body=results)

    def _collection_create(self, item: Any, call: Call) -> dict[str, Any]:
        od = self._collection_type(item, call)
        if any(k.lower() == "id" for k in item):
            raise bad_request("INVALID_FIELD", "cannot specify Id in an insert call", [])
        check_write(od, item, "create")
        record_id = self.store.create(od.name, item, call.user_id)
        return {"id": record_id, "success": True, "errors": []}

    def _collection_update(self, item: Any, call: Call) -> dict[str, Any]:
        od = self._collection_type(item, call)
        raw_id = next((v for k, v in item.items() if k.lower() == "id"), None)
        if not raw_id:
            raise bad_request("MISSING_ARGUMENT", "Id not specified in an update call", [])
        data = {k: v for k, v in item.items() if k.lower() != "id"}
        check_write(od, data, "update")
        self.store.update(od.name, str(raw_id), data, call.user_id)
        return {"id": normalize_id(str(raw_id)), "success": True, "errors": []}

    def _collection_delete(self, raw_id: Any, call: Call) -> dict[str, Any]:
        record_id = normalize_id(str(raw_id))
        obj = self.schema.object_for_id(record_id) if record_id else None
        if record_id is None or obj is None:
            raise bad_request("MALFORMED_ID", f"malformed id {raw_id}", [])
        check_write(self._object(obj, call), {}, "delete")
        self.store.delete(obj, record_id, call.user_id)
        return {"id": record_id, "success": True, "errors": []}

    def _collection_type(self, item: Any, call: Call) -> ObjectDef:
        kind = item.get("attributes", {}).get("type") if isinstance(item, dict) else None
        od = self.schema_for(call.user_id).get(kind) if isinstance(kind, str) else None
        if od is None:
            raise bad_request("INVALID_TYPE", "Must send a concrete entity type.", [])
        return od

    # ---- Composite (§2.4) --------------------------------------------------------------------------

    def _composite(self, call: Call) -> Reply:
        body = self._body(call)
        subrequests = body.get("compositeRequest")
        if not isinstance(subrequests, list) or not subrequests:
            raise bad_request("JSON_PARSER_ERROR", "compositeRequest is required")
        if len(subrequests) > COMPOSITE_MAX:
            raise bad_request("LIMIT_EXCEEDED", f"Composite request may not contain more than {COMPOSITE_MAX} "
                                                "subrequests")  # [unverified wording]
        all_or_none = bool(body.get("allOrNone"))
        results: list[dict[str, Any]] = []
        bodies: dict[str, Any] = {}
        failed_at: int | None = None
        halted = Reply(status=400, body=[{"errorCode": "PROCESSING_HALTED", "message": PROCESSING_HALTED_MESSAGE}])
        with self.store.transaction() as rollback:
            for index, sub in enumerate(subrequests):
                ref = str(sub.get("referenceId", ""))
                reply = halted if all_or_none and failed_at is not None else self._subrequest(sub, bodies, call)
                if reply.status < 300:
                    bodies[ref] = reply.body
                elif failed_at is None:
                    failed_at = index
                results.append(self._sub_result(ref, reply))
            if all_or_none and failed_at is not None:
                # Everything but the failing subrequest reports PROCESSING_HALTED (§2.4).
                rollback()
                results = [r if i == failed_at else self._sub_result(r["referenceId"], halted)
                           for i, r in enumerate(results)]
        return Reply(status=200, body={"compositeResponse": results})

    @staticmethod
    def _sub_result(ref: str, reply: Reply) -> dict[str, Any]:
        return {"body": reply.body, "httpHeaders": dict(reply.headers), "httpStatusCode": reply.status,
                "referenceId": ref}

    def _subrequest(self, sub: Mapping[str, Any], bodies: Mapping[str, Any], call: Call) -> Reply:
        try:
            url = self._resolve(str(sub.get("url", "")), bodies)
            payload = self._resolve(sub.get("body"), bodies)
        except SfError as error:
            return error_reply(error, call.version)
        parts = urlsplit(url)
        match = VERSION_RE.match(parts.path.rstrip("/"))
        if match is None:
            return error_reply(not_found(), call.version)
        rest = (match.group(2) or "").strip("/")
        headers = {k.lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()}
        sub_call = Call(method=str(sub.get("method", "GET")).upper(),
                        segments=[unquote(s) for s in rest.split("/")] if rest else [], version=match.group(1),
                        params=dict(parse_qsl(parts.query)), body=payload, headers=headers, user_id=call.user_id)
        return self.handle(sub_call)

    def _resolve(self, value: Any, bodies: Mapping[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self._resolve(v, bodies) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, bodies) for v in value]
        if not isinstance(value, str) or "@{" not in value:
            return value
        whole = REFERENCE_RE.fullmatch(value)
        if whole:
            return self._reference(whole.group(1), bodies)
        return REFERENCE_RE.sub(lambda m: str(self._reference(m.group(1), bodies)), value)

    @staticmethod
    def _reference(expression: str, bodies: Mapping[str, Any]) -> Any:
        ref, _, path = expression.partition(".")
        halted = SfError(400, "PROCESSING_HALTED", f"Invalid reference specified. No value for {expression} found "
                                                   f"in {ref}.")
        if ref not in bodies:
            raise halted
        current: Any = bodies[ref]
        for step in re.findall(r"[^.\[\]]+|\[\d+\]", path):
            if step.startswith("["):
                index = int(step[1:-1])
                if not isinstance(current, list) or index >= len(current):
                    raise halted
                current = current[index]
            elif isinstance(current, dict) and step in current:
                current = current[step]
            else:
                raise halted
        return current
