"""Mapping versions: every distinct mapping loaded from config.yaml is stored, and an event is planned with
the version it first ran with.

The mapping is everything in config.yaml that changes what a flow writes: the `mapping` and `flows`
sections. Its canonical text (YAML of both sections, defaults filled in, keys sorted; no secrets live there)
is hashed, and the store numbers each distinct text in order. At start the daemon registers the current
text; a worker pins each event to the current version when it first claims it. A retry, a parked wait, a
conflict taken for Nue or a replayed dead letter is planned again with the flows of its pinned version,
built from the stored text, so a changed config.yaml never silently changes what an old event writes. The
operator chooses otherwise explicitly: `dead-letters replay --remap` clears the pin, and the dry run shows
the writes under both versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import structlog
import yaml
from pydantic import ValidationError

from revdaemon.config import FlowsSettings, MappingSettings, Settings
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.preview import EventPreview, Preview, preview, preview_safely
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.flows.base import Flow, Found
from revdaemon.store import Store
from revdaemon.store.records import Event, MappingVersion

log = structlog.get_logger("revdaemon.mappings")


class MappingUnavailable(Exception):
    """A pinned mapping version cannot be used: not in the store, or its text no longer loads."""


def mapping_text(settings: Settings) -> str:
    """The canonical text of the mapping in `settings`: equal texts mean flows that write the same."""
    document = {
        # mapping.version is the superseded manual number: versions are now assigned by the store
        "mapping": settings.mapping.model_dump(mode="json", exclude={"version"}),
        "flows": settings.flows.model_dump(mode="json"),
    }
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, allow_unicode=True)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_for(settings: Settings, text: str) -> Settings:
    """`settings` with the `mapping` and `flows` sections of a stored mapping text (everything else as now)."""
    try:
        document = yaml.safe_load(text)
        mapping = MappingSettings.model_validate(document["mapping"])
        flows = FlowsSettings.model_validate(document["flows"])
    except (yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        raise MappingUnavailable(f"the stored mapping no longer loads: {exc}".splitlines()[0]) from exc
    return settings.model_copy(update={"mapping": mapping, "flows": flows})


class FlowVersions:
    """The flows of each mapping version: the current one as configured, older ones built once each from
    their stored text (through `build`, the same path that built the current flows)."""

    def __init__(self, store: Store, settings: Settings, current: MappingVersion | None, flows: Sequence[Flow],
                 build: Callable[[Settings], list[Flow]]) -> None:
        self._store = store
        self._settings = settings
        self.current = current  # None: this mapping is not registered (a dry run registers nothing)
        self.flows = list(flows)
        self._build = build
        self._built: dict[int, list[Flow]] = {}

    @classmethod
    async def load(cls, store: Store, settings: Settings, flows: Sequence[Flow],
                   build: Callable[[Settings], list[Flow]], *, register: bool = True) -> FlowVersions:
        """Register the configured mapping (or only look it up, without `register`) and return the versions."""
        text = mapping_text(settings)
        digest = content_hash(text)
        current = await store.register_mapping(text, digest) if register else await store.find_mapping(digest)
        if current is not None:
            log.info("mapping_version", version=current.version, content_hash=digest[:12])
        return cls(store, settings, current, flows, build)

    @property
    def current_version(self) -> int | None:
        return self.current.version if self.current is not None else None

    def is_current(self, version: int | None) -> bool:
        return version is None or version == self.current_version

    async def flows_for(self, version: int | None) -> list[Flow]:
        """The flows an event pinned to `version` is planned with (None: not pinned yet, the current ones)."""
        if self.is_current(version):
            return self.flows
        assert version is not None
        if version not in self._built:
            stored = await self._store.get_mapping(version)
            if stored is None:
                raise MappingUnavailable(f"mapping version {version} is not in the state store")
            try:
                self._built[version] = self._build(settings_for(self._settings, stored.text))
            except MappingUnavailable as exc:
                raise MappingUnavailable(f"mapping version {version}: {exc}") from exc
            log.info("mapping_version_loaded", version=version, flows=[f.name for f in self._built[version]])
        return self._built[version]


async def preview_pinned(events: Sequence[Event], versions: FlowVersions, fetcher: Fetcher, *,
                         remap: bool = False, sync_status: SyncStatus | None = None,
                         known: Found | None = None, follow_steps: bool = False, safely: bool = True) -> Preview:
    """What replaying `events` would write: each planned with the mapping version it is pinned to. With
    `remap`, with the current mapping instead, and an event pinned to an older version also shows that
    version's writes beside them (marked unused), so the operator sees both before choosing.
    `sync_status`, `known` and `follow_steps` as for `preview`; `safely`: an API failure shown on the events
    (a page) rather than raised (shadow mode tries them again)."""
    unique = list({e.id: e for e in events}.values())

    def key(version: int | None) -> int | None:  # None: the current mapping
        return None if versions.is_current(version) else version

    groups: dict[int | None, list[Event]] = {}
    for event in unique:
        groups.setdefault(key(event.mapping_version), []).append(event)
        if remap and key(event.mapping_version) is not None:
            groups.setdefault(None, []).append(event)
    runs: dict[int | None, Preview] = {}
    for version, group in groups.items():
        try:
            flows = await versions.flows_for(version)
        except MappingUnavailable as exc:
            runs[version] = Preview(events=tuple(EventPreview(
                event_id=e.id, event_key=e.key, flow="-", outcome="error",
                note=f"{exc}; replay it with --remap to use the current mapping") for e in group))
            continue
        plan = preview_safely if safely else preview
        runs[version] = await plan(group, flows, fetcher, sync_status=sync_status, known=known,
                                   follow_steps=follow_steps)
    out: list[EventPreview] = []
    for event in unique:
        pinned = key(event.mapping_version)
        used = None if remap else pinned
        for version in dict.fromkeys([pinned, used]):
            label = _label(versions, version, pinned=event.mapping_version)
            out += [dataclasses.replace(shown, mapping=label, used=version == used)
                    for shown in runs[version].events if shown.event_id == event.id]
    return Preview(events=tuple(out))


def _label(versions: FlowVersions, version: int | None, *, pinned: int | None) -> str:
    number = version if version is not None else versions.current_version
    if number is None:
        return "current (config.yaml's, stored as a new version when the daemon next starts)"
    tags = [tag for tag, on in (("pinned", number == pinned), ("current", version is None)) if on]
    return f"v{number} ({', '.join(tags)})" if tags else f"v{number}"
