"""Plans of writes: frozen values with keyword-only, validating constructors (h11's events, style.md §3).

A flow returns a `Plan`; the executor carries it out. Every write carries an idempotency key that the
flow derives from the target's natural key, so the same business change always gets the same key and
two events about one record coalesce into one write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _require(owner: object, *names: str) -> None:
    for name in names:
        if not getattr(owner, name):
            raise ValueError(f"{type(owner).__name__}.{name} must not be empty")


@dataclass(frozen=True, kw_only=True)
class SfUpsert:
    """Create or update a Salesforce record by an external id (never a blind create)."""

    sobject: str
    external_id_field: str
    external_id: str
    fields: Mapping[str, Any]
    idem_key: str

    def __post_init__(self) -> None:
        _require(self, "sobject", "external_id_field", "external_id", "idem_key")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("salesforce", self.sobject, f"{self.external_id_field}={self.external_id}")


@dataclass(frozen=True, kw_only=True)
class SfUpdate:
    sobject: str
    record_id: str
    fields: Mapping[str, Any]
    idem_key: str

    def __post_init__(self) -> None:
        _require(self, "sobject", "record_id", "idem_key")
        if not self.fields:
            raise ValueError("SfUpdate.fields must not be empty")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("salesforce", self.sobject, self.record_id)


@dataclass(frozen=True, kw_only=True)
class SfCreate:
    """Create a Salesforce record that has no external id (a Note, a Task): the executor first looks for a
    record whose `match` fields all equal these values, and creates only when there is none.

    `seen_absent`: the flow planned it from a read, in this same claim, of the records it could match, and
    none did (text compared without case, as SOQL does). The executor then looks again only when the write
    may have been sent before (a crash mid-call, a retry, a replay); a first attempt costs no lookup."""

    sobject: str
    fields: Mapping[str, Any]
    match: Mapping[str, Any]
    idem_key: str
    seen_absent: bool = False

    def __post_init__(self) -> None:
        _require(self, "sobject", "idem_key")
        if not self.match:
            raise ValueError("SfCreate.match must name the fields that find an earlier copy (never a blind create)")
        missing = [k for k in self.match if k not in self.fields]
        if missing:
            raise ValueError(f"SfCreate.match fields must be written too: {missing}")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("salesforce", self.sobject, ",".join(f"{k}={v}" for k, v in sorted(self.match.items())))


@dataclass(frozen=True, kw_only=True)
class SfDelete:
    sobject: str
    record_id: str
    idem_key: str

    def __post_init__(self) -> None:
        _require(self, "sobject", "record_id", "idem_key")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("salesforce", self.sobject, self.record_id)


@dataclass(frozen=True, kw_only=True)
class NueCreateCustomer:
    """Create the Nue customer for a Salesforce account; the executor looks it up by that id first."""

    salesforce_account_id: str
    payload: Mapping[str, Any]
    idem_key: str

    def __post_init__(self) -> None:
        _require(self, "salesforce_account_id", "idem_key")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("nue", "Customer", self.salesforce_account_id)


@dataclass(frozen=True, kw_only=True)
class NueCreateOrder:
    """Create a draft order for an opportunity; the executor looks it up by the opportunity marker first."""

    customer_id: str
    opportunity_id: str
    payload: Mapping[str, Any]
    idem_key: str
    marker_field: str | None = None

    def __post_init__(self) -> None:
        _require(self, "customer_id", "opportunity_id", "idem_key")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("nue", "Order", self.opportunity_id)


@dataclass(frozen=True, kw_only=True)
class NueActivateOrder:
    order_id: str
    idem_key: str
    generate_invoice: bool = True
    activate_invoice: bool = True

    def __post_init__(self) -> None:
        _require(self, "order_id", "idem_key")

    @property
    def target(self) -> tuple[str, str, str]:
        return ("nue", "OrderActivation", self.order_id)


@dataclass(frozen=True, kw_only=True)
class LinkIds:
    """Remember that a Nue record and a Salesforce record are the same thing."""

    object_type: str
    nue_id: str
    salesforce_id: str

    def __post_init__(self) -> None:
        _require(self, "object_type", "nue_id", "salesforce_id")


@dataclass(frozen=True, kw_only=True)
class OpenConflict:
    """Both sides disagree in a way a person decides; nothing is overwritten."""

    flow: str
    record_ref: str
    reason: str
    nue_values: Mapping[str, Any] = field(default_factory=dict)
    salesforce_values: Mapping[str, Any] = field(default_factory=dict)
    synced_values: Mapping[str, Any] = field(default_factory=dict)


Write = SfUpsert | SfUpdate | SfCreate | SfDelete | NueCreateCustomer | NueCreateOrder | NueActivateOrder


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to do next for one event. `done` is False when a later step depends on these writes' results:
    the worker then looks the state up again and asks the flow for the next step."""

    writes: tuple[Write, ...] = ()
    links: tuple[LinkIds, ...] = ()
    done: bool = True
    conflict: OpenConflict | None = None
    skip_reason: str | None = None  # why nothing is written (echo, stale, not applicable), for the log
    version: str | None = None  # the source state's version these writes reflect (ordering guard)
    entity: str | None = None  # the entity the version belongs to
    # Nothing to write yet: another flow working on the same claim is making what this one needs (flow 6 a new
    # customer's account). The worker asks again at its next step; if the claim's steps run out first, the event
    # is skipped for this flow with this reason, as before any such flow existed.
    waiting: str | None = None

    def __post_init__(self) -> None:
        if self.conflict is not None and self.writes:
            raise ValueError("a plan that opens a conflict must not also write")
        if self.waiting is not None and (self.writes or self.conflict is not None):
            raise ValueError("a plan that waits writes nothing and opens nothing")
        if not self.done and not self.writes:
            raise ValueError("a plan that is not done must carry the writes the next step waits for")
