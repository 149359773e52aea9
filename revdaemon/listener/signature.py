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
        raise SignatureError("missing signature: no Nue-Signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    stamp = parts.get("t", [""])[0].strip()
    # Unix seconds in ASCII digits: int() alone would take "+1_0", other scripts' digits, and numbers too
    # large to subtract from a float clock (OverflowError, a 500 rather than a 401).
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
        raise SignatureError("malformed signature header: t=<unix seconds> missing or not a number")
    timestamp = int(stamp)
    candidates = parts.get("v1", [])
    if not candidates:
        raise SignatureError("malformed signature header: v1=<hex HMAC-SHA256> missing")
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError("signature timestamp outside tolerance")
    expected = sign(body, secret, timestamp).split("v1=", 1)[1].encode()
    # Compare every candidate (key rotation sends several v1 values) in constant time, as bytes: a
    # non-ASCII str would make compare_digest raise instead of answering.
    wellformed = [c.encode() for c in candidates if len(c) == HEX_DIGEST_LENGTH and _is_hex(c)]
    if not any(hmac.compare_digest(expected, candidate) for candidate in wellformed):
        raise SignatureError("signature does not match")


def token_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


HEX_DIGEST_LENGTH = 64  # SHA-256 in hex
MAX_TIMESTAMP_DIGITS = 12  # Unix seconds until the year 33658


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
