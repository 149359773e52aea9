"""The Nue simulator's settings: every assumption of nue-api.md that can vary sits behind one of these."""

from __future__ import annotations

from dataclasses import dataclass, field

from revdaemon.sandbox.lost_answers import parse_patterns

WEBHOOK_AUTH_MODES = ("signature", "path_token", "none")
ERROR_BODY_STYLES = ("standard", "message_only", "error_only")
SINGLE_RECORD_SHAPES = ("list", "object")
EXTERNAL_ID_SYNC = ("on_create", "on_activation", "never")
APPLIED_RATES = ("applied_drop_rate", "applied_503_rate", "applied_504_rate", "applied_slow_rate")  # draw order


@dataclass(kw_only=True)
class NueSimSettings:
    seed: int = 1
    api_key: str = "sandbox-nue-api-key"
    # Keys that authenticate but may only read: writes with them get 403.
    read_only_api_keys: tuple[str, ...] = ()
    # Tenant: connected to Salesforce (catalog and user ids are the seed's Salesforce ids, a customer's
    # externalId its Account id) or standalone (deterministic UUIDs for everything, externalId stays null).
    connected_to_salesforce: bool = True
    # When Nue's own Salesforce sync fills externalId of a customer created through the API with a
    # salesAccountId [doc: "on order activation, or continuously by a setting"].
    external_id_sync: str = "on_activation"

    # Wire assumptions [assumed in nue-api.md], each switchable.
    error_body: str = "standard"  # standard {"status","message","errorCode","errorId"} | message_only | error_only
    single_record_shape: str = "list"  # data of single-record reads: [record] (data[0]) or the record itself
    graphql_enabled: bool = True
    retry_after_seconds: int = 1
    max_page_limit: int = 500
    max_customers_per_create: int = 200
    tax_rate_percent: str = "0"  # applied when an order asks options.calculateTax

    # Faults on API requests, deterministic for the seed (draws happen in arrival order).
    rate_429: float = 0.0
    error_rate: float = 0.0  # 500 / 502 (HTML) / 503
    latency_ms: float = 0.0
    # Faults after the request is applied (lost_answers.py): the write commits, then its answer is lost or
    # late. Only 2xx answers to targeted requests are eligible; one draw per such request (from its own
    # seeded generator) is split across these rates in this order, after any `applied_next` script.
    applied_drop_rate: float = 0.0  # close the connection without a complete answer
    applied_503_rate: float = 0.0  # answer 503 (the JSON error body) instead
    applied_504_rate: float = 0.0  # answer a gateway's 504 page (HTML) instead
    applied_slow_rate: float = 0.0  # hold the real answer `applied_slow_seconds`
    applied_slow_seconds: float = 5.0
    applied_writes_only: bool = True  # only POST/PATCH/PUT/DELETE, not the read-only POSTs (gate.py)
    # "[METHOD ]/glob" patterns of the request path, e.g. ("POST /orders", "POST /customers"); empty: all.
    applied_paths: tuple[str, ...] = ()

    # Outgoing webhooks.
    webhook_targets: list[str] = field(default_factory=list)
    webhook_auth: str = "signature"  # signature | path_token | none
    webhook_secret: str = "sandbox-webhook-secret"
    webhook_path_token: str = "sandbox-path-token"
    webhook_event_types: tuple[str, ...] | None = None  # None: every type
    webhook_duplicate_rate: float = 0.0
    webhook_delay_rate: float = 0.0
    webhook_delay_seconds: float = 0.2
    webhook_reorder_rate: float = 0.0
    # A reordered event is held this long, so the events published meanwhile overtake it.
    webhook_reorder_hold_seconds: float = 0.5
    webhook_retry_backoff_seconds: float = 0.5  # doubles per attempt
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 5.0

    def validate(self) -> None:
        checks = (
            ("webhook_auth", self.webhook_auth, WEBHOOK_AUTH_MODES),
            ("error_body", self.error_body, ERROR_BODY_STYLES),
            ("single_record_shape", self.single_record_shape, SINGLE_RECORD_SHAPES),
            ("external_id_sync", self.external_id_sync, EXTERNAL_ID_SYNC),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name in ("rate_429", "error_rate", "webhook_duplicate_rate", "webhook_delay_rate",
                     "webhook_reorder_rate", *APPLIED_RATES):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value!r}")
        if sum(getattr(self, name) for name in APPLIED_RATES) > 1.0:
            raise ValueError(f"{', '.join(APPLIED_RATES)} sum to at most 1")
        parse_patterns(self.applied_paths)
