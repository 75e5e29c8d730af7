"""argparse types that check ranges while the command line is parsed, before any image is read.

``type=int_range(1)`` refuses ``--batch-size 0`` with argparse's own usage error (exit 2), naming the
option and the range, instead of the command loading every image first and failing (or silently
running) later. Upper bounds come from :data:`evaluators.limits.KNOBS` where a knob scales the work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_range(lo: int, hi: int | None = None, *, zero: bool = False) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``[lo, hi]`` (``zero``: 0 also accepted, meaning 'none')."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if zero and value == 0:
            return 0
        if value < lo or (hi is not None and value > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number {span}"
                                             + (" (or 0 for none)" if zero else ""))
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


def knob(name: str, *, zero: bool = False) -> Callable[[str], int]:
    """:func:`int_range` over a knob's local range (the table in :mod:`evaluators.limits`)."""
    from .limits import KNOBS

    k = KNOBS[name]
    return int_range(max(k.minimum, 1 if zero else k.minimum), k.local_max, zero=zero)


def float_range(lo: float, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: give a number "
                                             + (f"between {lo:g} and {hi:g}" if hi is not None else
                                                f"{'>' if lo_open else '>='} {lo:g}"))
        return value

    parse.__name__ = "number"
    return parse


__all__ = ["float_range", "int_range", "knob"]
