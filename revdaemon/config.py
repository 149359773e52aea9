"""Settings: config.yaml, overridden by credential files, overridden by REVDAEMON_* environment variables.

Precedence, highest first:
  1. environment variables `REVDAEMON_<SECTION>__<KEY>` (nested with `__`);
  2. files in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) named `<section>__<key>`,
     for example `nue__api_key` or `salesforce__private_key`;
  3. `config.yaml` (path from `--config` or `REVDAEMON_CONFIG`);
  4. the defaults below.

Every problem is reported with its dotted key path and the reason, all at once, as a `ConfigError`.
Relative paths in the file are resolved against the file's own directory, so a unit started from `/`
finds the same state directory as an operator in the checkout.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import date
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from pydantic_settings.sources import EnvSettingsSource, NestedSecretsSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from revdaemon.errors import ConfigError

CONFIG_ENV_VAR = "REVDAEMON_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")
SF_COLLECTION_MAX = 200  # salesforce-api.md §2.3: sObject Collections take at most 200 records

# The environment `load_settings` was given; tests pass their own instead of os.environ.
_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("revdaemon_config_environ")

_HTTP_URL = TypeAdapter(HttpUrl)
_SF_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?$")
_NUE_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*|\[\])*$")


def _http_url(value: str) -> str:
    """Validate an http(s) URL and keep it as text without a trailing slash."""
    _HTTP_URL.validate_python(value)
    return value.rstrip("/")


def _crontab(value: str) -> str:
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"not a valid crontab expression: {exc}") from exc
    return value


def _salesforce_name(value: str) -> str:
    if not _SF_NAME.match(value):
        raise ValueError(f"{value!r} is not a Salesforce API name (letters, digits, underscores)")
    return value


def _nue_path(value: str) -> str:
    if not _NUE_PATH.match(value):
        raise ValueError(f"{value!r} is not a Nue field path (name, name.child, lines[].name)")
    return value


def _no_nul(value: Any) -> Any:
    if "\x00" in str(value):
        raise ValueError("a path cannot contain a NUL character")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from None
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]


def _record_url_pattern(value: str) -> str:
    """An http(s) URL with {id}, and no placeholder but {object}, {object_lower} and {id}."""
    import string

    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    if "id" not in names:
        raise ValueError("must contain {id}, e.g. https://app.nue.io/{object_lower}s/{id}")
    unknown = sorted(names - {"id", "object", "object_lower"})
    if unknown:
        raise ValueError(f"knows only {{object}}, {{object_lower}} and {{id}}, not {unknown}")
    _http_url(value.format(id="x", object="X", object_lower="x"))
    return value
Crontab = Annotated[str, AfterValidator(_crontab)]
SalesforceName = Annotated[str, AfterValidator(_salesforce_name)]
NueFieldPath = Annotated[str, AfterValidator(_nue_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SalesforceAuth(StrEnum):
    JWT = "jwt"
    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"


class SalesforceSettings(_Section):
    login_url: HttpURL = "https://login.salesforce.com"
    instance_url: HttpURL | None = None  # learned from the token response when unset
    api_version: Annotated[str, Field(pattern=r"^\d{2,3}\.0$")] = "62.0"
    auth: SalesforceAuth = SalesforceAuth.JWT
    client_id: str | None = None  # the connected app's consumer key
    # salesforce-api.md §1.2: the JWT `aud` is the login host, never My Domain; test.salesforce.com for sandboxes.
    jwt_audience: HttpURL = "https://login.salesforce.com"
    client_secret: SecretStr | None = None
    username: str | None = None  # the JWT `sub`
    private_key: SecretStr | None = None  # PEM text, usually a credential file
    private_key_file: Path | None = None
    refresh_token: SecretStr | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # A create is not repeated when its answer is lost, so it gets more time to answer than a read or an update.
    create_timeout_seconds: Annotated[float, Field(gt=0)] = 90.0


class WebhookAuth(StrEnum):
    SIGNATURE = "signature"  # Nue-Signature: t=..,v1=HMAC-SHA256 (nue-api.md, assumed)
    PATH_TOKEN = "path_token"  # /webhooks/nue/<token>
    NONE = "none"  # explicit opt-out; warned about at start


class NueSettings(_Section):
    base_url: HttpURL = "https://api.nue.io"
    api_key: SecretStr | None = None
    connected_to_salesforce: bool = True  # ids of products and price book entries are Salesforce ids
    webhook_auth: WebhookAuth = WebhookAuth.SIGNATURE
    webhook_secret: SecretStr | None = None
    webhook_path_token: SecretStr | None = None
    signature_tolerance_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    create_timeout_seconds: Annotated[float, Field(gt=0)] = 90.0  # creates and activations (see salesforce.)


class ListenerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    keepalive_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100


class ApiRate(_Section):
    requests_per_second: Annotated[float, Field(gt=0)] = 10.0
    burst: Annotated[int, Field(ge=1)] = 10
    max_concurrency: Annotated[int, Field(ge=1, le=100)] = 4


class LimitsSettings(_Section):
    salesforce: ApiRate = ApiRate(requests_per_second=20.0, burst=20, max_concurrency=8)
    nue: ApiRate = ApiRate()
    # Past this share of the org's daily API allocation only real-time work proceeds.
    salesforce_daily_budget_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    batch_size: Annotated[int, Field(ge=1, le=SF_COLLECTION_MAX)] = SF_COLLECTION_MAX
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 900.0


class ScheduleSettings(_Section):
    salesforce_poll_seconds: Annotated[float, Field(ge=5)] = 60.0
    nue_poll_seconds: Annotated[float, Field(ge=5)] = 120.0
    # Re-read windows for late commits: a record's time is stamped when its transaction starts and a long one
    # commits minutes later (salesforce-api.md §4.1: up to about 10 min). Re-reads are deduplicated by
    # (id, modified time), so the window costs calls, never duplicate events.
    poll_overlap_seconds: Annotated[float, Field(ge=0)] = 600.0  # the Salesforce poll
    nue_poll_overlap_seconds: Annotated[float, Field(ge=0)] = 600.0
    renewal_window_days: Annotated[int, Field(ge=1, le=730)] = 90
    renewal_scan_cron: Crontab = "0 6 * * *"
    reconciliation_cron: Crontab = "30 2 * * *"
    sweep_cron: Crontab = "0 5 * * *"  # won deals on or after the cut-off still without a Nue order
    prune_cron: Crontab = "30 3 * * *"  # the store's retention (store.retention_days), by the leader
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"


class ObjectMapping(_Section):
    salesforce_object: SalesforceName
    nue_object: str
    external_id_field: SalesforceName | None = None
    fields: dict[SalesforceName, NueFieldPath] = Field(default_factory=dict)


def _field_spec(value: str) -> str:
    from revdaemon.mapping.fields import parse_spec

    parse_spec(value)  # raises ValueError with the reason; pydantic reports it under the key path
    return value


FieldSpecText = Annotated[str, AfterValidator(_field_spec)]
MAPPABLE_FLOWS = ("subscription_status", "billing_events", "renewals", "onboarding")  # take extra fields


class SyncStatusSettings(_Section):
    """Fields on a Salesforce object that show revdaemon's sync status (engine/sync_status.py)."""

    status_field: SalesforceName | None = None  # a picklist or text field: synced_value / error_value
    synced_at_field: SalesforceName | None = None  # a date/time field: when revdaemon last wrote the record
    error_field: SalesforceName | None = None  # a long text field: why the last sync failed
    synced_value: str = "Synced"
    error_value: str = "Error"


class MappingSettings(_Section):
    version: Annotated[int, Field(ge=1)] = 1
    objects: dict[str, ObjectMapping] = Field(default_factory=dict)
    lookups: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Extra Salesforce fields a flow writes with its own write: {flow: {Field__c: "path:..."}} (mapping/fields.py)
    flows: dict[str, dict[SalesforceName, FieldSpecText]] = Field(default_factory=dict)
    # Sync status shown on the Salesforce record, per object: {Opportunity: {status_field: ..., ...}}; off when empty
    sync_status: dict[SalesforceName, SyncStatusSettings] = Field(default_factory=dict)


class ClosedWonFlowSettings(_Section):
    enabled: bool = True
    activate: bool = True  # activate the draft order (Nue then creates subscriptions and an invoice)
    term_months: Annotated[int, Field(ge=1, le=120)] = 12
    order_marker_field: SalesforceName | None = None  # a custom Nue order field for the opportunity id
    # The go-live cut-off: a deal won (CloseDate) before it is only ordered by an explicit backfill. None: the
    # day the state store was created (recorded in it, so it does not move).
    won_since: date | None = None


class SubscriptionStatusFlowSettings(_Section):
    enabled: bool = True
    status_lookup: str = "subscription_status"  # the mapping.lookups table: Nue status -> picklist value
    # A field edited in Salesforce since revdaemon last wrote it: open a conflict for a person (conflict),
    # or write Nue's value over it (overwrite). A reconciliation repair always writes.
    on_hand_edit: Literal["conflict", "overwrite"] = "conflict"
    # The opportunity whose order made subscriptions also shows their status, MRR and next renewal.
    on_opportunity: bool = True


class BillingEventsFlowSettings(_Section):
    enabled: bool = True
    target: Literal["custom_object", "task"] = "custom_object"


class OnboardingTask(_Section):
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    due_days: Annotated[int, Field(ge=0, le=365)]


class OnboardingFlowSettings(_Section):
    enabled: bool = True
    # A customer with no Salesforce account (made in Nue) gets one, looked up first (flows/customer_records.py).
    create_accounts: bool = True
    # The customer's Nue contacts upserted as Contacts of its account (Contact.Nue_Contact_Id__c).
    contacts: bool = True
    tasks: tuple[OnboardingTask, ...] = (
        OnboardingTask(subject="Send welcome pack", due_days=1),
        OnboardingTask(subject="Kick-off call", due_days=2),
        OnboardingTask(subject="Configure tenant", due_days=7),
    )


class AmendmentsFlowSettings(_Section):
    enabled: bool = True
    opportunity: bool = True  # a Closed Won amendment opportunity per activated change order (Nue_Amendment_Key__c)
    contract: bool = True  # the original deal's Contract (ContractTerm, MRR__c), where the org uses Contracts
    amount_basis: Literal["acv", "mrr"] = "acv"  # the opportunity's Amount: the ACV (MRR x 12) or the MRR delta
    type_lookup: str = "amendment_type"  # the mapping.lookups table: kind (upsell, downsell, ...) -> Type


class ReconciliationFlowSettings(_Section):
    enabled: bool = True
    repair: bool = False  # queue a flow-2 run for each account whose MRR fields drifted
    tolerance: Annotated[float, Field(ge=0)] = 0.01
    # in state_dir; the newest report, for operators and the console
    report_file: Annotated[str, AfterValidator(_no_nul)] = "reconciliation.json"


class Toggle(_Section):
    enabled: bool = True


class FlowsSettings(_Section):
    """Each flow can be switched off where Nue's own Salesforce sync already covers it."""

    closed_won: ClosedWonFlowSettings = ClosedWonFlowSettings()
    subscription_status: SubscriptionStatusFlowSettings = SubscriptionStatusFlowSettings()
    renewals: Toggle = Toggle()
    billing_events: BillingEventsFlowSettings = BillingEventsFlowSettings()
    amendments: AmendmentsFlowSettings = AmendmentsFlowSettings()
    onboarding: OnboardingFlowSettings = OnboardingFlowSettings()
    quotes: Toggle = Toggle()
    reconciliation: ReconciliationFlowSettings = ReconciliationFlowSettings()


class AlertSettings(_Section):
    # A Slack-compatible incoming webhook; a secret (its token is in the path): set it as the credential
    # file alerts__webhook_url or REVDAEMON_ALERTS__WEBHOOK_URL, not in config.yaml.
    webhook_url: SecretStr | None = None
    window_seconds: Annotated[float, Field(ge=0, le=86400)] = 900.0  # one post per (kind, key) per window
    max_per_minute: Annotated[int, Field(ge=1, le=600)] = 10
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    budget_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8  # share of the Salesforce daily allocation
    blocks: bool = False  # also Slack Block Kit (others read only "text")


class EngineSettings(_Section):
    workers: Annotated[int, Field(ge=1, le=32)] = 1  # one worker, large claims: fewest API calls (config.yaml)
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 1000
    lease_seconds: Annotated[float, Field(ge=5)] = 300.0
    idle_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=300)] = 10.0
    # A create whose answer was lost (timeout, dropped connection, 5xx) may still commit: it is looked up, and
    # made again only if absent, no sooner than this after it was sent. Longer than any create timeout.
    settle_seconds: Annotated[float, Field(ge=0)] = 180.0


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, JSON otherwise


class ConsoleSettings(_Section):
    """The operators' web console, on its own admin listener (never the webhook port)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8788
    # Who may log in: name -> token. Secrets: set them as the credential file console__admins (a JSON
    # object) or REVDAEMON_CONSOLE__ADMINS, not in config.yaml. The name is the actor in the audit log.
    admins: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")], SecretStr] = {}
    behind_https: bool = False  # served through a TLS proxy: the session cookie gets Secure
    session_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60)] = 8 * 60
    login_attempts_per_minute: Annotated[int, Field(ge=1, le=100)] = 5  # failed logins per client address
    # Where a Nue record opens in Nue's app: a URL with {object} (Customer, Order, Subscription, Invoice, ...),
    # {object_lower} and {id}. Nue does not document its app's URLs, so there are no Nue links until it is set.
    nue_record_url: Annotated[str, AfterValidator(_record_url_pattern)] | None = None


TOPIC_PATTERN = r"^/data/[A-Za-z][A-Za-z0-9_]*$"  # /data/OpportunityChangeEvent, /data/ChangeEvents, a custom channel


def _pubsub_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in value:
        raise ValueError("must be host:port, e.g. api.pubsub.salesforce.com:7443")
    return value


class ChangeDataCaptureSettings(_Section):
    """Salesforce's Change Data Capture over the Pub/Sub API (salesforce-api.md §4.3): the real-time trigger, with
    the Salesforce poll as the net under it (engine/change_stream.py)."""

    enabled: bool = False
    endpoint: Annotated[str, AfterValidator(_pubsub_endpoint)] = "api.pubsub.salesforce.com:7443"
    tls: bool = True  # off only for a simulator on loopback: the session token travels in every call
    # Change event channels; each is one subscription with its own replay id. Opportunity changes feed flow 1.
    topics: Annotated[list[Annotated[str, Field(pattern=TOPIC_PATTERN)]], Field(min_length=1)] = [
        "/data/OpportunityChangeEvent"]
    # Events asked for at a time (FetchRequest.num_requested): at most 100 outstanding per subscription [doc: Pub/Sub
    # API, "Pull Subscription and Flow Control"].
    batch_size: Annotated[int, Field(ge=1, le=100)] = 100
    max_waiting: Annotated[int, Field(ge=1)] = 10_000  # inbox events waiting, past which no more are asked for
    # The Salesforce poll's interval while every subscription is healthy: it only catches what change events
    # cannot carry. While a stream is down, the poll runs at schedule.salesforce_poll_seconds again.
    poll_seconds_while_streaming: Annotated[float, Field(ge=5)] = 900.0

    @model_validator(mode="after")
    def _tls_only_off_on_loopback(self) -> ChangeDataCaptureSettings:
        host = self.endpoint.rpartition(":")[0].strip("[]")
        if not self.tls and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"tls: false sends the Salesforce session in clear text: only for a loopback endpoint, "
                             f"not {host}")
        return self


class MetricsListen(StrEnum):
    ADMIN = "admin"  # a listener of their own, metrics.host:metrics.port (loopback by default)
    WEBHOOK = "webhook"  # the webhook listener's port: whoever can send webhooks can read them
    OFF = "off"


class MetricsSettings(_Section):
    """Prometheus /metrics (event counts per type, API usage) and a /healthz with the pollers' errors: on an admin
    listener of their own, never the webhook port that faces Nue unless asked. Not behind the console: it is
    off by default, and a scraper does not log in."""

    listen: MetricsListen = MetricsListen.ADMIN
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8789  # 0: any free port (tests)


STORE_SCHEMES = ("postgresql", "postgres", "sqlite")


def _store_url(value: SecretStr) -> SecretStr:
    """A URL open_store takes. Its reasons never quote it: it may hold the database password."""
    url = value.get_secret_value()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise ValueError("not a valid URL (postgresql://user@host:5432/database or sqlite:///path)") from None
    if parts.scheme.lower() not in STORE_SCHEMES or "://" not in url:
        raise ValueError("must be postgresql://user@host:5432/database (or postgres://...) or sqlite:///path")
    if parts.scheme.lower() == "sqlite" and (not url.lower().startswith("sqlite:///") or len(url) == len("sqlite:///")):
        raise ValueError("a SQLite store URL is sqlite:///<path to the file> (sqlite:////<absolute path>)")
    return value


class StoreSettings(_Section):
    """Where the state is kept. Unset: the SQLite file state_dir/revdaemon.sqlite3 (one box)."""

    # postgresql://user:password@host:5432/database lets several replicas share one PostgreSQL database;
    # sqlite:///path names another SQLite file (relative to this file's directory). A secret, since it may hold
    # the database password: set it as the credential file store__url or REVDAEMON_STORE__URL.
    url: Annotated[SecretStr, AfterValidator(_store_url)] | None = None
    # This box among the replicas sharing a PostgreSQL store (unset: the host name). Its workers' claims carry
    # it, so it must differ between boxes and stay the same across restarts of one.
    replica_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")] | None = None
    # Done events' payloads, audit entries and settled intents older than this are pruned nightly (what exactly
    # once needs is kept whatever its age: store/retention.py); 0 keeps everything.
    retention_days: Annotated[int, Field(ge=0, le=36_500)] = 90


class Mode(StrEnum):
    LIVE = "live"
    SHADOW = "shadow"  # plan and record every write, send none (engine/shadow.py) until `shadow promote`


class ShadowSettings(_Section):
    """What shadow mode flags for a person to look at before going live."""

    edited_within_days: Annotated[int, Field(ge=0, le=365)] = 7  # a field a person changed this recently


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REVDAEMON_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        secrets_dir_missing="ok",
        secrets_prefix="",
        secrets_nested_delimiter="__",
    )

    state_dir: Annotated[Path, AfterValidator(_no_nul)] = Path("state")
    mode: Mode = Mode.LIVE
    shadow: ShadowSettings = ShadowSettings()
    salesforce: SalesforceSettings = SalesforceSettings()
    change_data_capture: ChangeDataCaptureSettings = ChangeDataCaptureSettings()
    nue: NueSettings = NueSettings()
    listener: ListenerSettings = ListenerSettings()
    limits: LimitsSettings = LimitsSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    mapping: MappingSettings = MappingSettings()
    flows: FlowsSettings = FlowsSettings()
    engine: EngineSettings = EngineSettings()
    alerts: AlertSettings = AlertSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    store: StoreSettings = StoreSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init kwargs; it ranks below env and credential files.
        assert isinstance(env_settings, EnvSettingsSource)
        return (_MappingEnvSource(env_settings), NestedSecretsSettingsSource(file_secret_settings), init_settings)

    @property
    def database_path(self) -> Path:
        return self.state_dir / "revdaemon.sqlite3"

    @property
    def store_target(self) -> Path | str:
        """What `open_store` takes: store.url when set (a URL that may hold a password: pass it on, never log
        it), else the SQLite file in state_dir."""
        return self.store.url.get_secret_value() if self.store.url is not None else self.database_path

    @property
    def shared_store(self) -> bool:
        """True when replicas on other boxes may share the store (PostgreSQL)."""
        return self.store.url is not None and not self.store.url.get_secret_value().startswith("sqlite")

    @property
    def store_display(self) -> str:
        """The state store for messages and logs: the SQLite file, or the URL with its password hidden."""
        if self.store.url is None:
            return str(self.database_path)
        return _without_password(self.store.url.get_secret_value())

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor to scrub wherever it appears."""
        values = [value for value in _walk_secrets(self) if value]
        if self.store.url is not None:
            # The whole URL is scrubbed as a SecretStr; its password alone can show up too (a driver's message).
            password = _url_password(self.store.url.get_secret_value())
            values += [password, unquote(password)] if password else []
        return values


class _MappingEnvSource(EnvSettingsSource):
    """The env source, reading the mapping handed to `load_settings` rather than os.environ."""

    def __init__(self, template: EnvSettingsSource) -> None:
        super().__init__(
            template.settings_cls,
            case_sensitive=template.case_sensitive,
            env_prefix=template.env_prefix,
            env_nested_delimiter=template.env_nested_delimiter,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get(os.environ)
        return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _url_password(url: str) -> str | None:
    """The password in the URL's user part, or else in a `password=` query parameter (libpq, asyncpg)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.password is not None:
        return parts.password
    return next((v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if k.lower() == "password"),
                None) or None


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a store URL that does not parse)"
    if parts.password is None and "password=" not in parts.query.lower():
        return url
    if parts.password is not None:
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[-1]}")
    # libpq and asyncpg also take the password as a query parameter (?password=...)
    query = "&".join(f"{k}=***" if k.lower() == "password" else f"{k}={v}" if sep else k
                     for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair))
    return parts._replace(query=query).geturl()


def _walk_secrets(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, dict):
            yield from (v.get_secret_value() for v in value.values() if isinstance(v, SecretStr))
        elif isinstance(value, BaseModel):
            yield from _walk_secrets(value)


# --- loading ----------------------------------------------------------------------------------------


def resolve_config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV_VAR):
        return Path(environ[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    credentials: bool = True,
) -> Settings:
    """Read, merge and validate the configuration, or raise `ConfigError` naming every bad key and where its
    value came from (an environment variable, a credential file, or the config file).

    `credentials=False` is for the commands that read the state store and call no API (status, events, ...):
    the API credentials are then neither required nor checked (nor is the JWT key file read), so an operator
    without the service's credential directory can still look. `run` and `check` keep the default."""
    env = os.environ if environ is None else environ
    explicit = bool(path) or bool(env.get(CONFIG_ENV_VAR))
    config_path = resolve_config_path(path, env)
    document = _read_yaml(config_path, required=explicit)
    source, missing = str(config_path), document is None
    document = document or {}
    # BaseSettings takes its own options as keywords (_secrets_dir, _env_prefix, _cli_parse_args...): a key of
    # the file must never become one, and a key that is not a string cannot be a keyword at all.
    unknown = [(str(key), _unknown_key((), str(key))) for key in document
               if not isinstance(key, str) or key.startswith("_")]
    document = {key: value for key, value in document.items() if isinstance(key, str) and not key.startswith("_")}
    base_dir = config_path.resolve().parent
    secrets_dir = env.get("CREDENTIALS_DIRECTORY") or None
    origins = _Origins(env, secrets_dir)
    token = _ENVIRON.set(env)
    try:
        settings = Settings(_secrets_dir=secrets_dir, **document)
    except ValidationError as exc:
        problems = unknown + _describe(exc)
        raise ConfigError(problems, source=source, origins=origins.of(problems), source_missing=missing) from None
    except SettingsError as exc:
        # e.g. REVDAEMON_LISTENER='{x': an environment value (or a credential file) that is not the JSON a
        # section needs; pydantic-settings names the field, the origin says which variable or file held it
        field = re.search(r'field "([^"]+)"', str(exc))
        problems = [(field[1], "not valid JSON") if field else ("environment", str(exc))]
        raise ConfigError(problems, source=source, origins=origins.of(problems), source_missing=missing) from None
    finally:
        _ENVIRON.reset(token)
    settings = _resolve_paths(settings, base_dir)
    problems = unknown + list(_cross_field_problems(settings))
    if credentials:
        problems += list(_credential_problems(settings))
    if problems:
        raise ConfigError(problems, source=source, origins=origins.of(problems), source_missing=missing)
    return settings


class _Origins:
    """Where a key's value came from, when not from the config file: an environment variable (the key itself,
    or the section it sits in as JSON) or, below it, a credential file. None: the file, or the default."""

    def __init__(self, environ: Mapping[str, str], secrets_dir: str | None) -> None:
        self._env = {name.upper(): name for name in environ if name.upper().startswith("REVDAEMON_")}
        self._secrets_dir = Path(secrets_dir) if secrets_dir else None

    def of(self, problems: list[tuple[str, str]]) -> dict[str, str]:
        found = {key: self.origin(key) for key, _ in problems}
        return {key: origin for key, origin in found.items() if origin is not None}

    def origin(self, key: str) -> str | None:
        parts = key.split(".")
        prefixes = ["__".join(parts[:n]) for n in range(len(parts), 0, -1)]
        for prefix in prefixes:
            name = self._env.get(f"REVDAEMON_{prefix}".upper())
            if name is not None:
                return f"environment variable {name}"
        for prefix in prefixes if self._secrets_dir is not None else ():
            assert self._secrets_dir is not None
            if _is_file(self._secrets_dir / prefix):
                return f"credential file {self._secrets_dir / prefix}"
        return None


def _unknown_key(parent: tuple[str, ...], key: str) -> str:
    """'unknown key', with the nearest known key at that level when there is one ('listner' -> 'listener')."""
    near = difflib.get_close_matches(key, _known_keys(parent), n=1)
    return f"unknown key {key!r} — did you mean {near[0]!r}?" if near else "unknown key"


def _known_keys(parent: tuple[str, ...]) -> list[str]:
    """The field names under a dotted path of the settings (a dict's own keys are skipped over: objects.<name>)."""
    annotation: Any = Settings
    for part in parent:
        model = _model_in(annotation)
        if model is not None and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        elif get_origin(_unwrapped(annotation)) is dict:
            annotation = get_args(_unwrapped(annotation))[1]
        else:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _unwrapped(annotation: Any) -> Any:
    """`X` from `Annotated[X, ...]` and from `X | None`."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return _unwrapped(args[0])
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    annotation = _unwrapped(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _read_yaml(path: Path, *, required: bool) -> dict[str, Any] | None:
    """The document, {} when empty, or None when there is no file (allowed unless it was named)."""
    if not path.exists():
        if required:
            raise ConfigError([("config", f"no config file found at {path}")])
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([("config", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([("config", f"not UTF-8 text: byte {raw[exc.start]:#04x} at line {line}")],
                          source=str(path)) from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([("config", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")],
                          source=str(path)) from None
    except (ValueError, RecursionError):
        # an integer of thousands of digits (int() refuses those), or nesting deeper than the parser allows
        raise ConfigError([("config", "not valid YAML: a number too large or nesting too deep")],
                          source=str(path)) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError([("config", "the top level must be a mapping of sections")], source=str(path))
    return document


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key written twice in one mapping: YAML requires unique keys, and PyYAML would
    keep the last silently (a section written twice would lose the first one's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges may repeat keys on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_SECRET_WORDS = ("secret", "key", "token", "password")
_SECRET_KEYS = ("store.url", "alerts.webhook_url")  # secrets whose names say nothing of it


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "config"
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            loc = tuple(str(part) for part in error["loc"])
            reason = _unknown_key(loc[:-1], loc[-1])
        elif error["type"] == "missing":
            reason = "required key is missing"
        elif (not any(word in key.lower() for word in _SECRET_WORDS) and not key.startswith(_SECRET_KEYS)
              and _is_scalar(error.get("input"))):
            reason = f"{reason} (got {error['input']!r})"
        problems.append((key, reason))
    return problems


def _is_scalar(value: object) -> bool:
    if isinstance(value, int) and value.bit_length() > 256:
        return False  # repr() refuses integers of thousands of digits (ValueError); too long to quote anyway
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80


def _resolve_paths(settings: Settings, base_dir: Path) -> Settings:
    def absolute(path: Path) -> Path:
        return path if path.is_absolute() else base_dir / path

    updates: dict[str, Any] = {"state_dir": absolute(settings.state_dir)}
    if settings.salesforce.private_key_file is not None:
        updates["salesforce"] = settings.salesforce.model_copy(
            update={"private_key_file": absolute(settings.salesforce.private_key_file)}
        )
    url = settings.store.url.get_secret_value() if settings.store.url is not None else ""
    if url.lower().startswith("sqlite:///"):
        path = absolute(Path(url[len("sqlite:///"):]))
        updates["store"] = settings.store.model_copy(update={"url": SecretStr(f"sqlite:///{path}")})
    return settings.model_copy(update=updates)


NUE_SUBSCRIPTION_STATUSES = ("Active", "Ended", "Expired", "Canceled", "Scheduled for cancellation")  # nue-api.md
MIN_SECRET = {"nue.api_key": 8, "nue.webhook_secret": 16, "salesforce.client_secret": 8}
LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def _cross_field_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """Rules that span keys, whatever the command: no credentials in clear text, listeners apart, lookups whole.
    What authenticating needs is `_credential_problems`."""
    sf = settings.salesforce
    for key, timeout in (("salesforce.create_timeout_seconds", sf.create_timeout_seconds),
                         ("nue.create_timeout_seconds", settings.nue.create_timeout_seconds)):
        if settings.engine.settle_seconds < timeout:
            # A lookup sooner than the create's own timeout can miss a create that is still being committed.
            yield ("engine.settle_seconds", f"must be at least {key} ({timeout:g}): a create whose answer was "
                   f"lost is looked up only after it can no longer be in flight")
    for key, url in (("salesforce.login_url", sf.login_url), ("salesforce.instance_url", sf.instance_url),
                     ("nue.base_url", settings.nue.base_url)):
        parts = urlsplit(url) if url else None
        if parts is not None and parts.scheme == "http" and parts.hostname not in LOOPBACK:
            yield key, "must be https: credentials would cross the network in clear text (http only on loopback)"
    if sf.auth is SalesforceAuth.CLIENT_CREDENTIALS and urlsplit(sf.login_url).hostname in LOGIN_HOSTS:
        yield "salesforce.login_url", ("client_credentials must use your My Domain URL "
                                       "(https://<domain>.my.salesforce.com), not the shared login host")
    console = settings.console
    if console.enabled and console.host not in LOOPBACK and not console.behind_https:
        yield "console.host", ("off loopback the console must be behind a TLS proxy (console.behind_https: "
                               "true): tokens and session cookies would cross the network in clear text")

    yield from _port_clashes(settings)

    status_table = settings.flows.subscription_status.status_lookup
    if settings.flows.subscription_status.enabled:
        # Without the table the flow's built-in values apply; a table given must cover every status.
        table = settings.mapping.lookups.get(status_table)
        if table is not None:
            unmapped = [s for s in NUE_SUBSCRIPTION_STATUSES if s not in table]
            if unmapped:
                yield f"mapping.lookups.{status_table}", f"no value for Nue statuses: {', '.join(unmapped)}"
    for flow_name, specs in settings.mapping.flows.items():
        if flow_name not in MAPPABLE_FLOWS:
            yield f"mapping.flows.{flow_name}", f"no such flow takes extra fields (known: {', '.join(MAPPABLE_FLOWS)})"
            continue
        for field_name, text in specs.items():
            if text.startswith("lookup:") and text.split(":")[1] not in settings.mapping.lookups:
                yield (f"mapping.flows.{flow_name}.{field_name}",
                       f"no lookup table mapping.lookups.{text.split(':')[1]}")
    for name, lookup in settings.mapping.lookups.items():
        if not lookup:
            yield f"mapping.lookups.{name}", "a lookup table must have at least one entry"


def _credential_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """What the APIs, the webhooks and the console need to authenticate: only the commands that call an API
    or run the daemon ask for it (load_settings(credentials=True))."""
    sf = settings.salesforce
    for key, minimum in MIN_SECRET.items():
        section, name = key.split(".")
        secret = getattr(getattr(settings, section), name)
        if secret is not None and len(secret.get_secret_value()) < minimum:
            yield key, f"too short: a secret needs at least {minimum} characters"
    needs: dict[SalesforceAuth, list[str]] = {
        SalesforceAuth.JWT: ["client_id", "username"],
        SalesforceAuth.CLIENT_CREDENTIALS: ["client_id", "client_secret"],
        SalesforceAuth.REFRESH_TOKEN: ["client_id", "refresh_token"],
    }
    for key in needs[sf.auth]:
        if getattr(sf, key) is None:
            yield f"salesforce.{key}", f"required when salesforce.auth is {sf.auth.value!r}"
    if sf.auth is SalesforceAuth.JWT:
        if sf.private_key is None and sf.private_key_file is None:
            yield "salesforce.private_key_file", "jwt auth needs private_key_file or a private_key credential"
        elif sf.private_key_file is not None and not _is_file(sf.private_key_file):
            yield "salesforce.private_key_file", f"file not found: {sf.private_key_file}"
        else:
            key_name = "salesforce.private_key" if sf.private_key is not None else "salesforce.private_key_file"
            try:
                pem = (sf.private_key.get_secret_value().encode() if sf.private_key is not None
                       else sf.private_key_file.read_bytes() if sf.private_key_file is not None else b"")
            except OSError as exc:  # e.g. a key file only root may read
                yield key_name, f"cannot read {sf.private_key_file}: {exc.strerror}"
            else:
                problem = _private_key_problem(pem)
                if problem:
                    yield key_name, problem

    nue = settings.nue
    if nue.api_key is None:
        yield "nue.api_key", "required: set it in a credential file nue__api_key or REVDAEMON_NUE__API_KEY"
    if nue.webhook_auth is WebhookAuth.SIGNATURE and nue.webhook_secret is None:
        yield "nue.webhook_secret", "required when nue.webhook_auth is 'signature'"
    if nue.webhook_auth is WebhookAuth.PATH_TOKEN:
        token = nue.webhook_path_token.get_secret_value() if nue.webhook_path_token else ""
        if len(token) < 16:
            yield "nue.webhook_path_token", "required, at least 16 characters, when webhook_auth is 'path_token'"

    console = settings.console
    if console.enabled:
        if not console.admins:
            yield "console.admins", ("required when console.enabled: name -> token, as the credential file "
                                     "console__admins or REVDAEMON_CONSOLE__ADMINS")
        for name, admin_token in console.admins.items():
            if len(admin_token.get_secret_value()) < 24:
                yield f"console.admins.{name}", "too short: a console token needs at least 24 characters"


def _port_clashes(settings: Settings) -> Iterator[tuple[str, str]]:
    """Two of the daemon's listeners on one port: the second could not bind, and the daemon would not start."""
    listening = [("listener.port", settings.listener.host, settings.listener.port)]
    if settings.console.enabled:
        listening.append(("console.port", settings.console.host, settings.console.port))
    if settings.metrics.listen is MetricsListen.ADMIN:
        listening.append(("metrics.port", settings.metrics.host, settings.metrics.port))
    for i, (key, host, port) in enumerate(listening):
        for other_key, other_host, other_port in listening[:i]:
            if port != 0 and port == other_port and _may_share_address(host, other_host):
                yield key, f"the same port as {other_key} ({port}): two listeners cannot share one"


def _may_share_address(a: str, b: str) -> bool:
    """Whether two listen hosts can claim the same socket: one address, any address, or loopback under two names
    (localhost binds both 127.0.0.1 and ::1; telling 127.0.0.1 from ::1 is not worth a subtler rule)."""
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    return a == b or a in ANY_ADDRESS or b in ANY_ADDRESS or (a in LOOPBACK and b in LOOPBACK)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, say: no such file either
        return False


def _private_key_problem(pem: bytes) -> str | None:
    """Why this is not an RSA private key that can sign RS256 assertions, or None."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        return f"not an unencrypted PEM private key ({exc})"
    if not isinstance(key, rsa.RSAPrivateKey):
        return "not an RSA key: Salesforce's JWT bearer flow signs with RS256"
    return None
