"""Turning data and errors into HTTP responses (JSON numbers from Decimal, the assumed error body)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.types import Send

from revdaemon.sandbox.nue import wire
from revdaemon.sandbox.nue.settings import NueSimSettings


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_response(settings: NueSimSettings, status: int, message: str, error_code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response(wire.error_body(status, message, settings.error_body, error_code), status, headers)


async def send_raw(send: Send, status: int, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
    """For pure ASGI middleware that answers before the app (auth, faults)."""
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, settings: NueSimSettings, status: int, message: str,
                     headers: dict[str, str] | None = None) -> None:
    body = wire.dumps(wire.error_body(status, message, settings.error_body))
    await send_raw(send, status, body, "application/json", headers)
