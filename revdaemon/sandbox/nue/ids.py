"""Nue-native ids: deterministic UUIDs for a seed, and the human numbers (O-, SUB-, INV-...)."""

from __future__ import annotations

import random
import threading
import uuid

from revdaemon.sandbox.nue import wire


class NueIds:
    def __init__(self, seed: int) -> None:
        # Offset so the Nue id stream differs from anything else seeded with the same number.
        self._rng = random.Random(f"nue-ids-{seed}")
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def number(self, kind: str) -> str:
        with self._lock:
            n = self._numbers.get(kind, 0) + 1
            self._numbers[kind] = n
        return wire.number(kind, n)
