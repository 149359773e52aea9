"""Simulator settings: credentials, limits, custom schema and faults. Defaults match the daemon's sandbox config."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from revdaemon.setup import catalog

DEFAULT_CONSUMER_KEY = "sandbox-consumer-key"
DEFAULT_CONSUMER_SECRET = "sandbox-consumer-secret"
DEFAULT_USERNAME = "integration@revdaemon.sandbox"
DAILY_LIMIT = 15_000  # Developer Edition allocation, salesforce-api.md §3.1
PAGE_SIZE = 2_000  # default query batch, salesforce-api.md §2.1
TOKEN_LIFETIME_SECONDS = 7_200  # sessionSecondsValid 7200, salesforce-api.md §1.4
# Setup > Change Data Capture: the entities the sync listens to (salesforce-api.md §4.3).
CDC_ENTITIES = ("Opportunity", "Account", "OpportunityLineItem", "Contact")
EVENT_RETENTION_HOURS = 72.0  # the event bus keeps change events 3 days, salesforce-api.md §4.3
KEEPALIVE_SECONDS = 270.0  # an idle Subscribe stream hears from the server within 270 s, salesforce-api.md §4.3


@dataclass(frozen=True, kw_only=True)
class CustomField:
    """A custom field added to an object (standard or custom). `name` must end in `__c`."""

    object: str
    name: str
    # string, textarea, picklist, double, currency, percent, int, boolean, date, datetime, reference, email, url
    type: str = "string"
    label: str | None = None
    length: int = 255
    external_id: bool = False
    unique: bool = False
    required: bool = False
    picklist: tuple[str, ...] = ()
    # "Restrict picklist to the values defined in the value set": a value outside `picklist` is refused with
    # INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST. Off here so the seeded org accepts what the flows write; real
    # orgs tick it by default for new custom picklists, and /__sandbox/schema can re-add a field with it on.
    restricted: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None  # without "__r"; None: the field's name without "__c"
    precision: int | None = None  # number types; None: describe's 18
    scale: int | None = None  # number types; None: describe's 2


@dataclass(frozen=True, kw_only=True)
class CustomObject:
    """A custom object (`name` ends in `__c`); it gets Id, Name, OwnerId and the audit fields automatically."""

    name: str
    label: str
    label_plural: str | None = None
    fields: tuple[CustomField, ...] = ()


@dataclass(kw_only=True)
class FaultSettings:
    """Injected faults. Rates are probabilities per request drawn from a seeded RNG (deterministic per seed);
    the `*_next` counters fail exactly the next N matching requests before rates are considered."""

    latency_ms: float = 0.0
    unavailable_rate: float = 0.0  # 503 SERVER_UNAVAILABLE on REST calls
    lock_row_rate: float = 0.0  # 400 UNABLE_TO_LOCK_ROW on REST writes
    drop_rate: float = 0.0  # close the connection mid-response
    unavailable_next: int = 0
    lock_row_next: int = 0
    drop_next: int = 0
    seed: int = 0
    # After the request is applied (lost_answers.py): the write commits, then its answer is lost or late.
    # Only 2xx answers to targeted requests are eligible; one draw per such request is split across the
    # rates in this order (their sum is at most 1), after the `applied_*_next` counters.
    applied_drop_rate: float = 0.0  # close the connection without a complete answer
    applied_503_rate: float = 0.0  # answer 503 SERVER_UNAVAILABLE instead
    applied_504_rate: float = 0.0  # answer a gateway's 504 page instead
    applied_slow_rate: float = 0.0  # hold the real answer `applied_slow_seconds`
    applied_slow_seconds: float = 5.0
    applied_drop_next: int = 0
    applied_503_next: int = 0
    applied_504_next: int = 0
    applied_slow_next: int = 0
    applied_writes_only: bool = True  # only POST/PATCH/PUT/DELETE
    # "[METHOD ]/glob" matched against the path after /services/data/vNN.0 (e.g. "POST /composite/sobjects",
    # "/sobjects/*"); empty: every targeted request.
    applied_paths: tuple[str, ...] = ()


def _sim_field(f: catalog.FieldDef) -> CustomField:
    return CustomField(object=f.object, name=f.name, type=f.type, label=f.label, length=f.length,
                       external_id=f.external_id, unique=f.unique, picklist=f.picklist, reference_to=f.reference_to)


# The default org has every field and object revdaemon's flows write, as `revdaemon setup salesforce` makes them
# (revdaemon/setup/catalog.py: one definition for both).
DEFAULT_CUSTOM_FIELDS: tuple[CustomField, ...] = tuple(_sim_field(f) for f in catalog.CUSTOM_FIELDS)
BILLING_EVENT = catalog.BILLING_EVENT
DEFAULT_CUSTOM_OBJECTS: tuple[CustomObject, ...] = tuple(
    CustomObject(name=o.name, label=o.label, label_plural=o.label_plural, fields=tuple(_sim_field(f) for f in o.fields))
    for o in catalog.CUSTOM_OBJECTS)


@dataclass(kw_only=True)
class SalesforceSimSettings:
    consumer_key: str = DEFAULT_CONSUMER_KEY
    consumer_secret: str = DEFAULT_CONSUMER_SECRET
    username: str = DEFAULT_USERNAME  # the JWT `sub` that has approved the app, and the client-credentials Run As user
    jwt_public_key_pem: str | None = None  # None: the JWT bearer flow answers invalid_grant for every assertion
    client_credentials_enabled: bool = True  # False: "no client credentials user enabled", §1.3
    refresh_tokens: tuple[str, ...] = ()  # refresh tokens the org accepts (JWT/client credentials never issue one)
    token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS
    daily_limit: int = DAILY_LIMIT
    per_second_cap: int | None = None  # None: no cap
    page_size: int = PAGE_SIZE
    max_query_cursors: int = 10  # open query locators per user, §2.1
    custom_fields: tuple[CustomField, ...] = DEFAULT_CUSTOM_FIELDS
    custom_objects: tuple[CustomObject, ...] = DEFAULT_CUSTOM_OBJECTS
    removed_fields: tuple[str, ...] = ()  # "Object.Field" entries hidden from the schema (schema drift)
    # "Object.Field" entries that exist in the org but that the integration user's profile does not grant (field-
    # level security): absent from describe, queries and writes until an assigned permission set grants them.
    ungranted_fields: tuple[str, ...] = ()
    faults: FaultSettings = field(default_factory=FaultSettings)
    cdc_entities: tuple[str, ...] = CDC_ENTITIES  # objects selected for Change Data Capture
    event_retention_hours: float = EVENT_RETENTION_HOURS
    pubsub_keepalive_seconds: float = KEEPALIVE_SECONDS
    seed: int = 1
    clock: Callable[[], float] = time.time  # unix seconds; tests may inject a fake clock
