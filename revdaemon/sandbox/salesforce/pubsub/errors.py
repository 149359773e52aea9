"""Pub/Sub API failures: a gRPC status plus Salesforce's own error code, which it sends in the trailing metadata
under `error-code` [doc: https://developer.salesforce.com/docs/platform/pub-sub-api/guide/handling-errors.html]."""

from __future__ import annotations

import grpc

ERROR_CODE_KEY = "error-code"  # [doc] handling-errors.html: "[Trailer] = error-code"
RPC_ID_KEY = "rpc-id"  # [assumed] the docs say the rpcId is in the trailers too, without naming the key
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"  # [doc] handling-errors.html
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"  # [doc] same page
SERVICE_UNAVAILABLE = "sfdc.platform.eventbus.grpc.service.unavailable"  # [doc] same page
# [assumed] code names for a missing topic and schema; the status and wording of the topic case follow a
# Salesforce engineer's quoted error (github.com/pozil/pub-sub-api-java-client issue #2).
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.topic.notfound"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.notfound"
NUM_REQUESTED_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.requested.events.invalid"  # [assumed]


class PubSubError(Exception):
    """Ends an RPC with `status`, `code` in the trailers and the message suffixed with the rpcId."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def auth_error() -> PubSubError:
    return PubSubError(grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR,
                       "An authentication exception occurred. Provide valid authentication via metadata headers.")


def replay_id_corrupted() -> PubSubError:
    # [assumed] wording; the code and status are the documented ones.
    return PubSubError(grpc.StatusCode.INVALID_ARGUMENT, REPLAY_ID_CORRUPTED, "The Replay ID validation failed.")


def topic_not_found(org_id: str, topic: str) -> PubSubError:
    return PubSubError(grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND,
                       f"The topic information for org {org_id} and topic {topic} not found. Ensure the topic name "
                       f"is correct and that the topic exists.")
