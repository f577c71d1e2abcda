"""Budget windows: the remembered calendar slot is always the one computed afresh, in any timezone and order."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from costkit_litellm.budgets import windows
from costkit_litellm.budgets.windows import slot

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "Asia/Kolkata")
START = datetime(2025, 1, 1).timestamp()
SPAN = 3 * 366 * 86400


class TestCalendarSlots:
    @settings(max_examples=300, deadline=None)
    @given(
        zone=st.sampled_from(ZONES),
        window=st.sampled_from(("day", "month")),
        offsets=st.lists(st.floats(0, SPAN, allow_nan=False), min_size=1, max_size=20),
        near=st.lists(st.floats(-7200, 7200, allow_nan=False) | st.floats(-1e-5, 1e-5, allow_nan=False), max_size=20),
    )
    def test_a_remembered_slot_equals_the_fresh_one(
        self, zone: str, window: str, offsets: list[float], near: list[float]
    ) -> None:
        """Times forwards, backwards, around midnights and DST changes: slot() answers as if it had no memory."""
        tz = ZoneInfo(zone)
        times = [START + o for o in offsets]
        for t, d in zip(times, near, strict=False):  # close to the boundary of the slot just seen
            boundary = slot(window, t, tz).expires_at
            assert boundary is not None
            times.append(boundary + d)
        for now in times:
            assert slot(window, now, tz) == windows._calendar_slot(window, now, tz)[1]

    def test_the_slot_turns_at_local_midnight(self) -> None:
        """The last instant before local midnight is in one day's slot, midnight itself in the next one's."""
        tz = ZoneInfo("Europe/Berlin")
        midnight = datetime(2026, 3, 29, tzinfo=tz).timestamp()  # the day Berlin moves to summer time
        before, after = slot("day", midnight - 0.001, tz), slot("day", midnight, tz)
        assert (before.id, after.id) == ("2026-03-28", "2026-03-29")
        next_midnight = datetime(2026, 3, 29, tzinfo=tz) + timedelta(days=1)
        assert after.expires_at == next_midnight.timestamp() and after.expires_at - midnight == 23 * 3600

    def test_an_instant_a_hair_before_midnight_is_in_the_day_datetime_puts_it_in(self) -> None:
        """0.12 us before midnight is midnight to datetime (it rounds to the us): the remembered slot agrees."""
        tz = ZoneInfo("UTC")
        midnight = datetime(2025, 1, 2, tzinfo=tz).timestamp()
        slot("day", midnight - 3600, tz)  # remember 2025-01-01
        for now in (midnight - 1.192092896e-07, midnight - 4e-7, midnight - 6e-7, midnight):
            assert slot("day", now, tz) == windows._calendar_slot("day", now, tz)[1]
