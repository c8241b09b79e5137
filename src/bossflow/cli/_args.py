"""Argument types and parser helpers shared by every command (no torch)."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, NoReturn, Sequence


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``bossflow: error: ...``, and exit status 2.

    Its subparsers are of the same class, so a bad option of any command reads like every
    other bad input (``cli/app.py``): the option named, what it expects, what it got.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bossflow: error: {message} (see `{self.prog} --help`).\n")


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers and ranges, e.g. step budgets: ``2,4,6`` or ``2-10``."""
    values: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            low, sep, high = part.partition("-")
            values += list(range(int(low), int(high) + 1)) if sep and low else [int(part)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 2,4,6 or 2-10, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one positive integer, such as 2,4,6 or 2-10, got {text!r}")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 2,4,6 or 2-10, got {text!r}")
    return values


def shape_list(text: str) -> list[int]:
    """A sample shape: comma-separated positive sizes, e.g. ``3,32,32`` (one sample, without the batch)."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 2 or 3,32,32, got {text!r}")
    return [int(part) for part in parts]


def str_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _bounded(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, refused with ``expected WHAT`` unless ``ok`` holds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _bounded(int, "a positive integer", lambda v: v >= 1)
non_negative_int = _bounded(int, "a non-negative integer", lambda v: v >= 0)
positive_float = _bounded(float, "a positive number", lambda v: math.isfinite(v) and v > 0)
non_negative_float = _bounded(float, "a number >= 0", lambda v: math.isfinite(v) and v >= 0)
decay = _bounded(float, "a decay in [0, 1)", lambda v: 0 <= v < 1)
finite_float = _bounded(float, "a finite number", math.isfinite)
grid_power = _bounded(float, "a number from 1 to 4", lambda v: 1 <= v <= 4)


def add_quiet(parser: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    parser.add_argument("--quiet", action="store_true", help=what)


def shape_of(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """``--shape`` as a tuple, or ``None`` when not given."""
    return tuple(values) if values else None


def format_time(t: float, others: Sequence[float] = (), decimals: int = 4) -> str:
    """``t`` with ``decimals`` decimals, or more where fewer would print a value that is not exactly 0 or 1
    as ``0.0000`` or ``1.0000``, or print it like a different value of ``others``.

    >>> format_time(0.5), format_time(0.99999), format_time(1.0), format_time(1 - 2 ** -52), format_time(3e-7)
    ('0.5000', '0.99999', '1.0000', '0.9999999999999998', '0.0000003')
    >>> format_time(0.50001, others=[0.50004])
    '0.50001'
    """
    t = float(t)
    for d in range(decimals, 18):
        text = f"{t:.{d}f}"
        value = float(text)
        if value in (0.0, 1.0) and t != value:
            continue
        if any(float(o) != t and f"{float(o):.{d}f}" == text for o in others):
            continue
        return text
    return repr(t)


def format_times(times: Sequence[float]) -> str:
    """Times, 4 decimals each, more where needed (:func:`format_time`): never ``1.0000`` for 0.99999."""
    values = [float(t) for t in times]
    return " ".join(format_time(t, values) for t in values)
