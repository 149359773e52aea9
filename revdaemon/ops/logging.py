"""The one structlog pipeline: JSON lines for journald, colours on a terminal, secrets never written.

`configure_logging` is called once at start-up (and again on reload); everything else asks
`structlog.get_logger()` and binds per-event context with `structlog.contextvars.bound_contextvars`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# Keys whose values are secret wherever they appear, compared case-insensitively with - and _ folded.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "nue_api_key",
        "api_key",
        "apikey",
        "password",
        "secret",
        "client_secret",
        "webhook_secret",
        "webhook_path_token",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "assertion",
        "private_key",
        "signature",
        "nue_signature",
        "cookie",
        "set_cookie",
    }
)


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


class RedactSecrets:
    """Processor that blanks secret-named keys (recursively) and scrubs known secret values from text.

    Bearer tokens in free text are blanked too, since a header can end up inside an error message.
    """

    __slots__ = ("_values",)

    def __init__(self, secret_values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        for value in secret_values:
            self.add(value)

    def add(self, value: str) -> None:
        """Scrub `value` from now on (a session token learned at run time)."""
        if len(value) >= 4 and value not in self._values:
            self._values.append(value)
            # Longest first so that a secret containing another is scrubbed whole.
            self._values.sort(key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: str | bytes, value: Any) -> Any:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if _normalise(str(key)) in SECRET_KEYS and value is not None:
            return REDACTED
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, Mapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            # A list of (name, value) pairs is how headers travel; judge the value by its name.
            if all(isinstance(item, tuple) and len(item) == 2 for item in value):
                return [(k, self._clean(k, v)) for k, v in value]
            return [self._clean("", item) for item in value]
        return value

    def _scrub(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _scrub_bearer(text)


def _scrub_bearer(text: str) -> str:
    marker = "Bearer "
    start = text.find(marker)
    while start != -1:
        end = start + len(marker)
        stop = end
        while stop < len(text) and not text[stop].isspace() and text[stop] not in "\"',}":
            stop += 1
        if stop > end:
            text = text[:end] + REDACTED + text[stop:]
        start = text.find(marker, end + len(REDACTED))
    return text


_ACTIVE = RedactSecrets()


def active_redactor() -> RedactSecrets:
    """The running pipeline's redactor (for text that leaves the daemon other than through logs)."""
    return _ACTIVE


def register_secret(value: str) -> None:
    """Add a secret learned at run time (an access token) to the redactor of the running pipeline."""
    _ACTIVE.add(value)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _ACTIVE,
    ]


def _renderer(render_json: bool) -> Processor:
    return structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer(colors=True)


def build_processors(
    *, render_json: bool, secret_values: Iterable[str] = ()
) -> list[Processor]:
    for value in secret_values:
        _ACTIVE.add(value)
    return [*_shared_processors(), _renderer(render_json)]


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Libraries' own logging (APScheduler, uvicorn, asyncio) rendered by the same pipeline: one JSON line
    per record with its traceback inside, redacted like ours, instead of bare multi-line tracebacks."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        # Without a given stream, the current stderr (a test runner or a reload may have swapped it).
        self.stream = self._fixed or sys.stderr
        super().emit(record)


def _route_stdlib_logging(level: str, render_json: bool, stream: TextIO | None) -> None:
    handler = _StdlibHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(render_json)]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)  # a reload replaces ours; a test runner's own handlers stay
    root.addHandler(handler)
    # Libraries speak from warning up, whatever our level: their info and debug (every aiosqlite call,
    # each APScheduler run) would drown ours.
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    secret_values: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stderr
    render_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    structlog.configure(
        processors=build_processors(render_json=render_json, secret_values=secret_values),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(level, render_json, stream)
