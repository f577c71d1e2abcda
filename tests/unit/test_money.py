"""Integer nano-dollars: conversion at the edges is exact and formatting is human."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costkit_litellm.money import (
    NANO_PER_USD,
    MoneyError,
    format_usd,
    format_usd_short,
    nano_to_decimal,
    nano_to_float,
    usd_to_nano,
)


class TestUsdToNano:
    @pytest.mark.parametrize(
        ("amount", "nano"),
        [
            (1, 1_000_000_000),
            (0, 0),
            ("0.15", 150_000_000),
            (Decimal("2.5"), 2_500_000_000),
            (1.35e-05, 13_500),
            (0.1, 100_000_000),
            (-0.25, -250_000_000),
            ("1e-9", 1),
        ],
    )
    def test_converts_exactly(self, amount, nano):
        """Dollars in any accepted form become the nano-dollar integer a human would write."""
        assert usd_to_nano(amount) == nano

    def test_floats_are_read_through_repr(self):
        """A float cost sums without drift: 10,000 x 1.35e-05 is exactly 135,000,000 n$."""
        assert sum(usd_to_nano(1.35e-05) for _ in range(10_000)) == 135_000_000

    @pytest.mark.parametrize(("amount", "nano"), [("0.0000000005", 0), ("0.0000000015", 2)])
    def test_sub_nano_rounds_half_to_even(self, amount, nano):
        """Fractions of a nano-dollar round half to even."""
        assert usd_to_nano(amount) == nano

    @pytest.mark.parametrize("bad", ["abc", "", float("nan"), float("inf"), "Infinity", True])
    def test_rejects_what_is_not_money(self, bad):
        """Text, booleans and non-finite numbers raise ``MoneyError`` (a ``ValueError``)."""
        with pytest.raises(MoneyError):
            usd_to_nano(bad)
        assert issubclass(MoneyError, ValueError)


class TestBackToDollars:
    def test_decimal_is_exact(self):
        """``nano_to_decimal`` is the exact inverse of ``usd_to_nano``."""
        assert nano_to_decimal(13_500) == Decimal("0.0000135")
        assert usd_to_nano(nano_to_decimal(123_456_789_123)) == 123_456_789_123

    def test_float_for_metrics(self):
        """``nano_to_float`` gives dollars as a float."""
        assert nano_to_float(NANO_PER_USD // 4) == 0.25


class TestFormatting:
    @pytest.mark.parametrize(
        ("nano", "places", "text"),
        [
            (13_500, 9, "0.000013500"),
            (1_500_000_000, 2, "1.50"),
            (0, 9, "0.000000000"),
            (5, 8, "0.00000000"),
            (15, 8, "0.00000002"),
            (-2_000_000_000, 2, "-2.00"),
        ],
    )
    def test_format_usd_is_plain_decimal(self, nano, places, text):
        """Fixed places, half-even rounding, never an exponent."""
        assert format_usd(nano, places) == text

    @pytest.mark.parametrize(
        ("nano", "text"),
        [
            (1_234_000_000, "$1.234"),
            (1_800_000_000, "$1.80"),
            (0, "$0"),
            (10_000_000, "$0.01"),
            (12_000_000, "$0.012"),
            (123_456_789_012, "$123.46"),
            (13_500, "$0.0000135"),
            (1, "$0.000000001"),
            (-3_000_000, "-$0.003"),
        ],
    )
    def test_format_usd_short_for_humans(self, nano, text):
        """Cents from $100, up to six places below (at least two), every place under a cent, sign first."""
        assert format_usd_short(nano) == text


class TestFastPaths:
    @settings(max_examples=2000, deadline=None)
    @given(st.floats(allow_nan=False, allow_infinity=False, width=64) | st.floats(1e-12, 1e3))
    def test_a_float_converts_exactly_as_through_decimal(self, amount: float) -> None:
        """The integer path for floats gives the same nano-dollars as Decimal(repr) with half-even rounding."""
        expected = int((Decimal(repr(amount)) * Decimal(10**9)).to_integral_value(rounding=ROUND_HALF_EVEN))
        assert usd_to_nano(amount) == expected

    @settings(max_examples=1000, deadline=None)
    @given(st.integers(-(10**20), 10**20))
    def test_nine_places_format_as_the_exact_decimal(self, amount: int) -> None:
        """format_usd with 9 places is the exact decimal of the nano-dollars, sign included."""
        assert format_usd(amount) == f"{(Decimal(amount) / Decimal(10**9)).quantize(Decimal('1e-9')):f}"
