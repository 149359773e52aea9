"""Simulator settings: credentials, limits, custom schema and faults. Defaults match the daemon's sandbox config."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_CONSUMER_KEY = "sandbox-consumer-key"
DEFAULT_CONSUMER_SECRET = "sandbox-consumer-secret"
DEFAULT_USERNAME = "integration@revdaemon.sandbox"
DAILY_LIMIT = 15_000  # Developer Edition allocation, salesforce-api.md §3.1
PAGE_SIZE = 2_000  # default query batch, salesforce-api.md §2.1
TOKEN_LIFETIME_SECONDS = 7_200  # sessionSecondsValid 7200, salesforce-api.md §1.4


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


def _f(obj: str, name: str, type_: str = "string", *, label: str, length: int = 255, external_id: bool = False,
       unique: bool = False, picklist: tuple[str, ...] = (), reference_to: str | None = None) -> CustomField:
    return CustomField(object=obj, name=name, type=type_, label=label, length=length, external_id=external_id,
                       unique=unique, picklist=picklist, reference_to=reference_to)


DEFAULT_CUSTOM_FIELDS: tuple[CustomField, ...] = (
    _f("Opportunity", "Nue_Order_Id__c", external_id=True, label="Nue Order Id"),
    _f("Opportunity", "Nue_Order_Number__c", label="Nue Order Number"),
    _f("Opportunity", "Nue_Sync_Status__c", "picklist", picklist=("Pending", "Synced", "Error"),
       label="Nue Sync Status"),
    _f("Opportunity", "Nue_Sync_Error__c", "textarea", length=32_768, label="Nue Sync Error"),
    _f("Opportunity", "Nue_Last_Synced_At__c", "datetime", label="Nue Last Synced At"),
    _f("Account", "Nue_Sync_Status__c", "picklist", picklist=("Pending", "Synced", "Error"), label="Nue Sync Status"),
    _f("Account", "Nue_Sync_Error__c", "textarea", length=32_768, label="Nue Sync Error"),
    _f("Account", "Nue_Last_Synced_At__c", "datetime", label="Nue Last Synced At"),
    _f("Account", "Nue_Customer_Id__c", external_id=True, unique=True, label="Nue Customer Id"),
    _f("Account", "MRR__c", "currency", label="MRR"),
    _f("Account", "ARR__c", "currency", label="ARR"),
    _f("Account", "Subscription_Status__c", "picklist",
       picklist=("Active", "Trial", "Past Due", "Canceled", "Churned"), label="Subscription Status"),
    _f("Account", "Next_Renewal_Date__c", "date", label="Next Renewal Date"),
    _f("Account", "Customer_Success_Manager__c", "reference", reference_to="User",
       label="Customer Success Manager"),
    _f("Account", "Entitlements__c", "textarea", length=32_768, label="Entitlements"),
    _f("Account", "Last_Nue_Order__c", label="Last Nue Order"),
    # Renewals: one opportunity per subscription term, found again by this key.
    _f("Opportunity", "Nue_Renewal_Key__c", external_id=True, unique=True, label="Nue Renewal Key"),
    _f("Opportunity", "Nue_Subscription__c", label="Nue Subscription"),
    _f("Opportunity", "Expansion_Signal__c", "boolean", label="Expansion Signal"),
    _f("Opportunity", "Subscription_Status__c", "picklist",
       picklist=("Active", "Trial", "Past Due", "Canceled", "Churned"), label="Subscription Status"),
    # Quotes reflected on the opportunity, and their lines found again by key.
    _f("Opportunity", "Nue_Quote_Id__c", label="Nue Quote Id"),
    _f("Opportunity", "Nue_Quote_Version__c", "double", label="Nue Quote Version"),
    _f("Opportunity", "Nue_Quote_Total__c", "currency", label="Nue Quote Total"),
    _f("Opportunity", "Nue_Quote_Discount__c", "percent", label="Nue Quote Discount"),
    _f("OpportunityLineItem", "Nue_Line_Key__c", external_id=True, unique=True, label="Nue Line Key"),
)

BILLING_EVENT = "Nue_Billing_Event__c"
DEFAULT_CUSTOM_OBJECTS: tuple[CustomObject, ...] = (
    CustomObject(
        name=BILLING_EVENT, label="Nue Billing Event", label_plural="Nue Billing Events",
        fields=(
            _f(BILLING_EVENT, "Nue_Event_Key__c", external_id=True, unique=True, label="Nue Event Key"),
            _f(BILLING_EVENT, "Account__c", "reference", reference_to="Account", label="Account"),
            _f(BILLING_EVENT, "Invoice_Number__c", label="Invoice Number"),
            _f(BILLING_EVENT, "Amount__c", "currency", label="Amount"),
            _f(BILLING_EVENT, "Status__c", "picklist", picklist=("Posted", "Paid", "Overdue", "Void"),
               label="Status"),
            _f(BILLING_EVENT, "Due_Date__c", "date", label="Due Date"),
            _f(BILLING_EVENT, "Balance__c", "currency", label="Balance"),
            _f(BILLING_EVENT, "Invoice_Status__c", label="Invoice Status"),
            _f(BILLING_EVENT, "Payment_Status__c", label="Payment Status"),
            _f(BILLING_EVENT, "Failure_Detail__c", "textarea", length=32_768, label="Failure Detail"),
        ),
    ),
)


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
    seed: int = 1
    clock: Callable[[], float] = time.time  # unix seconds; tests may inject a fake clock
