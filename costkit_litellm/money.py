"""Money as integer nano-dollars (1e-9 USD): parse, convert and format at the edges only.

All state (counters, reservations, ledger) holds ``Nano`` integers. A gpt-4o-mini call costs
about 13,500 n$, which micro-dollars would round away; floats drift over thousands of additions.
Python ints are exact at any size; the Redis store keeps amounts in Lua numbers (doubles), exact
up to 2**53 n$ (about $9 million) per counter.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import NewType

Nano = NewType("Nano", int)

NANO_PER_USD = 1_000_000_000
_NANO = Decimal(NANO_PER_USD)


class MoneyError(ValueError):
    """A value that cannot be read as an amount of US dollars."""


def usd_to_nano(amount: float | int | str | Decimal) -> Nano:
    """Convert dollars to nano-dollars, rounding half to even.

    Floats are read through ``repr`` (``1.35e-05`` stays exactly 13,500 n$), so a cost LiteLLM
    reports as a float converts to the integer a human would write down.
    """
    if isinstance(amount, bool):
        raise MoneyError(f"{amount!r} is not an amount of money")
    if type(amount) is float:
        exact = _float_to_nano(repr(amount))
        if exact is not None:
            return exact
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"{amount!r} is not an amount of money") from exc
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount of money")
    return Nano(int((value * _NANO).to_integral_value(rounding=ROUND_HALF_EVEN)))


def _float_to_nano(text: str) -> Nano | None:
    """A float's ``repr`` (``1.35e-05``, ``0.25``, ``-3.0``) as nano-dollars when that is exact
    without rounding; None otherwise (``Decimal`` then rounds). The integer path of the hot path:
    the same value ``Decimal`` gives, about ten times faster."""
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("-")
    if not digits.isdigit():
        return None  # inf, nan
    shift = (int(exponent) if exponent else 0) - len(fraction) + 9
    if shift < 0:
        return None
    value = int(digits) * 10**shift
    return Nano(-value if whole.startswith("-") else value)


def nano_to_decimal(amount: int) -> Decimal:
    """Exact dollars for a nano-dollar amount."""
    return Decimal(amount) / _NANO


def nano_to_float(amount: int) -> float:
    """Dollars as a float, for metrics and JSON; never feed it back into state."""
    return amount / NANO_PER_USD


def format_usd(amount: int, places: int = 9) -> str:
    """Dollars as a plain decimal string without exponent: ``format_usd(13500) == '0.000013500'``."""
    if places == 9:  # exact: integer formatting
        whole, fraction = divmod(abs(amount), NANO_PER_USD)
        return f"{'-' if amount < 0 else ''}{whole}.{fraction:09d}"
    quantum = Decimal(1).scaleb(-places)
    return f"{nano_to_decimal(amount).quantize(quantum, rounding=ROUND_HALF_EVEN):f}"


def format_usd_short(amount: int) -> str:
    """Dollars for humans: ``$1.80``, ``$0.012``, ``$0.0000135``, ``$1234.57``, ``$0``, ``-$0.003``."""
    if amount < 0:
        return "-" + format_usd_short(-amount)
    value = nano_to_decimal(amount)
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"
    if abs(value) >= Decimal("0.01"):
        value = value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN).normalize()
        text = f"{value:f}"
        whole, _, fraction = text.partition(".")
        return f"${whole}.{fraction.ljust(2, '0')}"
    return f"${value.normalize():f}"
