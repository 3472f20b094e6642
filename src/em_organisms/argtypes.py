"""Number types for command-line flags: finite, in range, or refused with the range named.

argparse turns a refusal into `error: argument --n: ...` and exit status 2, before anything
loads. `integer(1)` is a count of at least one; `number(above=0, high=1)` is a value in (0, 1].
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _range(low: float | None, high: float | None, above: float | None, below: float | None) -> str:
    parts = []
    if low is not None:
        parts.append(f">= {low:g}")
    if above is not None:
        parts.append(f"> {above:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    return " and ".join(parts)


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: a whole number {_range(low, high, None, None)}"
            )
        return value

    return parse


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a finite number")
        out = (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
            or (below is not None and value >= below)
        )
        if out:
            raise argparse.ArgumentTypeError(
                f"{value:g} is out of range: a number {_range(low, high, above, below)}"
            )
        return value

    return parse


def _shown(text: str, limit: int = 40) -> str:
    """TEXT quoted for an error, cut short: a 5000-digit number is not worth repeating."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
