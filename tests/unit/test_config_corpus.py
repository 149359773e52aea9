"""Bad configuration files: tests/corpus/config/, and arbitrary documents (hypothesis).

Each corpus file is a config.yaml with one thing wrong, its header saying what the error must name:

    # <what is wrong>
    # expect: <dotted key> | <words of the reason>
    # forbid: <text that must not appear in the message, e.g. a secret>

It is loaded the way `revdaemon check --config` loads it: ConfigError naming exactly the expected keys with
their reasons, and the command exits 2 with the keys on its output, no traceback. Arbitrary documents either
load or raise ConfigError, never another exception.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from revdaemon.cli import EXIT_CONFIG, main
from revdaemon.config import Settings, load_settings
from revdaemon.errors import ConfigError

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "config"
CASES = sorted(CORPUS.glob("*.yaml"))


def header(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    expects: list[tuple[str, str]] = []
    forbids: list[str] = []
    for line in path.read_bytes().split(b"\n"):
        if not line.startswith(b"#"):
            break
        text = line.decode("ascii")
        if text.startswith("# expect: "):
            key, _, reason = text.removeprefix("# expect: ").partition(" | ")
            expects.append((key, reason))
        elif text.startswith("# forbid: "):
            forbids.append(text.removeprefix("# forbid: "))
    assert expects, f"{path.name}: no '# expect: key | reason' line"
    return expects, forbids


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` reads os.environ: no REVDAEMON_* variable or credential directory of the machine may count."""
    for name in list(os.environ):
        if name.startswith("REVDAEMON_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def test_the_corpus_is_there() -> None:
    """The corpus is found (a wrong path would make the parametrized test below collect nothing)."""
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_config_case(path: Path, clean_environment: None) -> None:
    """The error names each bad key with its reason, and nothing else; `check` exits 2 and says the same."""
    expects, forbids = header(path)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    found: dict[str, list[str]] = {}
    for key, reason in caught.value.problems:
        found.setdefault(key, []).append(reason)
    assert set(found) == {key for key, _ in expects}, caught.value.problems
    for key, reason in expects:
        assert any(reason in given for given in found[key]), (key, found[key])
    for text in forbids:
        assert text not in str(caught.value)

    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for key, _ in expects:
        assert f"  {key}: " in result.output, result.output
    for text in forbids:
        assert text not in result.output


# --- arbitrary documents ------------------------------------------------------------------------------


def known_keys(model: type[BaseModel]) -> set[str]:
    """Every field name of the settings, at any depth: random documents use them to get past 'unknown key'."""
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= known_keys(annotation)
    return names


KEYS = sorted(known_keys(Settings))
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
           | st.floats() | st.text(max_size=30) | st.sampled_from(["", "UTC", "0 6 * * *", "https://x.example",
                                                                    "http://api.example", "127.0.0.1", "jwt",
                                                                    "signature", "path_token", "none", ".nan",
                                                                    "lookup:x:y", "const:x", "a" * 300]))
MAPPING_KEYS = st.sampled_from(KEYS) | st.text(max_size=12) | st.integers() | st.none() | st.booleans()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(MAPPING_KEYS, inner, max_size=4), max_leaves=10)
SECTIONS = ["state_dir", "salesforce", "nue", "listener", "limits", "schedule", "mapping", "flows", "engine",
            "alerts", "metrics", "log"]
DOCUMENTS = st.dictionaries(st.sampled_from(SECTIONS) | MAPPING_KEYS, VALUES, max_size=5) | VALUES
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def loads_or_config_error(path: Path) -> None:
    try:
        load_settings(path, environ={})
    except ConfigError as exc:
        assert exc.problems and all(key and reason for key, reason in exc.problems)


@PROPERTIES
@given(document=DOCUMENTS)
def test_arbitrary_documents(tmp_path: Path, document: Any) -> None:
    """Random nested mappings, lists and scalars, with real key names mixed in: a ConfigError or settings."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    loads_or_config_error(path)


@PROPERTIES
@given(section=st.sampled_from(SECTIONS), key=st.sampled_from(KEYS), value=VALUES)
def test_one_bad_value_in_a_valid_file(tmp_path: Path, section: str, key: str, value: Any) -> None:
    """A valid file with one key of one section set to anything: a ConfigError or settings."""
    document: dict[str, Any] = {
        "salesforce": {"auth": "client_credentials", "client_id": "ck", "client_secret": "cs-secret-1",
                       "login_url": "https://acme.my.salesforce.com"},
        "nue": {"api_key": "nue-key-123", "webhook_secret": "whsec-0123456789abcdef"},
    }
    if section == "state_dir":
        document["state_dir"] = value
    else:
        document[section] = {**document.get(section, {}), key: value}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    loads_or_config_error(path)


@PROPERTIES
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text(tmp_path: Path, text: str | bytes) -> None:
    """Any text or bytes as the file: a ConfigError or settings."""
    path = tmp_path / "config.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    loads_or_config_error(path)
