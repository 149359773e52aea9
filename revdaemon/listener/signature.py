"""Webhook authentication as nue-api.md assumes it: `Nue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`
over "<t>.<raw body>", with a timestamp tolerance; or a secret path token. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac


class SignatureError(Exception):
    """Why a webhook was not authenticated (said in the 401 body; never includes the secret)."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(header: str | None, body: bytes, secret: str, *, now: float, tolerance_seconds: int) -> None:
    """Raise `SignatureError` unless `header` signs `body` with `secret`, within the tolerance of `now`."""
    if not header:
        raise SignatureError("missing signature")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("malformed signature header") from None
    candidates = parts.get("v1", [])
    if not candidates:
        raise SignatureError("malformed signature header")
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("signature timestamp outside tolerance")
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    # Compare every candidate (key rotation sends several v1 values) in constant time.
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match")


def token_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())
