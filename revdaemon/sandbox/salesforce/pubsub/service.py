"""`PubSubService`: the simulator's `eventbus.v1.PubSub` gRPC service (Subscribe, GetSchema, GetTopic).

Every call authenticates from its metadata (`accesstoken`, `instanceurl`, `tenantid`, salesforce-api.md §4.3)
and ends in the RPC log. A failure is a `PubSubError`: its gRPC status, Salesforce's error code in the trailing
metadata and the message suffixed with "rpcId: ...", as the Handle Errors page describes.

Subscribe is pull-based: the client's FetchRequests grant credit (num_requested) and the server never sends more
events than granted and not yet delivered; an idle stream gets an empty FetchResponse carrying the latest replay id
every `keepalive_seconds`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from revdaemon.connectors.pubsub_api import pubsub_api_pb2 as pb
from revdaemon.connectors.pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from revdaemon.sandbox.salesforce.pubsub.bus import BusEvent, ReplayIdInvalid, encode_replay_id
from revdaemon.sandbox.salesforce.pubsub.cdc import ALL_CHANGES_TOPIC, ChangeDataCapture
from revdaemon.sandbox.salesforce.pubsub.errors import (
    ERROR_CODE_KEY,
    NUM_REQUESTED_INVALID,
    RPC_ID_KEY,
    SCHEMA_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    PubSubError,
    auth_error,
    replay_id_corrupted,
    topic_not_found,
)
from revdaemon.sandbox.salesforce.pubsub.rpc_log import LoggedRpc
from revdaemon.sandbox.salesforce.pubsub.streams import Stream

# Maps an access token to its user id, None when the org does not accept it (expired, unknown).
TokenCheck = Callable[[str], str | None]


@dataclass
class _Call:
    """What the RPC log records of a call in progress."""

    method: str
    rpc_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    topic: str = ""
    events: int = 0
    status: str = "OK"  # a gRPC status name
    error_code: str = ""
    at: float = field(default_factory=time.time)


# grpc ships no type information: its servicer context is typed loosely here.
Context = Any


class PubSubService(pb_grpc.PubSubServicer):
    def __init__(self, cdc: ChangeDataCapture, check_token: TokenCheck, org_id: str) -> None:
        self.cdc = cdc
        self.check_token = check_token
        self.org_id = org_id

    # ---- unary calls -------------------------------------------------------------------------------

    async def GetTopic(self, request: pb.TopicRequest, context: Context) -> pb.TopicInfo:
        call = _Call("GetTopic", topic=request.topic_name)
        try:
            self._authenticate(context)
            entities = self.cdc.entities_of(request.topic_name)
            if entities is None:
                raise topic_not_found(self.org_id, request.topic_name)
            # [assumed] the all-entities channel carries several schemas, so it names none.
            schema_id = ("" if request.topic_name == ALL_CHANGES_TOPIC
                         else self.cdc.capture.event_schema(next(iter(entities))).id)
            # Change events are published by the org itself, never by a client [doc: cdc_subscribe].
            return pb.TopicInfo(topic_name=request.topic_name, tenant_guid=self.org_id, can_publish=False,
                                can_subscribe=True, schema_id=schema_id, rpc_id=call.rpc_id)
        except PubSubError as error:
            await self._abort(context, call, error)
        finally:
            self._log(call)

    async def GetSchema(self, request: pb.SchemaRequest, context: Context) -> pb.SchemaInfo:
        call = _Call("GetSchema", topic=request.schema_id)
        try:
            self._authenticate(context)
            current = {s.id: s.json for s in map(self.cdc.capture.event_schema, sorted(self.cdc.capture.selected))}
            known = current | self.cdc.bus.schemas
            if request.schema_id not in known:
                raise PubSubError(grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND,
                                  f"The schema {request.schema_id} was not found.")  # [assumed] wording
            return pb.SchemaInfo(schema_json=known[request.schema_id], schema_id=request.schema_id,
                                 rpc_id=call.rpc_id)
        except PubSubError as error:
            await self._abort(context, call, error)
        finally:
            self._log(call)

    # ---- Subscribe ---------------------------------------------------------------------------------

    async def Subscribe(self, request_iterator: AsyncIterator[pb.FetchRequest],
                        context: Context) -> AsyncIterator[pb.FetchResponse]:
        call = _Call("Subscribe")
        try:
            self._authenticate(context)
            first = await anext(request_iterator, None)
            if first is None:  # the client closed its side without asking for anything
                return
            call.topic = first.topic_name
            entities = self.cdc.entities_of(first.topic_name)
            if entities is None:
                raise topic_not_found(self.org_id, first.topic_name)
            position = self._start(first)
            stream = self.cdc.streams.open()
            credit = _Credit(first.num_requested)
            reader = asyncio.create_task(_read_credit(request_iterator, credit, stream))
            try:
                async for response in self._deliver(stream, entities, position, credit, call):
                    yield response
            finally:
                reader.cancel()
                self.cdc.streams.close(stream)
        except PubSubError as error:
            await self._abort(context, call, error)
        except asyncio.CancelledError:
            call.status = "CANCELLED"  # the client hung up
            raise
        finally:
            self._log(call)

    def _start(self, first: pb.FetchRequest) -> int:
        if first.num_requested <= 0:
            # [assumed] code and wording; a subscription that asks for nothing could never receive anything.
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, NUM_REQUESTED_INVALID,
                              "The number of requested events must be greater than zero.")
        bus = self.cdc.bus
        if first.replay_preset == pb.CUSTOM:
            try:
                return bus.start_after(first.replay_id)
            except ReplayIdInvalid:
                raise replay_id_corrupted() from None
        return bus.earliest() if first.replay_preset == pb.EARLIEST else bus.head

    async def _deliver(self, stream: Stream, entities: frozenset[str], position: int, credit: _Credit,
                       call: _Call) -> AsyncIterator[pb.FetchResponse]:
        streams = self.cdc.streams
        self.cdc.bus.watch(stream.ring)
        try:
            while True:
                if streams.is_cut(stream):
                    # [doc] handling-errors.html lists UNAVAILABLE (RST_STREAM) for a stream the server drops.
                    raise PubSubError(grpc.StatusCode.UNAVAILABLE, SERVICE_UNAVAILABLE,
                                      "The stream was reset by the server (simulated).")
                stream.wake.clear()
                events, position = self.cdc.bus.after(position, entities, streams.allowance(credit.left))
                if events:
                    credit.left -= len(events)
                    call.events += len(events)
                    yield self._response(events, position, credit.left, call)
                    streams.delivered(len(events))
                    continue
                try:
                    await asyncio.wait_for(stream.wake.wait(), self.cdc.keepalive_seconds)
                except TimeoutError:
                    yield self._response([], position, credit.left, call)  # keepalive
        finally:
            self.cdc.bus.unwatch(stream.ring)

    @staticmethod
    def _response(events: list[BusEvent], position: int, pending: int, call: _Call) -> pb.FetchResponse:
        return pb.FetchResponse(
            events=[pb.ConsumerEvent(event=pb.ProducerEvent(id=e.uuid, schema_id=e.schema_id, payload=e.payload),
                                     replay_id=e.replay_id) for e in events],
            latest_replay_id=encode_replay_id(position), rpc_id=call.rpc_id, pending_num_requested=pending)

    # ---- not simulated: change events are published by the org, never by a client ------------------

    async def Publish(self, request: pb.PublishRequest, context: Context) -> pb.PublishResponse:
        await self._unimplemented("Publish", request.topic_name, context)

    async def PublishStream(self, request_iterator: AsyncIterator[pb.PublishRequest],
                            context: Context) -> AsyncIterator[pb.PublishResponse]:
        await self._unimplemented("PublishStream", "", context)
        yield pb.PublishResponse()  # unreachable: makes this an async generator, as a streaming method must be

    async def ManagedSubscribe(self, request_iterator: AsyncIterator[pb.ManagedFetchRequest],
                               context: Context) -> AsyncIterator[pb.ManagedFetchResponse]:
        await self._unimplemented("ManagedSubscribe", "", context)
        yield pb.ManagedFetchResponse()  # unreachable, as above

    async def _unimplemented(self, method: str, topic: str, context: Context) -> NoReturn:
        call = _Call(method, topic=topic, status="UNIMPLEMENTED")
        self._log(call)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not simulated. rpcId: {call.rpc_id}")
        raise AssertionError("context.abort returned")  # it always raises

    # ---- shared: authentication, failures, the log -------------------------------------------------

    def _authenticate(self, context: Context) -> str:
        metadata = dict(context.invocation_metadata() or ())
        token, tenant = metadata.get("accesstoken"), metadata.get("tenantid")
        user_id = self.check_token(str(token)) if token else None
        # [assumed] instanceurl must be present; its value is not compared (clients reach the sim by many names).
        if user_id is None or tenant != self.org_id or not metadata.get("instanceurl"):
            raise auth_error()
        return user_id

    @staticmethod
    async def _abort(context: Context, call: _Call, error: PubSubError) -> NoReturn:
        """Ends the call the way Salesforce does: status, "rpcId:" in the message, error code in the trailers."""
        call.status, call.error_code = error.status.name, error.code
        await context.abort(error.status, f"{error.message} rpcId: {call.rpc_id}",
                            trailing_metadata=((ERROR_CODE_KEY, error.code), (RPC_ID_KEY, call.rpc_id)))
        raise AssertionError("context.abort returned")  # it always raises

    def _log(self, call: _Call) -> None:
        self.cdc.log.add(LoggedRpc(method=call.method, topic=call.topic, status=call.status,
                                   error_code=call.error_code, rpc_id=call.rpc_id, events=call.events, at=call.at))


@dataclass
class _Credit:
    left: int  # events requested and not yet delivered


async def _read_credit(requests: AsyncIterator[pb.FetchRequest], credit: _Credit, stream: Stream) -> None:
    """Each later FetchRequest adds its num_requested to the credit and wakes the stream."""
    async for request in requests:
        credit.left += max(request.num_requested, 0)
        stream.wake.set()
