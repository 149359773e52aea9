"""The Salesforce client: sends what `salesforce_wire` builds, over an injected `httpx.AsyncClient`.

Theory of operation:
- One token, cached in memory. A 401 makes the caller ask for a refresh *of the token it used*; the first
  caller logs in again under a lock, the others find the new token already there (no thundering herd).
  One re-login and one resend per request; a second 401 raises `AuthExpired`.
- Every request waits for the API's bucket and concurrency slot, and every response's `Sforce-Limit-Info`
  updates the daily budget. What its plan defers is not sent (bulk reads first, then polls; past the
  configured share only real-time work is sent); after REQUEST_LIMIT_EXCEEDED nothing is until the pause ends.
- Retries go through `limits.retrying`. A request that may already have been applied (a create that timed
  out after sending, a 500) is not repeated here: it is raised, and the engine looks the record up by its
  key before any new attempt.
- httpx errors are translated here and nowhere else.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import httpx
import structlog

from revdaemon.config import SalesforceAuth, SalesforceSettings
from revdaemon.connectors import salesforce_wire as wire
from revdaemon.connectors.salesforce_wire import Token, WireRequest, WriteResult
from revdaemon.connectors.wire_json import jsonable
from revdaemon.errors import (
    ConfigError,
    ErrorContext,
    OutcomeUnknown,
    RequestLimitExceeded,
    Retryable,
    SyncError,
    Throttled,
    Unsent,
)
from revdaemon.limits import ApiLimiter, DailyBudget, Priority, RetryPolicy, parse_retry_after, retrying
from revdaemon.ops.logging import register_secret

log = structlog.get_logger("revdaemon.salesforce")

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
BUDGET_WAIT_SECONDS = 60.0
# A login is retried briefly, under the refresh lock; its failure is then shared with every caller that
# waited on the same stale token for this long, instead of each of them logging in again.
LOGIN_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=5.0, max_total=20.0)
LOGIN_FAILURE_HOLD_SECONDS = 10.0


class SalesforceAuthenticator:
    """Logs in by the configured flow and shares one token between all callers."""

    def __init__(self, settings: SalesforceSettings, http: httpx.AsyncClient, *, retry: RetryPolicy = LOGIN_RETRY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._http = http
        self._retry = retry
        self._clock = clock
        self._token: Token | None = None
        self._failure: tuple[Token | None, SyncError, float] | None = None
        self._lock = anyio.Lock()
        self.logins = 0
        self.attempts = 0

    @property
    def integration_user_id(self) -> str | None:
        """The user revdaemon writes as, read from the last login's identity URL; None before a login."""
        return self._token.user_id if self._token is not None else None

    @property
    def current_token(self) -> Token | None:
        return self._token

    async def token(self) -> Token:
        current = self._token
        return current if current is not None else await self.refresh(None)

    async def refresh(self, stale: Token | None) -> Token:
        """Log in again unless another caller already replaced `stale`."""
        async with self._lock:
            if self._token is not None and self._token is not stale:
                return self._token
            if self._failure is not None:
                failed_for, error, at = self._failure
                if failed_for is stale and self._clock() - at < LOGIN_FAILURE_HOLD_SECONDS:
                    raise error
            try:
                self._token = await retrying(self._login, policy=self._retry, operation="salesforce login",
                                             retry_if=_safe_to_repeat)
            except SyncError as exc:
                self._failure = (stale, exc, self._clock())
                raise
            self._failure = None
            return self._token

    async def _login(self) -> Token:
        self.attempts += 1
        request = self._token_request()
        url = self._settings.login_url + request.path
        try:
            response = await self._http.post(url, data=request.form, timeout=self._settings.timeout_seconds)
        except _UNSENT as exc:
            raise Unsent(f"cannot reach {self._settings.login_url}: {exc}", _context("login")) from exc
        except httpx.HTTPError as exc:
            raise Retryable(f"login to {self._settings.login_url} failed: {exc}", _context("login")) from exc
        body = _json_or_none(response)
        if response.status_code != 200:
            raise wire.token_error(response.status_code, body if body is not None else {})
        try:
            token = wire.parse_token(body)
        except ValueError as exc:
            raise Retryable(f"unreadable token answer: {exc}", _context("login")) from exc
        self.logins += 1
        register_secret(token.access_token)
        log.info("salesforce_logged_in", flow=self._settings.auth.value)
        return token

    def _token_request(self) -> WireRequest:
        s = self._settings
        assert s.client_id is not None  # config validation guarantees what each flow needs
        if s.auth is SalesforceAuth.JWT:
            assert s.username is not None
            return wire.jwt_token_request(assertion=wire.jwt_assertion(
                client_id=s.client_id, username=s.username, audience=s.jwt_audience,
                private_key_pem=_private_key(s),
            ))
        if s.auth is SalesforceAuth.CLIENT_CREDENTIALS:
            assert s.client_secret is not None
            return wire.client_credentials_token_request(client_id=s.client_id,
                                                         client_secret=s.client_secret.get_secret_value())
        assert s.refresh_token is not None
        return wire.refresh_token_request(
            client_id=s.client_id,
            client_secret=s.client_secret.get_secret_value() if s.client_secret else None,
            refresh_token=s.refresh_token.get_secret_value(),
        )


class SalesforceClient:
    def __init__(
        self,
        settings: SalesforceSettings,
        http: httpx.AsyncClient,
        *,
        limiter: ApiLimiter,
        budget: DailyBudget,
        retry: RetryPolicy,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._settings = settings
        self._http = http
        self._sleep = sleep
        self._limiter = limiter
        self.budget = budget
        self._retry = retry
        self._rng = rng or random.Random()
        self.auth = SalesforceAuthenticator(settings, http)
        self._describes: dict[str, dict[str, Any]] = {}
        self.calls = 0  # API requests sent (logins excluded), for benchmarks and status

    @property
    def integration_user_id(self) -> str | None:
        """The user revdaemon writes as (LastModifiedById of its own writes); None until the first login."""
        return self.auth.integration_user_id

    def set_limiter(self, limiter: ApiLimiter) -> None:
        """Swap the rate limiter (SIGHUP reload); calls already holding a slot finish under the old one."""
        self._limiter = limiter

    @property
    def version(self) -> str:
        return self._settings.api_version

    # --- operations ---------------------------------------------------------------------------

    async def query(self, soql: str, *, include_deleted: bool = False, batch_size: int | None = None,
                    priority: Priority = Priority.POLL) -> AsyncIterator[dict[str, Any]]:
        """Every record the query matches, following `nextRecordsUrl` page by page."""
        request = wire.query_request(self.version, soql, include_deleted=include_deleted, batch_size=batch_size)
        while True:
            response = await self._send(request, operation="query", priority=priority)
            page = wire.parse_query_page(_json(response, "query"))
            for record in page.records:
                yield record
            if page.next_records_url is None:
                return
            request = wire.next_page_request(page.next_records_url)

    async def get(self, sobject: str, record_id: str, fields: Sequence[str] = (),
                  priority: Priority = Priority.REALTIME) -> dict[str, Any]:
        response = await self._send(wire.get_request(self.version, sobject, record_id, fields),
                                    operation=f"get {sobject}", priority=priority, record_ref=record_id)
        return wire.parse_query_page({"records": [_json(response, f"get {sobject}")]}).records[0]

    async def create(self, sobject: str, values: Mapping[str, Any],
                     priority: Priority = Priority.REALTIME) -> str:
        response = await self._send(wire.create_request(self.version, sobject, values),
                                    operation=f"create {sobject}", priority=priority, idempotent=False)
        body = _json(response, f"create {sobject}")
        if not isinstance(body, dict) or "id" not in body:
            raise OutcomeUnknown(f"create {sobject} answered without an id: look it up before any retry",
                            _context(f"create {sobject}"))
        return str(body["id"])

    async def update(self, sobject: str, record_id: str, values: Mapping[str, Any],
                     priority: Priority = Priority.REALTIME) -> None:
        await self._send(wire.update_request(self.version, sobject, record_id, values),
                         operation=f"update {sobject}", priority=priority, record_ref=record_id)

    async def upsert(self, sobject: str, external_field: str, external_value: str, values: Mapping[str, Any],
                     priority: Priority = Priority.REALTIME) -> WriteResult:
        response = await self._send(
            wire.upsert_request(self.version, sobject, external_field, external_value, values),
            operation=f"upsert {sobject}", priority=priority, record_ref=f"{external_field}={external_value}",
        )
        body = _json_or_none(response) or {}
        # §2.2: v46+ answers 201 created / 200 updated with a body; older versions 204 without one.
        return WriteResult(ok=True, id=body.get("id"), created=response.status_code == 201)

    async def delete(self, sobject: str, record_id: str, priority: Priority = Priority.REALTIME) -> None:
        await self._send(wire.delete_request(self.version, sobject, record_id), operation=f"delete {sobject}",
                         priority=priority, record_ref=record_id)

    async def create_many(self, sobject: str, records: Sequence[Mapping[str, Any]],
                          priority: Priority = Priority.REALTIME) -> list[WriteResult]:
        return await self._collections(records, lambda chunk: wire.collection_create_request(
            self.version, sobject, chunk), operation=f"create {sobject} x{len(records)}", priority=priority,
            idempotent=False)

    async def update_many(self, sobject: str, records: Sequence[Mapping[str, Any]],
                          priority: Priority = Priority.REALTIME) -> list[WriteResult]:
        return await self._collections(records, lambda chunk: wire.collection_update_request(
            self.version, sobject, chunk), operation=f"update {sobject} x{len(records)}", priority=priority)

    async def upsert_many(self, sobject: str, external_field: str, records: Sequence[Mapping[str, Any]],
                          priority: Priority = Priority.REALTIME) -> list[WriteResult]:
        return await self._collections(records, lambda chunk: wire.collection_upsert_request(
            self.version, sobject, external_field, chunk), operation=f"upsert {sobject} x{len(records)}",
            priority=priority)

    async def describe(self, sobject: str, *, refresh: bool = False) -> dict[str, Any]:
        if refresh or sobject not in self._describes:
            response = await self._send(wire.describe_request(self.version, sobject),
                                        operation=f"describe {sobject}", priority=Priority.REALTIME)
            self._describes[sobject] = _json(response, f"describe {sobject}")
        return self._describes[sobject]

    async def field_names(self, sobject: str, *, refresh: bool = False) -> set[str]:
        return {f["name"] for f in (await self.describe(sobject, refresh=refresh)).get("fields", [])}

    async def tooling_create(self, metadata_type: str, full_name: str, metadata: Mapping[str, Any]) -> str:
        """Create a CustomObject or CustomField (setup salesforce); its Tooling id. Not repeated on a lost answer:
        the caller describes again and sees whether it was made."""
        operation = f"create {metadata_type} {full_name}"
        response = await self._send(wire.tooling_create_request(self.version, metadata_type, full_name, metadata),
                                    operation=operation, priority=Priority.REALTIME, idempotent=False)
        body = _json(response, operation)
        return str(body.get("id", "")) if isinstance(body, dict) else ""

    async def limits(self) -> dict[str, Any]:
        response = await self._send(wire.limits_request(self.version), operation="limits",
                                    priority=Priority.REALTIME)
        body: dict[str, Any] = _json(response, "limits")
        return body

    # --- sending ------------------------------------------------------------------------------

    async def _collections(self, records: Sequence[Mapping[str, Any]], build: Any, *, operation: str,
                           priority: Priority, idempotent: bool = True) -> list[WriteResult]:
        results: list[WriteResult] = []
        for chunk in wire.chunked(records):
            try:
                response = await self._send(build(chunk), operation=operation, priority=priority,
                                            idempotent=idempotent)
                results.extend(wire.parse_collection_results(_json(response, operation), len(chunk)))
            except SyncError as exc:
                # Chunks already written stay reported as written; this one and the rest carry the error.
                failed = len(records) - len(results)
                results.extend(WriteResult(ok=False, failure=exc) for _ in range(failed))
                break
            except ValueError as exc:
                error = (Retryable if idempotent else OutcomeUnknown)(f"unreadable collections answer: {exc}",
                                                                      _context(operation))
                results.extend(WriteResult(ok=False, failure=error) for _ in range(len(records) - len(results)))
                break
        return results

    async def _send(self, request: WireRequest, *, operation: str, priority: Priority,
                    record_ref: str | None = None, idempotent: bool = True) -> httpx.Response:
        if not self.budget.allows(priority):
            raise Throttled(f"Salesforce budget holds back {priority.value} work "
                            f"(used {self.budget.used}/{self.budget.total})",
                            _context(operation, record_ref), retry_after=BUDGET_WAIT_SECONDS)

        timeout = self._settings.timeout_seconds if idempotent else self._settings.create_timeout_seconds

        async def attempt() -> httpx.Response:
            return await self._send_once(request, operation=operation, record_ref=record_ref, wait_seconds=timeout)

        try:
            return await retrying(attempt, policy=self._retry, operation=operation, rng=self._rng, sleep=self._sleep,
                                  retry_if=_safe_to_repeat if not idempotent else lambda exc: True)
        except Retryable as exc:
            if idempotent or _safe_to_repeat(exc):
                raise
            raise OutcomeUnknown(f"{exc.message} (it may have been applied)", exc.context, exc.items) from exc

    async def _send_once(self, request: WireRequest, *, operation: str, record_ref: str | None,
                         wait_seconds: float) -> httpx.Response:
        token = await self.auth.token()
        response = await self._request(request, token, operation, record_ref, wait_seconds)
        if response.status_code == 401:
            log.info("salesforce_session_expired", operation=operation)
            token = await self.auth.refresh(token)
            response = await self._request(request, token, operation, record_ref, wait_seconds)
        if response.status_code >= 300:
            error = wire.classify(response.status_code, _json_or_none(response), operation=operation,
                                  record_ref=record_ref,
                                  retry_after=parse_retry_after(response.headers.get("Retry-After")))
            if isinstance(error, RequestLimitExceeded):
                self.budget.pause(error.retry_after or wire.LIMIT_EXCEEDED_PAUSE_SECONDS)
                log.warning("salesforce_limit_exceeded", pause_seconds=error.retry_after)
            raise error
        return response

    async def _request(self, request: WireRequest, token: Token, operation: str,
                       record_ref: str | None, wait_seconds: float) -> httpx.Response:
        base = self._settings.instance_url or token.instance_url
        headers = {"Authorization": f"Bearer {token.access_token}", "Accept": "application/json",
                   **request.headers}
        async with self._limiter.slot():
            try:
                response = await self._http.request(
                    request.method, base + request.path, params=request.params or None,
                    json=jsonable(request.json),
                    headers=headers, timeout=wait_seconds,
                )
            except _UNSENT as exc:
                raise Unsent(f"cannot reach Salesforce: {exc!r}", _context(operation, record_ref)) from exc
            except httpx.HTTPError as exc:
                raise Retryable(f"Salesforce request failed: {exc!r}", _context(operation, record_ref)) from exc
        self.calls += 1
        usage = wire.parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self.budget.observe(*usage)
        return response


def _safe_to_repeat(exc: SyncError) -> bool:
    """True when the failed request certainly changed nothing, so even a create may be sent again: it never left
    (Unsent), was refused before handling (429 and the limits), or rolled back (UNABLE_TO_LOCK_ROW, §2.2). A
    timeout, a lost connection or any 5xx (a 503 from a proxy in front of a busy org included) may have been
    applied: that is an unknown outcome (OutcomeUnknown), settled by the executor's lookup."""
    if isinstance(exc, Unsent | Throttled):
        return True
    status = exc.context.status
    return exc.context.error_code == "UNABLE_TO_LOCK_ROW" and (status is None or status < 500)


def _context(operation: str, record_ref: str | None = None) -> ErrorContext:
    return ErrorContext(system=wire.SYSTEM, operation=operation, record_ref=record_ref)


def _json(response: httpx.Response, operation: str) -> Any:
    """The answer's JSON; an unreadable body (a proxy's HTML page) is a Retryable at this boundary."""
    try:
        return response.json()
    except ValueError as exc:
        raise Retryable(f"{operation}: unreadable answer (HTTP {response.status_code}): {exc}",
                        _context(operation)) from exc


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _private_key(settings: SalesforceSettings) -> str:
    if settings.private_key is not None:
        return settings.private_key.get_secret_value()
    if settings.private_key_file is not None:
        try:
            return settings.private_key_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([("salesforce.private_key_file", f"cannot read: {exc.strerror}")]) from exc
    raise ConfigError([("salesforce.private_key_file", "jwt auth needs a private key")])
