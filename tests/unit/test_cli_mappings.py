"""`revdaemon mappings list | show | diff` against a store holding two mapping versions."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
import yaml
from click.testing import CliRunner

from revdaemon.cli import main
from revdaemon.engine.mappings import content_hash, mapping_text
from revdaemon.store import open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The shipped config, its state in tmp_path, with two mapping versions stored: an older one that wrote
    A__c, and the configured one."""
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    from revdaemon.config import load_settings

    settings = load_settings(path, environ={})
    older = settings.model_copy(update={"mapping": settings.mapping.model_copy(update={
        "flows": {**settings.mapping.flows, "subscription_status": {"A__c": "path:customer.accountNumber"}}})})

    async def fill() -> None:
        store = await open_store(settings.database_path)
        try:
            for chosen in (older, settings):
                await store.register_mapping(mapping_text(chosen), content_hash(mapping_text(chosen)))
        finally:
            await store.close()

    anyio.run(fill)
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)], env={})
    return result.exit_code, result.output


class TestCli:
    def test_list_marks_the_current_version(self, config: Path) -> None:
        code, out = run(config, "mappings", "list", "--json")
        assert code == 0
        rows = json.loads(out)
        assert [(r["version"], r["current"]) for r in rows] == [(1, False), (2, True)]
        assert all(len(r["hash"]) == 12 and r["created_at"] for r in rows)
        code, out = run(config, "mappings", "list")
        assert code == 0 and "mapping versions (2)" in out and "*" in out

    def test_show_prints_the_text(self, config: Path) -> None:
        code, out = run(config, "mappings", "show", "1")
        assert code == 0 and out.startswith("# mapping v1, sha256 ")
        assert yaml.safe_load(out)["mapping"]["flows"]["subscription_status"] == {
            "A__c": "path:customer.accountNumber"}
        code, out = run(config, "mappings", "show", "current", "--json")
        assert code == 0 and json.loads(out)["version"] == "current (config.yaml)"

    def test_diff_shows_the_changed_field(self, config: Path) -> None:
        code, out = run(config, "mappings", "diff", "1", "2")
        assert code == 0 and out.startswith("--- v1\n+++ v2\n")
        assert "-      A__c: path:customer.accountNumber" in out
        code, out = run(config, "mappings", "diff", "2", "current")
        assert code == 0 and "are the same mapping" in out

    def test_unknown_version(self, config: Path) -> None:
        code, out = run(config, "mappings", "show", "7")
        assert code == 1 and "no mapping version 7" in out
        code, out = run(config, "mappings", "diff", "1", "latest")
        assert code == 1 and "no mapping version 'latest'" in out
