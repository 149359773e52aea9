"""Conformance of the simulator's Pub/Sub API (salesforce-api.md §4.3), driven over a real socket.

The client side uses only the generated stubs, grpcio and fastavro, plus a bitmap decoder written from
Salesforce's "Event Deserialization Considerations" page: nothing of revdaemon's own Pub/Sub client.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import grpc
import pytest
from sf_fixtures import FakeClock, Running, keypair, running

from revdaemon.connectors.pubsub_api import pubsub_api_pb2 as pb
from revdaemon.connectors.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from revdaemon.sandbox.salesforce import CustomField, SalesforceSimSettings

KEEPALIVE_SECONDS = 0.3
WAIT = 5.0  # generous upper bound for something that should arrive within milliseconds
ACCOUNTS = "/data/AccountChangeEvent"
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"


def changed_field_names(bitmaps: list[str], schema_json: str) -> list[str]:
    """A header bitmap field -> field names: bit i (least significant first) of the "0x..." entry stands for
    top-level schema field i (Event Deserialization Considerations)."""
    fields = [f["name"] for f in json.loads(schema_json)["fields"]]
    names: list[str] = []
    for entry in bitmaps:
        if entry.startswith("0x"):
            value = int(entry, 16)
            names += [name for i, name in enumerate(fields) if value >> i & 1]
    return names


class Subscription:
    """One Subscribe stream: FetchRequests go in through a queue, responses (or the final error) come out."""

    def __init__(self, stub: pb_grpc.PubSubStub, metadata: tuple[tuple[str, str], ...],
                 first: pb.FetchRequest) -> None:
        self._requests: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        self._requests.put(first)
        self._responses: queue.Queue[pb.FetchResponse | grpc.RpcError] = queue.Queue()
        self.call = stub.Subscribe(iter(self._requests.get, None), metadata=metadata)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for response in self.call:
                self._responses.put(response)
        except grpc.RpcError as error:
            self._responses.put(error)

    def request(self, count: int) -> None:
        self._requests.put(pb.FetchRequest(num_requested=count))

    def next(self, timeout: float = WAIT) -> pb.FetchResponse:
        item = self._responses.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def events(self, count: int, timeout: float = WAIT) -> list[pb.ConsumerEvent]:
        """The next `count` events, across responses, skipping keepalives."""
        got: list[pb.ConsumerEvent] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got += self.next(max(deadline - time.monotonic(), 0.01)).events
        assert len(got) == count, f"{len(got)} events where {count} were requested"
        return got

    def quiet_for(self, seconds: float) -> list[pb.FetchResponse]:
        """Every response within `seconds`; the caller asserts what they carry."""
        seen: list[pb.FetchResponse] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.next(left))
            except queue.Empty:
                break
        return seen

    def error(self, timeout: float = WAIT) -> grpc.RpcError:
        """The error the stream ends with, once any responses before it are read."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._responses.get(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(item, grpc.RpcError):
                return item

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


@dataclass
class Org:
    running: Running
    stub: pb_grpc.PubSubStub
    metadata: tuple[tuple[str, str], ...]
    subscriptions: list[Subscription]

    @property
    def sim(self) -> Any:
        return self.running.sim

    def subscribe(self, topic: str = ACCOUNTS, preset: int = pb.LATEST, replay_id: bytes = b"",
                  num_requested: int = 100, metadata: tuple[tuple[str, str], ...] | None = None) -> Subscription:
        first = pb.FetchRequest(topic_name=topic, replay_preset=preset, replay_id=replay_id,
                                num_requested=num_requested)
        subscription = Subscription(self.stub, metadata or self.metadata, first)
        self.subscriptions.append(subscription)
        return subscription

    def subscribed(self, topic: str = ACCOUNTS, **kw: Any) -> Subscription:
        """A LATEST subscription known to be live: the keepalive shows the server has positioned it."""
        subscription = self.subscribe(topic, **kw)
        assert subscription.next().events == []
        return subscription

    def decode(self, event: pb.ConsumerEvent) -> dict[str, Any]:
        schema = self.schema_json(event.event.schema_id)
        return dict(fastavro.schemaless_reader(io.BytesIO(event.event.payload),
                                               fastavro.parse_schema(json.loads(schema))))

    def schema_json(self, schema_id: str) -> str:
        return str(self.stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=self.metadata).schema_json)

    def topic_schema_id(self, topic: str = ACCOUNTS) -> str:
        return str(self.stub.GetTopic(pb.TopicRequest(topic_name=topic), metadata=self.metadata).schema_id)

    def header(self, event: pb.ConsumerEvent) -> dict[str, Any]:
        return dict(self.decode(event)["ChangeEventHeader"])


def _error_code(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("error-code")  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).timestamp())


@pytest.fixture
def org(clock: FakeClock) -> Iterator[Org]:
    settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], pubsub_keepalive_seconds=KEEPALIVE_SECONDS,
                                     clock=clock)
    with running(settings) as http_org, http_org.sim.serve_pubsub() as server, \
            grpc.insecure_channel(server.address) as channel:
        metadata = (("accesstoken", http_org.token()), ("instanceurl", http_org.url),
                    ("tenantid", http_org.sim.seed_data.organization_id))
        state = Org(http_org, pb_grpc.PubSubStub(channel), metadata, [])
        try:
            yield state
        finally:
            for subscription in state.subscriptions:
                subscription.close()


class TestTopicsAndSchemas:
    def test_get_topic_names_the_org_and_the_current_schema(self, org: Org) -> None:
        """GetTopic answers for a selected entity with the org id and a schema id GetSchema knows."""
        topic = org.stub.GetTopic(pb.TopicRequest(topic_name="/data/OpportunityChangeEvent"), metadata=org.metadata)
        assert (topic.topic_name, topic.tenant_guid) == ("/data/OpportunityChangeEvent",
                                                          org.sim.seed_data.organization_id)
        assert topic.can_subscribe and not topic.can_publish
        schema = json.loads(org.schema_json(topic.schema_id))
        assert (schema["name"], schema["namespace"]) == ("OpportunityChangeEvent", "com.sforce.eventbus")
        names = [f["name"] for f in schema["fields"]]
        assert names[0] == "ChangeEventHeader" and "StageName" in names and "LastModifiedDate" in names
        assert not {"IsDeleted", "SystemModstamp", "IsWon", "IsClosed"} & set(names)  # excluded, formula/derived
        header = schema["fields"][0]["type"]
        change_type = next(f["type"] for f in header["fields"] if f["name"] == "changeType")
        assert "GAP_OVERFLOW" in change_type["symbols"]

    def test_adding_a_field_changes_the_schema_id(self, org: Org) -> None:
        """A new field on the object makes a new event schema with a new id, and the old one stays readable."""
        request = pb.TopicRequest(topic_name=ACCOUNTS)
        before = org.stub.GetTopic(request, metadata=org.metadata).schema_id
        org.sim.add_field(CustomField(object="Account", name="Tier__c"))
        after = org.stub.GetTopic(request, metadata=org.metadata).schema_id
        assert before != after
        assert "Tier__c" in [f["name"] for f in json.loads(org.schema_json(after))["fields"]]

    def test_an_entity_not_selected_has_no_topic(self, org: Org) -> None:
        """Subscribing to an entity not selected for CDC fails NOT_FOUND; selecting it opens the topic."""
        with pytest.raises(grpc.RpcError) as failure:
            org.subscribe("/data/TaskChangeEvent").next()
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert "rpcId:" in failure.value.details()  # type: ignore[attr-defined]
        org.sim.select_for_cdc("Task")
        topic = org.stub.GetTopic(pb.TopicRequest(topic_name="/data/TaskChangeEvent"), metadata=org.metadata)
        assert topic.schema_id
        first_call = org.sim.pubsub_log.entries()[0]
        assert (first_call.method, first_call.topic, first_call.status) == (
            "Subscribe", "/data/TaskChangeEvent", "NOT_FOUND")


class TestReplay:
    def test_latest_gets_only_new_events(self, org: Org) -> None:
        """LATEST skips what was committed before the subscription."""
        org.sim.create("Account", {"Name": "Before"})
        subscription = org.subscribed()
        after = org.sim.create("Account", {"Name": "After"})
        assert org.header(subscription.events(1)[0])["recordIds"] == [after]

    def test_earliest_replays_retained_events_and_custom_resumes_after_an_id(self, org: Org) -> None:
        """EARLIEST replays the retained events in commit order; CUSTOM starts strictly after the given id."""
        ids = [org.sim.create("Account", {"Name": f"A{i}"}) for i in range(3)]
        replayed = org.subscribe(preset=pb.EARLIEST).events(3)
        assert [org.header(e)["recordIds"][0] for e in replayed] == ids
        resumed = org.subscribe(preset=pb.CUSTOM, replay_id=replayed[0].replay_id).events(2)
        assert [org.header(e)["recordIds"][0] for e in resumed] == ids[1:]
        assert len({e.replay_id for e in replayed}) == 3

    def test_an_expired_replay_id_is_refused(self, org: Org) -> None:
        """After the bus is purged (admin endpoint), a stored replay id fails INVALID_ARGUMENT, replayid.corrupted."""
        org.sim.create("Account", {"Name": "Old"})
        stored = org.subscribe(preset=pb.EARLIEST).events(1)[0].replay_id
        assert org.running.http.post("/__sandbox/pubsub/expire-replay-ids").status_code == 200
        error = org.subscribe(preset=pb.CUSTOM, replay_id=stored).error()
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert _error_code(error) == REPLAY_CORRUPTED

    def test_events_older_than_the_retention_window_are_gone(self, org: Org, clock: FakeClock) -> None:
        """72 hours later the event is purged: EARLIEST no longer replays it and its id is refused."""
        org.sim.create("Account", {"Name": "Old"})
        stored = org.subscribe(preset=pb.EARLIEST).events(1)[0].replay_id
        clock.now += 73 * 3600
        metadata = (("accesstoken", org.running.token()), *org.metadata[1:])
        assert _error_code(org.subscribe(preset=pb.CUSTOM, replay_id=stored, metadata=metadata).error()) \
            == REPLAY_CORRUPTED
        assert org.subscribe(preset=pb.EARLIEST, metadata=metadata).next().events == []

    def test_keepalive_carries_a_replay_id_to_resume_from(self, org: Org) -> None:
        """An idle stream gets empty responses with latest_replay_id, a valid CUSTOM starting point."""
        subscription = org.subscribe(num_requested=7)
        keepalive = subscription.next(timeout=KEEPALIVE_SECONDS * 5)
        assert (list(keepalive.events), keepalive.pending_num_requested) == ([], 7)
        assert keepalive.latest_replay_id and keepalive.rpc_id
        created = org.sim.create("Account", {"Name": "Later"})
        resumed = org.subscribe(preset=pb.CUSTOM, replay_id=keepalive.latest_replay_id).events(1)
        assert org.header(resumed[0])["recordIds"] == [created]


class TestFlowControl:
    def test_never_more_than_requested_and_held_events_are_not_dropped(self, org: Org) -> None:
        """num_requested=1 gets one event and nothing more until the client asks; then the held ones come."""
        subscription = org.subscribed(num_requested=1)
        ids = [org.sim.create("Account", {"Name": f"A{i}"}) for i in range(3)]
        first = subscription.next()
        assert (len(first.events), first.pending_num_requested) == (1, 0)
        assert all(not r.events for r in subscription.quiet_for(KEEPALIVE_SECONDS * 2))
        subscription.request(5)
        rest = subscription.events(2)
        assert [org.header(e)["recordIds"][0] for e in [*first.events, *rest]] == ids


class TestChangeEvents:
    def test_create_update_delete_undelete(self, org: Org) -> None:
        """Each kind of write gives its change type; an update carries only what changed, named in the bitmap."""
        subscription = org.subscribed()
        sim = org.sim
        record_id = sim.create("Account", {"Name": "Acme", "BillingCity": "Paris"})
        sim.update("Account", record_id, {"Name": "Acme Corp", "BillingCity": None})
        sim.delete("Account", record_id)
        sim.undelete("Account", record_id)
        create, update, delete, undelete = [org.decode(e) for e in subscription.events(4)]
        headers = [e["ChangeEventHeader"] for e in (create, update, delete, undelete)]
        assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE", "UNDELETE"]
        assert all(h["recordIds"] == [record_id] and h["commitUser"] == sim.sales_rep_id for h in headers)
        assert [h["commitNumber"] for h in headers] == sorted({h["commitNumber"] for h in headers})
        assert (create["Name"], create["BillingCity"]) == ("Acme", "Paris")
        schema = org.schema_json(org.topic_schema_id())
        assert set(changed_field_names(headers[1]["changedFields"], schema)) == {
            "Name", "BillingCity", "LastModifiedDate"}
        assert changed_field_names(headers[1]["nulledFields"], schema) == ["BillingCity"]
        assert (update["Name"], update["BillingCity"], update["OwnerId"]) == ("Acme Corp", None, None)
        assert all(v is None for k, v in delete.items() if k != "ChangeEventHeader")
        assert undelete["Name"] == "Acme Corp"

    def test_one_transaction_shares_a_key_and_counts_up(self, org: Org) -> None:
        """Records of one REST collections call share a transactionKey, sequenceNumber 1, 2, and the API origin."""
        subscription = org.subscribed()
        with org.running.api() as api:
            body = {"allOrNone": True, "records": [{"attributes": {"type": "Account"}, "Name": "One"},
                                                   {"attributes": {"type": "Account"}, "Name": "Two"}]}
            assert all(r["success"] for r in api.post("/composite/sobjects", json=body).json())
        headers = [org.header(e) for e in subscription.events(2)]
        assert headers[0]["transactionKey"] == headers[1]["transactionKey"]
        assert [h["sequenceNumber"] for h in headers] == [1, 2]
        assert {h["changeOrigin"] for h in headers} == {"com/salesforce/api/rest/59.0"}
        assert {h["commitUser"] for h in headers} == {org.sim.integration_user_id}

    def test_a_rolled_back_write_publishes_nothing(self, org: Org) -> None:
        """An allOrNone collections call that fails rolls back, and its good record never reaches the bus."""
        subscription = org.subscribed()
        with org.running.api() as api:
            body = {"allOrNone": True, "records": [{"attributes": {"type": "Account"}, "Name": "Good"},
                                                   {"attributes": {"type": "Account"}}]}  # Name is required
            assert not any(r["success"] for r in api.post("/composite/sobjects", json=body).json())
        marker = org.sim.create("Account", {"Name": "Marker"})
        assert org.header(subscription.events(1)[0])["recordIds"] == [marker]

    def test_a_late_commit_arrives_now_with_the_commit_time(self, org: Org, clock: FakeClock) -> None:
        """commit_late: SystemModstamp ten minutes old, but the event comes now, stamped with the commit time."""
        record_id = org.sim.create("Account", {"Name": "Slow"})
        subscription = org.subscribed()
        clock.now += 1
        org.sim.commit_late("Account", record_id, {"Name": "Slow Ltd"}, minutes_ago=10)
        event = org.decode(subscription.events(1)[0])
        assert event["ChangeEventHeader"]["commitTimestamp"] == int(clock.now * 1000)
        assert event["LastModifiedDate"] <= datetime.fromtimestamp(clock.now, UTC) - timedelta(minutes=9)

    def test_all_changes_topic_carries_every_selected_entity(self, org: Org) -> None:
        """/data/ChangeEvents delivers Account and Contact events, each with its own schema."""
        subscription = org.subscribed("/data/ChangeEvents")
        account = org.sim.create("Account", {"Name": "Both"})
        org.sim.create("Contact", {"LastName": "Doe", "AccountId": account})
        events = subscription.events(2)
        assert [org.header(e)["entityName"] for e in events] == ["Account", "Contact"]
        assert events[0].event.schema_id != events[1].event.schema_id


class TestAuthAndFaults:
    def test_a_bad_or_expired_token_is_unauthenticated(self, org: Org) -> None:
        """An unknown token, then every token after expiry: UNAUTHENTICATED with the auth.error trailer."""
        bad = (("accesstoken", "nope"), *org.metadata[1:])
        with pytest.raises(grpc.RpcError) as failure:
            org.stub.GetTopic(pb.TopicRequest(topic_name=ACCOUNTS), metadata=bad)
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert _error_code(failure.value) == AUTH_ERROR
        org.sim.expire_sessions()
        error = org.subscribe().error()
        assert (error.code(), _error_code(error)) == (grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR)  # type: ignore[attr-defined]

    def test_a_stream_reset_mid_burst_resumes_from_the_last_replay_id(self, org: Org) -> None:
        """Reset after 2 events: exactly 2 arrive, then UNAVAILABLE; resubscribing CUSTOM gets the rest."""
        subscription = org.subscribed()
        response = org.running.http.post("/__sandbox/pubsub/reset-streams", json={"after_events": 2})
        assert response.status_code == 200
        ids = [org.sim.create("Account", {"Name": f"A{i}"}) for i in range(4)]
        delivered = subscription.events(2)
        error = subscription.error()
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        rest = org.subscribe(preset=pb.CUSTOM, replay_id=delivered[-1].replay_id).events(2)
        assert [org.header(e)["recordIds"][0] for e in [*delivered, *rest]] == ids

    def test_a_reset_now_cuts_an_idle_stream(self, org: Org) -> None:
        """reset_pubsub_streams() ends every open stream with UNAVAILABLE."""
        subscription = org.subscribed()
        org.sim.reset_pubsub_streams()
        assert subscription.error().code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

    def test_gap_and_overflow_events(self, org: Org) -> None:
        """A gap event names its records and change type with no field values; an overflow names none."""
        subscription = org.subscribed()
        record_id = org.sim.create("Account", {"Name": "Gappy"})
        subscription.events(1)
        org.sim.publish_gap_event("Account", [record_id], "GAP_UPDATE")
        org.sim.publish_gap_overflow("Account")
        gap, overflow = [org.decode(e) for e in subscription.events(2)]
        assert (gap["ChangeEventHeader"]["changeType"], gap["ChangeEventHeader"]["recordIds"]) == (
            "GAP_UPDATE", [record_id])
        assert gap["Name"] is None
        assert overflow["ChangeEventHeader"]["changeType"] == "GAP_OVERFLOW"
        assert overflow["ChangeEventHeader"]["recordIds"] == ["000000000000000AAA"]
