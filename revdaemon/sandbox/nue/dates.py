"""Calendar arithmetic in months, and a clock the scenario driver can move forward."""

from __future__ import annotations

import calendar
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from revdaemon.sandbox.nue.errors import bad_request


def add_months(start: date, months: int) -> date:
    year, month = divmod(start.month - 1 + months, 12)
    year += start.year
    month += 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def months_between(start: date, end: date) -> Decimal:
    """Whole months plus the remaining days as a fraction of the following month, to 4 places."""
    whole = (end.year - start.year) * 12 + end.month - start.month
    if add_months(start, whole) > end:
        whole -= 1
    anchor = add_months(start, whole)
    if anchor == end:
        return Decimal(whole)
    span = (add_months(start, whole + 1) - anchor).days
    return (Decimal(whole) + Decimal((end - anchor).days) / Decimal(span)).quantize(Decimal("0.0001"))


def parse_day(value: Any, field: str) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise bad_request(f"{field} must be an ISO date (YYYY-MM-DD), got {value!r}")


class Clock:
    """Wall-clock time plus an offset; timestamps of writes never repeat, so keyset polling is exact."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def today(self) -> date:
        return self.now().date()

    def stamp(self) -> datetime:
        with self._lock:
            current = self.now()
            moment = current.replace(microsecond=current.microsecond // 1000 * 1000)
            if moment <= self._last:
                moment = self._last + timedelta(milliseconds=1)
            self._last = moment
            return moment

    def advance(self, days: float) -> None:
        with self._lock:
            self._offset += timedelta(days=days)
