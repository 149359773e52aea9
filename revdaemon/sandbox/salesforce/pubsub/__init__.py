"""The Salesforce simulator's Change Data Capture over the Pub/Sub API (salesforce-api.md §4.3).

Committed writes of the selected entities become Avro change events on the org's event bus (capture.py,
event_schema.py, bus.py); `PubSubService` (service.py) serves them over gRPC as `eventbus.v1.PubSub`, from a
thread or inside the caller's loop (server.py). `ChangeDataCapture` (cdc.py) ties them together per org.

    sim = SalesforceSim()
    with sim.serve_pubsub() as pubsub:   # pubsub.address: "127.0.0.1:<port>"
        ...  # subscribe with metadata accesstoken / instanceurl / tenantid
"""

from __future__ import annotations

from revdaemon.sandbox.salesforce.pubsub.cdc import ALL_CHANGES_TOPIC, ChangeDataCapture
from revdaemon.sandbox.salesforce.pubsub.event_schema import change_event_schema, event_name, topic_name
from revdaemon.sandbox.salesforce.pubsub.rpc_log import LoggedRpc, RpcLog
from revdaemon.sandbox.salesforce.pubsub.server import PubSubServerThread, reserve_port, serve_pubsub
from revdaemon.sandbox.salesforce.pubsub.service import PubSubService

__all__ = [
    "ALL_CHANGES_TOPIC",
    "ChangeDataCapture",
    "LoggedRpc",
    "PubSubServerThread",
    "PubSubService",
    "RpcLog",
    "change_event_schema",
    "event_name",
    "reserve_port",
    "serve_pubsub",
    "topic_name",
]
