"""What can be the id of a stored row, stated once for every door an id comes in by (a console URL or form,
a command-line argument, a service call).

Every table's id counts from 1 in a signed 64-bit column (SQLite INTEGER PRIMARY KEY, PostgreSQL BIGINT
identity). A number past 2^63 - 1 names no row, and neither driver can even send it as a parameter: both
raise OverflowError. So an id from outside is checked here before any query, and one that cannot exist is
answered like one that does not.
"""

from __future__ import annotations

import re

STORE_ID_MIN = 1
STORE_ID_MAX = 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT are signed 64-bit
MAPPING_VERSION_MAX = 2**31 - 1  # mapping_versions.version is a PostgreSQL INTEGER (store/migrations.py)


def is_store_id(value: int) -> bool:
    return STORE_ID_MIN <= value <= STORE_ID_MAX


def is_mapping_version(value: int) -> bool:
    return 1 <= value <= MAPPING_VERSION_MAX


def decimal_pattern(high: int) -> str:
    """A regular expression for exactly the numbers 1..`high` in plain decimal (no sign, no leading zero).

    A URL route can only match text, and its converter cannot refuse a value, so the bound has to be in the
    pattern: every shorter number, then each number of `high`'s length that is smaller at its first differing
    digit, then `high` itself. Matching never converts, so a thousand digits cost nothing.
    """
    digits = str(high)
    width = len(digits)
    choices = [f"[1-9][0-9]{{0,{width - 2}}}"] if width > 1 else []
    for i, digit in enumerate(digits):
        lowest = 1 if i == 0 else 0
        if int(digit) > lowest:
            choices.append(f"{digits[:i]}[{lowest}-{int(digit) - 1}][0-9]{{{width - i - 1}}}")
    choices.append(digits)
    return "(?:" + "|".join(choices) + ")"


STORE_ID_PATTERN = decimal_pattern(STORE_ID_MAX)
_STORE_ID = re.compile(STORE_ID_PATTERN)


def parse_store_id(text: str) -> int | None:
    """The id `text` names, or None when no stored row can have it: not a plain number, 0, or past 2^63 - 1."""
    return int(text) if _STORE_ID.fullmatch(text) else None
