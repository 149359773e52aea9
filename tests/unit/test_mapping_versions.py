"""Mapping versions: the canonical text, the store's versions and pins, the flows of each version."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from revdaemon.config import MappingSettings, Settings
from revdaemon.engine.mappings import (
    FlowVersions,
    MappingUnavailable,
    content_hash,
    mapping_text,
    settings_for,
)
from revdaemon.engine.supervisor import default_flows
from revdaemon.store import Store, open_store
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION
from revdaemon.store.records import NewDeadLetter, NewEvent

LEASE = timedelta(minutes=5)


def with_fields(**fields: str) -> Settings:
    return Settings(mapping=MappingSettings(flows={"subscription_status": fields}))


@pytest.fixture
async def store(store_target: Path | str) -> AsyncIterator[Store]:
    """A new store on each backend (tests/conftest.py: store_target): SQLite, then PostgreSQL."""
    opened = await open_store(store_target)
    yield opened
    await opened.close()


class TestText:
    def test_same_mapping_same_text_and_a_change_shows(self) -> None:
        """Equal settings give equal texts (keys sorted, defaults filled in); a mapped field changes the text."""
        a, b = with_fields(A__c="path:customer.accountNumber"), with_fields(B__c="path:customer.accountNumber")
        assert mapping_text(a) == mapping_text(with_fields(A__c="path:customer.accountNumber"))
        assert mapping_text(a) != mapping_text(b) and "A__c: path:customer.accountNumber" in mapping_text(a)
        assert set(yaml.safe_load(mapping_text(a))) == {"mapping", "flows"}  # nothing else: no secrets
        assert len(content_hash(mapping_text(a))) == 64

    def test_superseded_manual_version_is_not_part_of_the_mapping(self) -> None:
        """mapping.version is still accepted but no longer makes a version: the store numbers them."""
        assert mapping_text(Settings(mapping=MappingSettings(version=7))) == mapping_text(Settings())

    def test_stored_text_round_trips_into_settings(self) -> None:
        """A stored text gives back the same mapping and flows sections; the rest stays as configured now."""
        old, now = with_fields(A__c="path:customer.accountNumber"), with_fields(B__c="const:x")
        rebuilt = settings_for(now, mapping_text(old))
        assert mapping_text(rebuilt) == mapping_text(old)
        assert rebuilt.mapping.flows == {"subscription_status": {"A__c": "path:customer.accountNumber"}}
        assert rebuilt.nue == now.nue

    def test_a_text_that_no_longer_loads_is_reported(self) -> None:
        with pytest.raises(MappingUnavailable, match="no longer loads"):
            settings_for(Settings(), "mapping: {flows: {x: {Bad__c: 'nonsense'}}}\nflows: {}\n")


@pytest.mark.anyio
class TestStore:
    async def test_register_is_idempotent_and_numbers_in_order(self, store: Store) -> None:
        """Each distinct text is one version, numbered 1, 2...; registering a known text returns its version."""
        one = await store.register_mapping("a: 1\n", content_hash("a: 1\n"))
        two = await store.register_mapping("a: 2\n", content_hash("a: 2\n"))
        again = await store.register_mapping("a: 1\n", content_hash("a: 1\n"))
        assert (one.version, two.version, again.version) == (1, 2, 1)
        assert again == one and one.text == "a: 1\n"
        assert [m.version for m in await store.list_mappings()] == [1, 2]
        assert await store.get_mapping(2) == two and await store.get_mapping(3) is None
        assert await store.find_mapping(content_hash("a: 2\n")) == two
        assert await store.find_mapping("0" * 64) is None

    async def test_claim_pins_once_and_replay_keeps_or_clears_the_pin(self, store: Store) -> None:
        """The first claim pins an event to the version given; later claims keep it; a remapped replay clears it."""
        v1 = await store.register_mapping("a: 1\n", content_hash("a: 1\n"))
        v2 = await store.register_mapping("a: 2\n", content_hash("a: 2\n"))
        await store.add_events([NewEvent(source="nue_webhook", key=k, type="t") for k in ("e1", "e2")])
        first, second = await store.claim_events(worker="w", limit=2, lease=LEASE, mapping_version=v1.version)
        assert first.mapping_version == second.mapping_version == 1
        letters = [await store.dead_letter_event(e.id, NewDeadLetter(system="salesforce", operation="x", error="no"),
                                                 claimed_by="w") for e in (first, second)]
        kept = await store.replay_dead_letter(letters[0])
        cleared = await store.replay_dead_letter(letters[1], remap=True)
        assert kept.mapping_version == 1 and cleared.mapping_version is None
        again = {e.key: e for e in await store.claim_events(worker="w", limit=2, lease=LEASE,
                                                              mapping_version=v2.version)}
        assert again["e1"].mapping_version == 1  # pinned: the version it first ran with
        assert again["e2"].mapping_version == 2  # remapped: the current one at its next claim
        assert (await store.get_event(first.id)).mapping_version == 1  # type: ignore[union-attr]

    async def test_claim_without_a_version_pins_nothing(self, store: Store) -> None:
        await store.add_events([NewEvent(source="nue_webhook", key="e", type="t")])
        [event] = await store.claim_events(worker="w", limit=1, lease=LEASE)
        assert event.mapping_version is None

    async def test_a_database_at_schema_3_is_upgraded_and_read_only_before(self, tmp_path: Path) -> None:
        """A read-only command on a database the daemon has not migrated yet sees no versions and no pins; the
        daemon's open adds both and keeps the events."""
        path = tmp_path / "old.sqlite3"
        with sqlite3.connect(path) as conn:
            for migration in MIGRATIONS[:3]:
                conn.executescript(migration.sqlite or "")
            conn.execute("""INSERT INTO inbox_events (source, event_key, type, payload, next_attempt_at, received_at,
                            updated_at) VALUES ('s', 'old', 't', '{}', '2026-01-01', '2026-01-01', '2026-01-01')""")
            conn.execute("PRAGMA user_version = 3")
        reader = await open_store(path, read_only=True)
        try:
            assert await reader.list_mappings() == [] and await reader.get_mapping(1) is None
            assert await reader.list_replicas() == []  # nor the replicas of schema 5
            assert (await reader.find_event("old")).mapping_version is None  # type: ignore[union-attr]
        finally:
            await reader.close()
        store = await open_store(path)
        try:
            assert await store.schema_version() == SCHEMA_VERSION
            assert (await store.register_mapping("m", content_hash("m"))).version == 1
            assert (await store.find_event("old")).mapping_version is None  # type: ignore[union-attr]
        finally:
            await store.close()


@pytest.mark.anyio
class TestFlowVersions:
    async def test_pinned_versions_build_their_own_flows_once(self, store: Store) -> None:
        """The current version's flows are the configured ones; an older version's are built from its text."""
        old, now = with_fields(A__c="path:customer.accountNumber"), with_fields(B__c="path:customer.accountNumber")
        first = await FlowVersions.load(store, old, default_flows(old), default_flows)
        current_flows = default_flows(now)
        versions = await FlowVersions.load(store, now, current_flows, default_flows)
        assert (first.current_version, versions.current_version) == (1, 2)
        assert await versions.flows_for(None) == current_flows == await versions.flows_for(2)
        built = await versions.flows_for(1)
        assert await versions.flows_for(1) is built  # cached
        status = next(f for f in built if f.name == "subscription_status")
        assert set(status.mapping.extra_fields) == {"A__c"}  # type: ignore[attr-defined]
        with pytest.raises(MappingUnavailable, match="version 9"):
            await versions.flows_for(9)

    async def test_lookup_only_registers_nothing(self, store: Store) -> None:
        """A dry run or a read-only command looks the configured mapping up without storing it."""
        versions = await FlowVersions.load(store, Settings(), [], default_flows, register=False)
        assert versions.current is None and await store.list_mappings() == []
