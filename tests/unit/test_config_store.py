"""store.url: which backend open_store gets, and the URL's password kept out of every message (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revdaemon.config import load_settings
from revdaemon.errors import ConfigError
from revdaemon.ops.logging import RedactSecrets

MINIMAL = {
    "salesforce": {"auth": "client_credentials", "client_id": "ck", "client_secret": "cs-secret-1",
                   "login_url": "https://acme.my.salesforce.com"},
    "nue": {"api_key": "nue-key-123", "webhook_secret": "whsec-0123456789abcdef"},
}
URL = "postgresql://revdaemon:pg%2Fpass-4567@db.internal:5432/revdaemon"


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_without_store_url_the_target_is_the_sqlite_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert settings.store_target == settings.database_path == tmp_path / "state" / "revdaemon.sqlite3"
    assert settings.store_display == str(settings.database_path)


def test_a_postgres_url_from_the_environment_is_the_target_and_a_secret(tmp_path: Path) -> None:
    """REVDAEMON_STORE__URL selects PostgreSQL; the URL and its password (both spellings) are scrubbed."""
    settings = load_settings(write(tmp_path, MINIMAL), environ={"REVDAEMON_STORE__URL": URL})
    assert settings.store_target == URL
    assert "pg%2Fpass-4567" not in repr(settings) and "pg%2Fpass-4567" not in settings.store_display
    assert settings.store_display == "postgresql://revdaemon:***@db.internal:5432/revdaemon"
    assert {URL, "pg%2Fpass-4567", "pg/pass-4567"} <= set(settings.secret_values())
    scrubbed = RedactSecrets(settings.secret_values())(None, "info", {"event": "login failed for pg/pass-4567"})
    assert "pg/pass-4567" not in scrubbed["event"]


def test_a_password_in_the_query_string_is_hidden_and_scrubbed_too(tmp_path: Path) -> None:
    url = "postgresql://revdaemon@db.internal/revdaemon?sslmode=require&password=qs-pass-8910"
    settings = load_settings(write(tmp_path, MINIMAL), environ={"REVDAEMON_STORE__URL": url})
    assert settings.store_display == "postgresql://revdaemon@db.internal/revdaemon?sslmode=require&password=***"
    assert "qs-pass-8910" in settings.secret_values()


def test_the_url_comes_from_a_credential_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "store__url").write_text(URL + "\n")
    settings = load_settings(write(tmp_path, MINIMAL), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert settings.store_target == URL


def test_a_relative_sqlite_url_resolves_against_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {**MINIMAL, "store": {"url": "sqlite:///var/db.sqlite3"}}), environ={})
    assert settings.store_target == f"sqlite:///{tmp_path / 'var' / 'db.sqlite3'}"


@pytest.mark.parametrize("url", ["mysql://root:hunter2-pw@db/x", "postgresql//root:hunter2-pw@db", "sqlite://x",
                                 "postgresql://root:hunter2-pw@db:port/x"])
def test_a_bad_url_is_reported_without_its_text(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {**MINIMAL, "store": {"url": url}}), environ={})
    assert "store.url" in dict(exc.value.problems)
    assert "hunter2" not in str(exc.value)


def test_retention_defaults_to_ninety_days_and_zero_keeps_everything(tmp_path: Path) -> None:
    """store.retention_days is 90 unless set; 0 is accepted (nothing is pruned); the prune runs nightly."""
    assert load_settings(write(tmp_path, MINIMAL), environ={}).store.retention_days == 90
    kept = load_settings(write(tmp_path, {**MINIMAL, "store": {"retention_days": 0}}), environ={})
    assert kept.store.retention_days == 0 and kept.schedule.prune_cron == "30 3 * * *"


@pytest.mark.parametrize(("document", "key"), [({"store": {"retention_days": -1}}, "store.retention_days"),
                                               ({"store": {"retention_days": "forever"}}, "store.retention_days"),
                                               ({"schedule": {"prune_cron": "nightly"}}, "schedule.prune_cron")])
def test_a_bad_retention_setting_names_its_key(tmp_path: Path, document: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, {**MINIMAL, **document}), environ={})
    assert key in dict(exc.value.problems)
