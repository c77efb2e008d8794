"""argparse value types shared by the command line's subcommands (one line on bad input).

An out-of-range value is an argparse error: one line naming the option and the allowed
range, exit status 2 (see xipmodel.__main__.OneLineParser).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["int_in", "real_in"]


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in low..high, else a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid int value: {text!r} (allowed: {low}..{high})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in the allowed range {low}..{high}")
        return value

    return parse


def real_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high], else a message naming the range."""
    shown = f"[{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid float value: {text!r} (allowed: {shown})") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in the allowed range {shown}")
        return value

    return parse
