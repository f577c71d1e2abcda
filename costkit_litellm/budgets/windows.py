"""Budget windows: rolling (``1m`` ... ``30d``), calendar (``day``, ``month`` in a timezone) or ``total``.

A window turns "now" into a *slot*: the id that goes into the limit's key (a new calendar day is a
new key, so spend starts again from zero), when the slot's state may be dropped, and when the
budget next resets (for ``Retry-After`` and messages).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

ROLLING_UNITS = {"m": 60, "h": 3600, "d": 86400}
ROLLING = ("1m", "1h", "1d", "7d", "30d")
CALENDAR = ("day", "month")
WINDOWS = (*ROLLING, *CALENDAR, "total")
WINDOW_HELP = "use 1m, 1h, 1d, 7d, 30d, day, month or total"
ROLLING_BUCKETS = 60
_ROLLING = re.compile(r"^(\d+)([mhd])$")


@dataclass(frozen=True, slots=True)
class Slot:
    """The current slot of a window."""

    id: str
    """Goes into the limit's key: ``r`` (rolling), ``2026-11-29``, ``2026-11`` or ``total``."""
    expires_at: float | None
    """Unix time when the slot's state may be dropped (calendar windows)."""
    window_s: float | None
    """Length of a rolling window (the store sums its buckets)."""
    resets_at: float | None
    """When spend next falls away: the calendar boundary, the next rolling bucket, None for total."""


def parse_window(text: str) -> str:
    """Validate a window name; raises ValueError with the accepted names."""
    if text in WINDOWS:
        return text
    raise ValueError(f"{text!r} is not a window; {WINDOW_HELP}")


@functools.lru_cache(maxsize=64)
def rolling_seconds(window: str) -> int | None:
    """Length in seconds of a rolling window, None for calendar and total windows."""
    match = _ROLLING.match(window)
    if not match:
        return None
    return int(match.group(1)) * ROLLING_UNITS[match.group(2)]


_TOTAL = Slot("total", None, None, None)
_EDGE_S = 0.001
"""Within this of a slot's edges the slot is computed afresh (``datetime.fromtimestamp`` rounds to
the microsecond: an instant a few nanoseconds before midnight already belongs to the next day)."""
_calendar: dict[tuple[str, ZoneInfo], tuple[float, float, Slot]] = {}
"""The last calendar slot computed per (window, timezone), with the span [start, end) it covers."""


def slot(window: str, now: float, tz: ZoneInfo) -> Slot:
    """The slot of ``window`` that contains ``now``."""
    seconds = rolling_seconds(window)
    if seconds is not None:
        bucket = seconds / ROLLING_BUCKETS
        return Slot("r", None, float(seconds), (now // bucket + 1) * bucket)
    if window == "total":
        return _TOTAL
    cached = _calendar.get((window, tz))
    if cached is not None and cached[0] + _EDGE_S <= now < cached[1] - _EDGE_S:
        return cached[2]
    start, current = _calendar_slot(window, now, tz)
    assert current.expires_at is not None
    _calendar[(window, tz)] = (start, current.expires_at, current)
    return current


def _calendar_slot(window: str, now: float, tz: ZoneInfo) -> tuple[float, Slot]:
    """The calendar slot of ``window`` containing ``now``, and the Unix time it starts."""
    local = datetime.fromtimestamp(now, tz)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe next midnight
        return start.timestamp(), Slot(start.strftime("%Y-%m-%d"), end.timestamp(), None, end.timestamp())
    if window == "month":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        return start.timestamp(), Slot(start.strftime("%Y-%m"), end.timestamp(), None, end.timestamp())
    raise ValueError(f"{window!r} is not a window; {WINDOW_HELP}")


def describe(window: str, tz: ZoneInfo) -> str:
    """Human words for a window: ``rolling 1h``, ``day (UTC)``, ``total``."""
    if rolling_seconds(window) is not None:
        return f"rolling {window}"
    if window == "total":
        return "total"
    return f"{window} ({tz.key})"
