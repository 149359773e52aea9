"""Salesforce record ids: 15 case-sensitive base-62 characters plus a 3-character checksum.

salesforce-api.md §5: the first 3 characters are the key prefix; the checksum splits the 15-character id
into 3 chunks of 5, sets bit i for each uppercase letter at position i (LSB first), and indexes
`ABCDEFGHIJKLMNOPQRSTUVWXYZ012345`.
"""

from __future__ import annotations

import itertools
import threading

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
POD = "5g"  # the two characters after the prefix; constant in one simulated org

KEY_PREFIXES: dict[str, str] = {
    "Account": "001",
    "Note": "002",
    "Contact": "003",
    "User": "005",
    "Opportunity": "006",
    "Task": "00T",
    "Event": "00U",
    "OpportunityLineItem": "00k",
    "Contract": "800",
    "Order": "801",
    "Product2": "01t",
    "Pricebook2": "01s",
    "PricebookEntry": "01u",
    "Organization": "00D",
    "QueryLocator": "01g",
}
CUSTOM_PREFIX_START = "a0"  # custom objects: a00, a01, ... per org


def checksum(id15: str) -> str:
    if len(id15) != 15:
        raise ValueError(f"a Salesforce id has 15 characters before its checksum, got {len(id15)}")
    suffix = ""
    for chunk in range(3):
        bits = 0
        for position in range(5):
            char = id15[chunk * 5 + position]
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += CHECKSUM_ALPHABET[bits]
    return suffix


def to18(id15: str) -> str:
    return id15 + checksum(id15)


def is_valid_id(value: str) -> bool:
    if len(value) == 15:
        return all(c in BASE62 for c in value)
    if len(value) == 18:
        return all(c in BASE62 for c in value[:15]) and checksum(value[:15]).lower() == value[15:].lower()
    return False


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    if number:
        raise ValueError("id counter overflow")
    return "".join(reversed(digits))


class IdFactory:
    """Makes 18-character ids in sequence per key prefix; the seed picks where each sequence starts."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._counters: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        if len(prefix) != 3:
            raise ValueError(f"a key prefix has 3 characters, got {prefix!r}")
        with self._lock:
            counter = self._counters.get(prefix)
            if counter is None:
                # Spread the seed over the high digits so two seeds never share ids.
                counter = itertools.count(1 + (self._seed % 3844) * 62**7)
                self._counters[prefix] = counter
            number = next(counter)
        return to18(prefix + POD + _base62(number, 10))

    def for_object(self, sobject: str) -> str:
        return self.new(KEY_PREFIXES[sobject])
