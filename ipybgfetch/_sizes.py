"""Human-readable byte sizes: ``parse_size("1.5GiB")`` and ``format_size(1536)``.

SI units are powers of 1000 (``k``/``kB``, ``MB``, ``GB``, ``TB``, ``PB``, ``EB``), IEC units
are powers of 1024 (``KiB``, ``MiB``, ``GiB``, ``TiB``, ``PiB``, ``EiB``). Units are
case-insensitive (``2gb`` == ``2GB``), a space between number and unit is allowed (``60 MB``),
and a plain number (``123`` or ``"123"``) is a number of bytes.

    >>> parse_size("60MB")
    60000000
    >>> parse_size("1.5GiB")
    1610612736
    >>> format_size(1536)
    '1.5 KiB'
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["format_size", "parse_size"]

#: What every error message shows as a correct way to write a size.
SIZE_EXAMPLES = "'123' (bytes), '60MB', '60 MB', '1.5GiB' or '10KiB'"

_KB = 1000
_KIB = 1024

#: Unit (lower case) -> multiplier. SI = powers of 1000, IEC = powers of 1024.
UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "k": _KB,
    "kb": _KB,
    "m": _KB**2,
    "mb": _KB**2,
    "g": _KB**3,
    "gb": _KB**3,
    "t": _KB**4,
    "tb": _KB**4,
    "p": _KB**5,
    "pb": _KB**5,
    "e": _KB**6,
    "eb": _KB**6,
    "ki": _KIB,
    "kib": _KIB,
    "mi": _KIB**2,
    "mib": _KIB**2,
    "gi": _KIB**3,
    "gib": _KIB**3,
    "ti": _KIB**4,
    "tib": _KIB**4,
    "pi": _KIB**5,
    "pib": _KIB**5,
    "ei": _KIB**6,
    "eib": _KIB**6,
}

# A number (digits with optional single underscores, optional fraction), optional spaces,
# then an optional unit made of letters.
_SIZE_RE = re.compile(
    r"""
    ^(?P<number>(?:\d+(?:_\d+)*)(?:\.\d*)?|\.\d+)
    \s*
    (?P<unit>[A-Za-z]*)$
    """,
    re.VERBOSE,
)

_FORMAT_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _error(value: object, reason: str) -> ValueError:
    return ValueError(f"invalid size {value!r}: {reason}; write a size like {SIZE_EXAMPLES}")


def parse_size(value: str | int) -> int:
    """Parse a size in bytes from an ``int`` or a string such as ``"60MB"`` or ``"1.5GiB"``.

    ``k``/``kB``/``MB``/``GB``/``TB``/``PB`` are powers of 1000; ``KiB``/``MiB``/``GiB``/
    ``TiB``/``PiB`` are powers of 1024; case does not matter. A fractional number with a
    unit is rounded to the nearest byte (``"1.1KiB"`` -> 1126); a fractional number of
    plain bytes (``"1.5"``, ``"1.5B"``) is an error.

    Raises:
        ValueError: for negative, NaN/infinite, empty or fractional byte counts and
            unknown units; the message shows a correct example.

    >>> parse_size(123), parse_size("10k"), parse_size("10KiB"), parse_size("2gb")
    (123, 10000, 10240, 2000000000)
    """
    if isinstance(value, bool):
        raise _error(value, "a bool is not a size")
    if isinstance(value, int):
        if value < 0:
            raise _error(value, "a size cannot be negative")
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _error(value, "a size must be a finite number")
        if value < 0:
            raise _error(value, "a size cannot be negative")
        if not value.is_integer():
            raise _error(value, "a number of bytes must be a whole number")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(
            f"a size must be an int or a str, not {type(value).__name__}; "
            f"write a size like {SIZE_EXAMPLES}"
        )

    text = value.strip()
    if not text:
        raise _error(value, "the size is empty")
    if text.startswith("-"):
        raise _error(value, "a size cannot be negative")
    if text.startswith("+"):
        text = text[1:].lstrip()
    match = _SIZE_RE.match(text)
    if match is None:
        lowered = text.lower()
        if lowered in {"nan", "inf", "infinity"}:
            raise _error(value, "a size must be a finite number")
        raise _error(value, "expected a number followed by an optional unit")
    number_text, unit_text = match.group("number"), match.group("unit")
    unit = unit_text.lower()
    if unit not in UNITS:
        if unit in {"nan", "inf", "infinity"}:
            raise _error(value, "a size must be a finite number")
        known = "B, kB, MB, GB, TB, PB, EB, KiB, MiB, GiB, TiB, PiB, EiB"
        raise _error(value, f"unknown unit {unit_text!r} (known units: {known})")
    multiplier = UNITS[unit]
    try:
        number = Decimal(number_text.replace("_", ""))
    except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
        raise _error(value, "expected a number followed by an optional unit") from None
    exact = number * multiplier
    if multiplier == 1 and exact != exact.to_integral_value():
        raise _error(value, "a number of bytes must be a whole number")
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_size(n: int) -> str:
    """Format a byte count with IEC units and one decimal: ``"0 B"``, ``"1.0 KiB"``.

    Counts below 1024 are shown exactly (``"1023 B"``). The result parses back with
    :func:`parse_size` to within the rounding of the last digit.

    >>> format_size(0), format_size(1024), format_size(60 * 2**20)
    ('0 B', '1.0 KiB', '60.0 MiB')
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"format_size() takes an int number of bytes, not {type(n).__name__}")
    if n < 0:
        return "-" + format_size(-n)
    if n < _KIB:
        return f"{n} B"
    exponent = 0
    value = Decimal(n)
    while exponent < len(_FORMAT_UNITS) - 1:
        scaled = (Decimal(n) / (_KIB ** (exponent + 1))).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )
        if scaled < 1:
            break
        exponent += 1
        value = scaled
        if scaled < _KIB:
            break
    return f"{value} {_FORMAT_UNITS[exponent]}"
