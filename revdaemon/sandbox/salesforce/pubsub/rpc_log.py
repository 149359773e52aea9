"""Every Pub/Sub RPC the simulator answered (the gRPC counterpart of server.RequestLog)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class LoggedRpc:
    method: str  # Subscribe, GetSchema, GetTopic, ...
    topic: str  # the topic (or schema id for GetSchema); "" when the call named none
    status: str  # the gRPC status name it ended with: OK, CANCELLED (client hung up), UNAUTHENTICATED, ...
    error_code: str  # Salesforce's error-code trailer, "" on success
    rpc_id: str
    events: int  # events delivered (Subscribe)
    at: float  # unix time the call arrived

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RpcLog:
    def __init__(self) -> None:
        self._entries: list[LoggedRpc] = []
        self._lock = threading.Lock()

    def add(self, entry: LoggedRpc) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[LoggedRpc]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
