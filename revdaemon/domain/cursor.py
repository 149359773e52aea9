"""Poll cursors: keyset on (modified time, id) with an overlap window and a signpost. Pure.

Copied from Meltano's bookmarks (style.md §3, §8):
- the query reads from `cursor.at - overlap`, ordered by (time, id), so a row committed late with an
  older timestamp is still read (the inbox dedupes by (id, time), so re-reading costs nothing);
- the cursor never passes the signpost (poll start minus a safety lag): rows changed during this poll
  are read again next time rather than skipped;
- a page that goes backwards raises `UnsortedPage` instead of silently skipping rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SEPARATOR = "|"


class UnsortedPage(ValueError):
    """A page declared sorted by (time, id) went backwards."""


@dataclass(frozen=True, order=True)
class Cursor:
    at: datetime
    last_id: str = ""

    def encode(self) -> str:
        return f"{self.at.astimezone(UTC).isoformat()}{SEPARATOR}{self.last_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        at, _, last_id = text.partition(SEPARATOR)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError(f"cursor time must carry a timezone: {text!r}")
        return cls(at=parsed, last_id=last_id)


def query_floor(cursor: Cursor | None, *, overlap: timedelta, start: datetime) -> datetime:
    """Where the next poll starts reading: the cursor minus the overlap, or `start` the first time."""
    return start if cursor is None else cursor.at - overlap


def advance(cursor: Cursor | None, page: Sequence[tuple[datetime, str]], *, signpost: datetime) -> Cursor | None:
    """The cursor after a page of (time, id) keys, never beyond the signpost and never backwards."""
    previous: tuple[datetime, str] | None = None
    for key in page:
        if previous is not None and key < previous:
            raise UnsortedPage(f"page went backwards: {key} after {previous}")
        previous = key
    if previous is None:
        return cursor
    candidate = Cursor(at=previous[0], last_id=previous[1])
    if candidate.at > signpost:
        candidate = Cursor(at=signpost, last_id="")
    if cursor is not None and candidate <= cursor:
        return cursor
    return candidate
