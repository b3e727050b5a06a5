"""Human-readable sizes ("64MB") as LitData spells them: decimal units, case-insensitive."""

from __future__ import annotations

import re

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str | None, name: str = "size") -> int | None:
    """Return a byte count for an int or a string such as ``"64MB"`` (decimal) or ``"1GiB"`` (binary)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise LitStreamingTypeError(f"`{name}` must be an int or a size string like '64MB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise LitStreamingValueError(f"`{name}` must be positive, got {value}")
        return value
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match and match.group(2).lower() in _UNITS:
            number = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if number >= 1:
                return int(number)
        raise LitStreamingValueError(
            f"`{name}`={value!r} is not a size; use an int or a string like '64MB' or '1GiB'"
        )
    raise LitStreamingTypeError(
        f"`{name}` must be an int or a size string like '64MB', got {type(value).__name__}"
    )
