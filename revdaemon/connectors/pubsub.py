"""Salesforce's Pub/Sub API (gRPC, salesforce-api.md §4.3): a subscription to one topic's events, decoded.

- One `PubSubClient` per daemon, on the daemon's asyncio loop (grpc.aio). It authenticates every call with the
  session the REST client already holds: metadata `accesstoken`, `instanceurl`, `tenantid` (the org id from the
  login's identity URL) [doc: Pub/Sub API guide, "Supported Authentication"]. A call refused as unauthenticated
  logs in again once (the REST client's shared authenticator) and is repeated; refused again, it is `AuthFailed`.
- `subscribe(topic, replay_id, ...)` is an async context manager giving a `Subscription`: `request(n)` adds n to
  the events the server may send (the API's pull-based flow control, FetchRequest.num_requested), and iterating
  it yields each `FetchResponse`'s events, decoded. A response can be empty: a keepalive (its latest replay id is
  not used: events still held back for want of credit may lie before it), sent within 270 s while nothing is
  delivered [doc: pubsub_api.proto].
- Payloads are Avro, written with the schema their `schema_id` names; schemas are fetched with GetSchema once and
  kept by id (an object's schema changes when a field is added, so a new id can come mid-stream).
- Errors: the API ends a stream with a gRPC status and a custom code in the trailers [doc: "Handle Errors"].
  A replay id it cannot resume from (older than the 72 h retention, or unknown) is `ReplayIdRejected`; an
  authentication failure that survives the re-login is `AuthFailed`; every other end is `StreamEnded`
  (retryable: the caller resubscribes from the last replay id it committed).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import fastavro
import grpc
import grpc.aio

from revdaemon.connectors.pubsub_api import pubsub_api_pb2 as pb2
from revdaemon.connectors.pubsub_api import pubsub_api_pb2_grpc as pb2_grpc
from revdaemon.connectors.salesforce import SalesforceAuthenticator
from revdaemon.connectors.salesforce_wire import Token
from revdaemon.errors import AuthFailed, ErrorContext, Retryable, SyncError

SYSTEM = "salesforce"
ERROR_CODE_KEY = "error-code"  # the trailer that carries the Pub/Sub API's own code [doc: "Handle Errors"]
REPLAY_ID_REJECTED = "replayid"  # ...subscription.fetch.replayid.corrupted / .invalid: cannot resume there
CALL_TIMEOUT_SECONDS = 30.0  # GetSchema, GetTopic


class StreamEnded(Retryable):
    """The subscription's stream ended (the server closed it, the connection dropped): subscribe again."""


class ReplayIdRejected(SyncError):
    """The server cannot resume after the given replay id (expired from the retention window, or not its own)."""


@dataclass(frozen=True, kw_only=True)
class Received:
    """One event as delivered: its Avro record decoded, the schema it was written with, and its position."""

    record: Mapping[str, Any]
    schema: Mapping[str, Any]
    replay_id: bytes


class PubSubClient:
    def __init__(self, target: str, auth: SalesforceAuthenticator, *, tls: bool = True,
                 instance_url: str | None = None) -> None:
        self.target = target  # host:port, api.pubsub.salesforce.com:7443 for every org
        self._auth = auth
        self._tls = tls
        self._instance_url = instance_url  # settings.salesforce.instance_url, when set: what REST uses too
        self._channel: grpc.aio.Channel | None = None
        self._schemas: dict[str, tuple[Mapping[str, Any], Any]] = {}  # schema id -> (JSON, parsed)
        self.calls = 0  # RPCs started (subscriptions and schema reads), for status and benchmarks

    def _stub(self) -> pb2_grpc.PubSubStub:
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials()) if self._tls \
                else grpc.aio.insecure_channel(self.target)
        return pb2_grpc.PubSubStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def _metadata(self, stale: Token | None = None) -> tuple[Token, tuple[tuple[str, str], ...]]:
        token = await (self._auth.refresh(stale) if stale is not None else self._auth.token())
        if not token.org_id:
            raise AuthFailed("the Salesforce login named no org id (identity URL), which the Pub/Sub API needs",
                             ErrorContext(system=SYSTEM, operation="pubsub auth"))
        return token, (("accesstoken", token.access_token), ("instanceurl", self._instance_url or token.instance_url),
                       ("tenantid", token.org_id))

    def current_token(self) -> Token | None:
        """The session the REST client holds now: a stream opened with another one is renewed."""
        return self._auth.current_token

    async def relogin(self) -> None:
        """Log in again (the Pub/Sub API refused the session the REST client holds)."""
        await self._auth.refresh(self._auth.current_token)

    async def schema(self, schema_id: str) -> tuple[Mapping[str, Any], Any]:
        """The schema (JSON, and parsed for fastavro) of `schema_id`, read once."""
        known = self._schemas.get(schema_id)
        if known is not None:
            return known
        info = await self._unary("GetSchema", pb2.SchemaRequest(schema_id=schema_id))
        schema_json = json.loads(info.schema_json)
        parsed = fastavro.parse_schema(schema_json)
        self._schemas[schema_id] = (schema_json, parsed)
        return schema_json, parsed

    async def topic(self, topic_name: str) -> Any:
        """TopicInfo: whether this user can subscribe, and the topic's current schema id."""
        return await self._unary("GetTopic", pb2.TopicRequest(topic_name=topic_name))

    async def _unary(self, method: str, request: Any) -> Any:
        token, metadata = await self._metadata()
        for attempt in (1, 2):
            self.calls += 1
            try:
                return await getattr(self._stub(), method)(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNAUTHENTICATED and attempt == 1:
                    token, metadata = await self._metadata(stale=token)
                    continue
                raise _error(exc, method) from exc
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def subscribe(self, topic: str, *, replay_id: bytes | None,
                        num_requested: int) -> AsyncIterator[Subscription]:
        """A stream of `topic` after `replay_id` (None: from the tip, LATEST), with `num_requested` asked for."""
        first = pb2.FetchRequest(topic_name=topic, num_requested=num_requested,
                                 replay_preset=pb2.ReplayPreset.CUSTOM if replay_id else pb2.ReplayPreset.LATEST,
                                 replay_id=replay_id or b"")
        token, metadata = await self._metadata()
        self.calls += 1
        call = self._stub().Subscribe(metadata=metadata)
        subscription = Subscription(self, call, topic, token)
        try:
            await subscription.send(first)
            yield subscription
        finally:
            call.cancel()

    async def decode(self, event: Any) -> Received:
        schema_json, parsed = await self.schema(event.event.schema_id)
        record = fastavro.schemaless_reader(io.BytesIO(event.event.payload), parsed)
        if not isinstance(record, dict):
            raise StreamEnded(f"an event of schema {event.event.schema_id} is not a record", _context("Subscribe"))
        return Received(record=record, schema=schema_json, replay_id=bytes(event.replay_id))


class Subscription:
    """An open Subscribe stream: `request(n)` for more, `async for batch in subscription` for what comes."""

    def __init__(self, client: PubSubClient, call: Any, topic: str, token: Token) -> None:
        self._client = client
        self._call = call
        self.topic = topic
        self.token = token

    async def send(self, request: Any) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, "Subscribe") from exc
        except grpc.aio.UsageError as exc:  # the stream is already closed: its status comes with the next read
            raise StreamEnded(f"the subscription to {self.topic} is closed", _context("Subscribe")) from exc

    async def request(self, n: int) -> None:
        if n > 0:
            await self.send(pb2.FetchRequest(topic_name=self.topic, num_requested=n))

    def __aiter__(self) -> AsyncIterator[tuple[Received, ...]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[tuple[Received, ...]]:
        while True:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                raise _error(exc, "Subscribe") from exc
            if response is grpc.aio.EOF:
                raise StreamEnded(f"the server closed the subscription to {self.topic}", _context("Subscribe"))
            yield tuple([await self._client.decode(event) for event in response.events])


def _error(exc: grpc.aio.AioRpcError, method: str) -> SyncError:
    code = next((str(v) for k, v in exc.trailing_metadata() or () if k == ERROR_CODE_KEY), None)
    context = ErrorContext(system=SYSTEM, operation=f"pubsub {method}", error_code=code or exc.code().name)
    message = f"{exc.code().name}: {exc.details() or ''}".strip()
    if code and REPLAY_ID_REJECTED in code:
        return ReplayIdRejected(message, context)
    if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthFailed(message, context)
    return StreamEnded(message, context)


def _context(method: str) -> ErrorContext:
    return ErrorContext(system=SYSTEM, operation=f"pubsub {method}")
