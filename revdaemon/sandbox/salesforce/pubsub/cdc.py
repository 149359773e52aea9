"""`ChangeDataCapture`: one org's Change Data Capture state, shared by the store hook, the gRPC service and the
faults: the event bus, the capture of committed changes, open streams and the RPC log."""

from __future__ import annotations

from collections.abc import Callable

from revdaemon.sandbox.salesforce.pubsub.bus import EventBus
from revdaemon.sandbox.salesforce.pubsub.capture import ChangeCapture
from revdaemon.sandbox.salesforce.pubsub.event_schema import topic_name
from revdaemon.sandbox.salesforce.pubsub.rpc_log import RpcLog
from revdaemon.sandbox.salesforce.pubsub.streams import Streams
from revdaemon.sandbox.salesforce.schema import Schema
from revdaemon.sandbox.salesforce.store import Store

ALL_CHANGES_TOPIC = "/data/ChangeEvents"  # every selected entity [doc] cdc_subscribe


class ChangeDataCapture:
    def __init__(self, clock: Callable[[], float], entities: tuple[str, ...], retention_hours: float,
                 keepalive_seconds: float) -> None:
        self.bus = EventBus(clock, retention_hours * 3600)
        self.capture = ChangeCapture(self.bus, clock, entities)
        self.streams = Streams()
        self.log = RpcLog()
        self.keepalive_seconds = keepalive_seconds

    def attach(self, store: Store, schema: Schema) -> None:
        """Capture the commits of a (re)built org."""
        self.capture.attach(schema)
        store.listeners.append(self.capture.on_commit)

    def reset(self, entities: tuple[str, ...]) -> None:
        """An empty bus, the configured selection, no pending stream faults and an empty RPC log. Open streams
        stay open (their positions stay valid: the bus counter keeps going)."""
        self.bus.clear()
        self.capture.selected = set(entities)
        self.streams.clear_faults()
        self.log.clear()

    def entities_of(self, topic: str) -> frozenset[str] | None:
        """The selected entities a topic carries; None for a topic that does not exist (or is not selected)."""
        selected = frozenset(self.capture.selected)
        if topic == ALL_CHANGES_TOPIC:
            return selected
        found = frozenset(e for e in selected if topic_name(e) == topic)
        return found or None

    def topics(self) -> list[str]:
        return [ALL_CHANGES_TOPIC, *sorted(topic_name(e) for e in self.capture.selected)]

    def select(self, entity: str, selected: bool = True) -> None:
        """Setup > Change Data Capture: (de)select an entity; `entity` is the object's API name."""
        od = self.capture.schema.get(entity) if self.capture.schema else None
        if od is None:
            raise KeyError(f"no object {entity!r}")
        if selected:
            self.capture.selected.add(od.name)
        else:
            self.capture.selected.discard(od.name)
