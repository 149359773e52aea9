"""A small server-rendered SVG bar chart: events finished per minute over the last hour. No JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from revdaemon.store.records import MinuteCount


@dataclass(frozen=True, kw_only=True)
class Bar:
    minute: datetime
    count: int


def minute_bars(counts: Sequence[MinuteCount], now: datetime, minutes: int = 60) -> list[Bar]:
    """One bar per minute of the last `minutes`, oldest first, zero where nothing finished."""
    by_minute = {c.minute: c.count for c in counts}
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    return [Bar(minute=start + timedelta(minutes=i), count=by_minute.get(start + timedelta(minutes=i), 0))
            for i in range(minutes)]


TOP = 18  # room above the bars for the peak label, so the newest (often tallest) bar never hides it


def bar_chart_svg(bars: Sequence[Bar], *, width: int = 900, height: int = 120, label: str) -> str:
    """An accessible SVG (role=img with a title); each bar's title shows its minute and count on hover."""
    peak = max((b.count for b in bars), default=0) or 1
    slot = width / max(len(bars), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {TOP + height + 20}" role="img" '
             f'class="chart" aria-label="{escape(label)}"><title>{escape(label)}</title>',
             f'<text x="{width}" y="12" text-anchor="end">peak {peak}/min</text>']
    for index, bar in enumerate(bars):
        bar_height = round(bar.count / peak * height, 1)
        x = round(index * slot + 1, 1)
        parts.append(f'<rect x="{x}" y="{round(TOP + height - bar_height, 1)}" '
                     f'width="{round(max(slot - 2, 1), 1)}" height="{bar_height}">'
                     f'<title>{bar.minute:%H:%M} UTC: {bar.count}</title></rect>')
    if bars:
        parts.append(f'<text x="0" y="{TOP + height + 15}">{bars[0].minute:%H:%M}</text>')
        parts.append(f'<text x="{width}" y="{TOP + height + 15}" text-anchor="end">'
                     f'{bars[-1].minute:%H:%M} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)
