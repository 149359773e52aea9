"""Reading a Nue webhook body into an inbox event. Pure.

Envelope [assumed, nue-api.md]: {"id", "type", "createdDate", "data": {...resource}}. The event key is the
envelope id; without one, (type, resource id, lastModifiedDate), so that a redelivery dedupes and a later
real change of the same resource does not.
"""

from __future__ import annotations

import json
from typing import Any

from revdaemon.store.records import NewEvent

SOURCE = "nue_webhook"
MAX_KEY_PART = 200


class EnvelopeError(Exception):
    """The body is not a usable webhook notification (answered 400)."""


def parse_notification(body: bytes) -> NewEvent:
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError):
        # a number of thousands of digits, or nesting deeper than the parser allows
        raise EnvelopeError("malformed JSON: a value too large or too deeply nested") from None
    if not isinstance(document, dict):
        raise EnvelopeError("the body must be a JSON object")
    event_type = document.get("type")
    if not isinstance(event_type, str) or not event_type or "." not in event_type:
        raise EnvelopeError("missing field: type (e.g. \"order.activated\")")
    data = document.get("data")
    if not isinstance(data, dict):
        raise EnvelopeError("missing field: data (the resource object)")
    resource_id = data.get("id")
    if not isinstance(resource_id, str) or not resource_id:
        raise EnvelopeError("missing field: data.id")
    event_id = document.get("id")
    if isinstance(event_id, str) and event_id:
        key = f"nue:{_part(event_id)}"
    else:
        modified = data.get("lastModifiedDate") or document.get("createdDate")
        if not isinstance(modified, str) or not modified:
            raise EnvelopeError("missing field: id, or data.lastModifiedDate to key the event by")
        key = f"nue:{_part(event_type)}:{_part(resource_id)}:{_part(modified)}"
    return NewEvent(source=SOURCE, key=key, type=event_type, payload=document)


def _part(value: str) -> str:
    if len(value) > MAX_KEY_PART:
        raise EnvelopeError("an identifier in the envelope is too long")
    if not value.isprintable() or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise EnvelopeError("an identifier in the envelope holds control or unpaired surrogate characters")
    return value
