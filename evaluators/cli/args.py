"""Shared argparse pieces: range-checking types, the options several commands share, and deferred options.

Types check ranges while the command line is parsed, before any image is read.

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
    from ..limits import KNOBS

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


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse ``type``: ``kind(text)`` (int or float) that must be above zero."""

    def check(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v

    return check


def add_dtype_argument(parser) -> None:
    """``--encoder-dtype``, the same for every command that loads an encoder by name (fidelity, index, privacy)."""
    from ..encoders.base import ENCODER_DTYPES

    parser.add_argument("--encoder-dtype", default="float32", choices=ENCODER_DTYPES,
                        help="encoder precision: float32 (default; the reference libraries' numbers) or, on CUDA, "
                             "float16 / bfloat16 (features within ~1e-3, cached separately; RadDino runs 7x faster "
                             "in float16 on an H200)")


def add_preprocess_argument(parser) -> None:
    """``--preprocess``, the same for every command that extracts features (fidelity, index)."""
    from ..encoders.chexgenbench import CHOICES

    parser.add_argument(
        "--preprocess", default="auto", choices=CHOICES,
        help="pixels to the encoder: 'chexgenbench' = CheXGenBench's chain (PIL RGB, 299 px bilinear, uint8 "
             "truncation, then RadDino's processor), use it to compare with the published table; 'clean' = one "
             "float bicubic resize, no 8-bit round trip; 'auto' (default) = chexgenbench for raddino and inception, "
             "clean for other encoders. Cached separately per mode.")


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options can be added when it is first used (see :func:`add_options`).

    ``python -m evaluators --help`` builds every command's parser but parses or prints only the top one;
    a command whose choices and defaults come from an engine module (``fidelity``: ``MATCH_MODES``,
    ``--encoder-dtype``: torch dtypes) adds those options only when that command is parsed or its help
    printed, so listing the commands imports no engine module (no torch, numpy or pandas).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_options: list[Callable[[argparse.ArgumentParser], None]] = []

    def add_pending_options(self) -> None:
        while self._pending_options:
            self._pending_options.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):  # a subcommand is parsed through this too
        self.add_pending_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.add_pending_options()
        return super().format_usage()

    def format_help(self) -> str:
        self.add_pending_options()
        return super().format_help()


def add_options(parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]) -> None:
    """``add(parser)`` adds a command's options: on a :class:`CommandParser` when the command is first parsed or
    its help printed, on a plain ``ArgumentParser`` now. ``add`` imports the engine constants it needs."""
    if isinstance(parser, CommandParser):
        parser._pending_options.append(add)
    else:
        add(parser)


def add_derive_argument(parser) -> None:
    """``--no-derive-patient-ids``: honoured by handlers wrapped in :func:`honours_derive_flag`."""
    parser.add_argument("--no-derive-patient-ids", action="store_true",
                        help="do not take patient ids from file paths that follow the NIH ChestX-ray14, MIMIC-CXR "
                             "or CheXpert layout when a set has no patient_id column (default: derive; see "
                             "CHEXGEN_DERIVE_PATIENT_IDS)")


def honours_derive_flag(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A handler that loads every set with path-derived patient ids off when ``--no-derive-patient-ids`` is given."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "no_derive_patient_ids", False):
            from ..patient_ids import derivation

            with derivation(False):
                return handler(args)
        return handler(args)

    run.__name__, run.__doc__ = handler.__name__, handler.__doc__
    return run


__all__ = ["CommandParser", "add_derive_argument", "add_dtype_argument", "add_options", "add_preprocess_argument",
           "float_range", "honours_derive_flag", "int_range", "knob", "positive"]
