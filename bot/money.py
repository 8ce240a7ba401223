"""Money as integer micro-dollars (1 USD = 1_000_000). Never floats: a float cannot hold $0.1344 exactly."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000

Micros = int


def usd(text: str | int | Decimal) -> Micros:
    """Parse a dollar amount ("1.25", "$0.5", 3) into micro-dollars; rejects fractions of a micro-dollar."""
    raw = str(text).strip().removeprefix("$").strip()
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a dollar amount (use e.g. 1.25)") from None
    if not amount.is_finite():
        raise ValueError(f"{text!r} is not a dollar amount (use e.g. 1.25)")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError(f"{text!r} has more than 6 decimal places")
    return int(micros)


def to_decimal(micros: Micros) -> Decimal:
    return Decimal(micros) / MICROS_PER_USD


def usd_str(micros: Micros) -> str:
    """A decimal string with at least two places and no trailing noise: 672000 -> "0.672", 2520000 -> "2.52"."""
    text = format(to_decimal(micros).normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def fmt_usd(micros: Micros) -> str:
    """For people: "$0.672", "-$1.00"."""
    sign = "-" if micros < 0 else ""
    return f"{sign}${usd_str(abs(micros))}"


def scale(micros: Micros, factor: Decimal | str) -> Micros:
    """Multiply by an exact decimal factor (e.g. "1.2"), rounding half-up to a whole micro-dollar."""
    return int((Decimal(micros) * Decimal(factor)).to_integral_value(rounding=ROUND_HALF_UP))
