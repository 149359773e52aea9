"""The OAuth token endpoint (salesforce-api.md §1) and the sessions it issues.

Flows: JWT bearer (§1.2), client credentials (§1.3), refresh token (§1.4). Errors are HTTP 400
`{"error", "error_description"}` (§1.5). Tokens carry no `expires_in` (§1.4): a session simply stops
working after `token_lifetime_seconds`, and REST calls then get 401 INVALID_SESSION_ID (§1.6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from revdaemon.sandbox.salesforce.settings import SalesforceSimSettings

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")  # §1.2
CLOCK_SKEW_SECONDS = 180  # "about 3 minutes of clock skew", §1.2
IDENTITY_BASE = "https://login.salesforce.com/id"  # §1.4


@dataclass(frozen=True, kw_only=True)
class Session:
    token: str
    user_id: str
    username: str
    issued_at: float


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.body = {"error": error, "error_description": description}


class Sessions:
    """Access tokens in memory; `check` forgets a token once its lifetime has passed."""

    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: str, username: str, org_id: str) -> Session:
        session = Session(token=f"{org_id[:15]}!AQ{secrets.token_urlsafe(72)}", user_id=user_id,
                          username=username, issued_at=self.clock())
        with self._lock:
            self._sessions[session.token] = session
        return session

    def check(self, token: str) -> Session | None:
        session = self._sessions.get(token)
        if session is None:
            return None
        if self.clock() - session.issued_at >= self.lifetime:
            with self._lock:
                self._sessions.pop(token, None)
            return None
        return session

    def expire_all(self) -> None:
        with self._lock:
            self._sessions.clear()


class TokenEndpoint:
    def __init__(self, settings: SalesforceSimSettings, sessions: Sessions, org_id: str,
                 user_id_of: Callable[[str], str | None]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.org_id = org_id
        self.user_id_of = user_id_of
        self.refresh_tokens: set[str] = set(settings.refresh_tokens)

    def issue_refresh_token(self) -> str:
        token = f"5Aep861{secrets.token_urlsafe(48)}"
        self.refresh_tokens.add(token)
        return token

    def exchange(self, form: Mapping[str, str], authorization: str | None, base_url: str) -> dict[str, Any]:
        """A token response body, or OAuthError for the 400 answers."""
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant type is missing")
        if grant == JWT_GRANT:
            username, scope = self._jwt(form.get("assertion", ""), base_url), "api"
        elif grant == "client_credentials":
            self._client(form, authorization, secret_required=True)
            if not self.settings.client_credentials_enabled:
                raise OAuthError("invalid_grant", "no client credentials user enabled")
            username, scope = self.settings.username, "api"
        elif grant == "refresh_token":
            self._client(form, authorization, secret_required=False)
            if form.get("refresh_token") not in self.refresh_tokens:
                raise OAuthError("invalid_grant", "expired access/refresh token")  # §1.5 [unverified wording]
            username, scope = self.settings.username, "refresh_token api"
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        user_id = self.user_id_of(username)
        if user_id is None:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        session = self.sessions.issue(user_id, username, self.org_id)
        issued_at = str(int(session.issued_at * 1000))  # milliseconds as a string, §1.4
        identity = f"{IDENTITY_BASE}/{self.org_id}/{user_id}"
        signature = base64.b64encode(hmac.new(self.settings.consumer_secret.encode(),
                                              (identity + issued_at).encode(), hashlib.sha256).digest()).decode()
        return {"access_token": session.token, "signature": signature, "scope": scope,
                "instance_url": base_url, "id": identity, "token_type": "Bearer", "issued_at": issued_at}

    def _jwt(self, assertion: str, base_url: str) -> str:
        key = self.settings.jwt_public_key_pem
        if not assertion or key is None:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_aud": False, "verify_iss": False,
                                         "verify_nbf": False, "verify_iat": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if claims.get("iss") != self.settings.consumer_key:
            raise OAuthError("invalid_client_id", "client identifier invalid")  # [unverified wording]
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        allowed = {*LOGIN_AUDIENCES, base_url, base_url.replace("http://", "https://", 1)}
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            expires = float(claims["exp"])  # simple-salesforce sends exp as a string, §1.2
        except (KeyError, TypeError, ValueError) as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if self.sessions.clock() > expires + CLOCK_SKEW_SECONDS:
            raise OAuthError("invalid_grant", "expired authorization code")
        username = claims.get("prn") or claims.get("sub")  # prn wins over sub, §1.2
        if username != self.settings.username:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return str(username)

    def _client(self, form: Mapping[str, str], authorization: str | None, *, secret_required: bool) -> None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", "invalid client credentials") from exc
            client_id, _, secret = decoded.partition(":")
        if client_id != self.settings.consumer_key:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if (secret_required or secret is not None) and secret != self.settings.consumer_secret:
            raise OAuthError("invalid_client", "invalid client credentials")  # §1.5 [unverified wording]
