"""The one exception tree of revdaemon, grouped by what the caller does next.

    RevdaemonError
    ├── ConfigError            fatal at start-up: the config names a bad key
    ├── StoreError             the state store refused an operation
    │   ├── SchemaTooNew       the database was written by a newer revdaemon
    │   ├── IllegalTransition  a lifecycle move the state table forbids
    │   ├── LinkConflict       an id is already linked to a different record
    │   ├── ClaimLost          a worker's claim on an event was taken over after its lease ran out
    │   ├── Fenced             another replica took leadership: this one's work stops, changing nothing
    │   ├── StoreMissing       no state database yet (read-only open)
    │   ├── StoreBusy          locked by another process past the busy timeout: try again
    │   └── StoreUnavailable   the database failed or is not a database
    │   └── RecordNotFound     no row with that id
    └── SyncError              raised at a connector boundary, carries its evidence
        ├── Retryable          timeouts, 5xx, UNABLE_TO_LOCK_ROW: back off and retry
        │   ├── Unsent         the request never reached the server: safe to repeat even a create
        │   ├── OutcomeUnknown a create may have been applied (timeout, lost connection, 5xx after sending):
        │   │                  look it up once it has settled, never repeat it blind
        │   ├── Busy           another worker of this process is writing the same record: retry soon
        │   │   └── Settling   an unknown outcome is still settling: retry at `retry_after`, no fault of the event
        │   └── Throttled      429: wait `retry_after`
        │       └── RequestLimitExceeded  Salesforce's daily allocation is spent: pause non-urgent work
        ├── AuthExpired        refresh the session once, then retry
        ├── AuthFailed         the credentials were refused: stop that API's work and alert
        ├── Permanent          the record goes to the dead letters
        └── Conflict           the record goes to the conflict log

Connectors translate transport and API errors into this tree once; nothing above them names an httpx
exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class RevdaemonError(Exception):
    """Root of every error revdaemon raises on purpose."""


# --- fatal at start-up ------------------------------------------------------------------------------


class ConfigError(RevdaemonError):
    """The configuration is invalid; `problems` lists (key path, reason) pairs, `source` is the config file and
    `origins` says, per key, where a value that did not come from that file came from (an environment variable,
    a credential file); `source_missing`: there is no such file (allowed unless it was named)."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None,
                 origins: Mapping[str, str] | None = None, *, source_missing: bool = False) -> None:
        self.problems = problems
        self.source = source
        self.origins = dict(origins or {})
        where = f" in {source}" if source else ""
        if source_missing:  # settings from the environment, credential files and defaults alone
            where = f" (no config file found at {source})"
        lines = "\n".join(f"  {key}{f' ({self.origins[key]})' if key in self.origins else ''}: {reason}"
                          for key, reason in problems)
        if len(problems) == 1 and problems[0][0] == "config" and source is None:
            super().__init__(problems[0][1])  # no file to read: "no config file found at PATH", "cannot read"
            return
        super().__init__(f"invalid configuration{where}:\n{lines}")


class ListenError(RevdaemonError):
    """A listener could not bind its address (the port is taken, or the host is not this machine's)."""


# --- the state store --------------------------------------------------------------------------------


class StoreError(RevdaemonError):
    """The state store could not do what was asked."""


class SchemaTooNew(StoreError):
    """The database schema is newer than this code knows; refuse rather than corrupt it."""


class IllegalTransition(StoreError):
    """A lifecycle move that the state table does not allow; nothing was changed."""


class LinkConflict(StoreError):
    """One side of a link is already paired with another record: a person must look."""


class ClaimLost(StoreError):
    """The event was claimed by another worker after this one's lease ran out; it settles nothing."""


class Fenced(StoreError):
    """The caller's leadership epoch is no longer the current one: another replica has taken leadership, and
    nothing was changed. The caller stops its work at once (completing, retrying and releasing nothing: the new
    leader looks everything up first); it is no failure of the daemon, which goes on serving webhooks."""


class StoreMissing(StoreError):
    """There is no state database yet; the daemon creates it on its first start."""


class StoreBusy(StoreError):
    """Another process held the database past the busy timeout; the operation can be tried again."""


class StoreUnavailable(StoreError):
    """The database failed (disk full, I/O error) or the file is not a state database."""


class RecordNotFound(StoreError):
    """The store holds no row with the given id or key."""


# --- talking to Salesforce and Nue ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ApiErrorItem:
    """One entry of an API's own error list (Salesforce: errorCode or statusCode, message, fields)."""

    code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ErrorContext:
    """The evidence an API error carries up to the executor."""

    system: str  # "salesforce" | "nue"
    operation: str
    status: int | None = None
    error_code: str | None = None
    record_ref: str | None = None


class SyncError(RevdaemonError):
    """An error at a connector boundary, with the API's own words in `message`."""

    def __init__(self, message: str, context: ErrorContext, items: tuple[ApiErrorItem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        self.items = items


class Retryable(SyncError):
    """Transient: back off and try again."""


class Unsent(Retryable):
    """The connection failed before the request was sent, so repeating it cannot duplicate a write."""


class OutcomeUnknown(Retryable):
    """A non-idempotent request (a create, an activation) failed after it may have reached the server: a timeout
    waiting for the answer, a connection lost mid-request, a 5xx. It may have been applied, or may still be
    committing; the executor looks it up after a settle delay before it would send it again."""

    retry_after: float | None = None  # the settle delay, set by the executor: no retry can decide sooner


class Busy(Retryable):
    """Another worker of this process is writing the same record right now; retry in a moment."""


class Settling(Busy):
    """A write whose earlier outcome is unknown waits until `retry_after` seconds have passed, then is looked up."""

    def __init__(self, message: str, context: ErrorContext, retry_after: float) -> None:
        super().__init__(message, context)
        self.retry_after = retry_after


class Throttled(Retryable):
    """The API asked us to slow down; `retry_after` seconds when it said how long."""

    def __init__(
        self,
        message: str,
        context: ErrorContext,
        items: tuple[ApiErrorItem, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, context, items)
        self.retry_after = retry_after


class RequestLimitExceeded(Throttled):
    """Salesforce's daily request allocation is used up (403 REQUEST_LIMIT_EXCEEDED)."""


class AuthExpired(SyncError):
    """The session is no longer valid: log in again once, then retry."""


class AuthFailed(SyncError):
    """The token endpoint refused the credentials (invalid_grant, invalid_client): a person must act."""


class Permanent(SyncError):
    """Retrying cannot help: the record goes to the dead letters with this error."""


class Conflict(SyncError):
    """Both systems disagree in a way a person must decide."""


__all__ = [
    "ApiErrorItem",
    "AuthExpired",
    "AuthFailed",
    "Busy",
    "ClaimLost",
    "ConfigError",
    "Conflict",
    "ErrorContext",
    "Fenced",
    "IllegalTransition",
    "LinkConflict",
    "Permanent",
    "RecordNotFound",
    "RequestLimitExceeded",
    "Retryable",
    "RevdaemonError",
    "SchemaTooNew",
    "StoreBusy",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "SyncError",
    "Throttled",
    "Unsent",
]
