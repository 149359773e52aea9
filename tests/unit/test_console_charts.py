"""The overview's chart: one bar per minute, zeros filled in, text escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from revdaemon.console.charts import bar_chart_svg, minute_bars
from revdaemon.store.records import MinuteCount

NOW = datetime(2026, 11, 26, 12, 30, 45, tzinfo=UTC)


def test_sixty_bars_with_the_gaps_as_zero() -> None:
    minute = NOW.replace(second=0, microsecond=0)
    bars = minute_bars([MinuteCount(minute=minute, count=7), MinuteCount(minute=minute - timedelta(minutes=5),
                                                                         count=3)], NOW)
    assert len(bars) == 60 and bars[-1].count == 7 and bars[-6].count == 3 and sum(b.count for b in bars) == 10
    assert bars[0].minute == minute - timedelta(minutes=59)


def test_svg_scales_to_the_peak_and_escapes_its_label() -> None:
    bars = minute_bars([MinuteCount(minute=NOW.replace(second=0, microsecond=0), count=4)], NOW)
    svg = bar_chart_svg(bars, label="<b>events</b>")
    assert svg.count("<rect") == 60 and "peak 4/min" in svg and "&lt;b&gt;events&lt;/b&gt;" in svg
    assert 'height="120.0"' in svg  # the peak bar is full height
