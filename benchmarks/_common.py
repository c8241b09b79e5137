"""Small helpers shared by the benchmark scripts: timing, Markdown tables, verdicts.

Not a benchmark itself. The scripts import it as ``_common`` because Python puts the
script's own folder (``benchmarks/``) first on ``sys.path``.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn()`` once; return ``(seconds, result)`` measured with ``time.perf_counter``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_repeats(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn)[0] for _ in range(repeats)]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def fmt_seconds(seconds: float) -> str:
    """Seconds as a short human string: ``12.3 ms``, ``1.234 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def verdict(ok: bool) -> str:
    """``PASS`` or ``FAIL``."""
    return "PASS" if ok else "FAIL"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` under ``headers``."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def machine_line() -> str:
    """One line describing the interpreter, torch build and thread count (printed above the tables)."""
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {platform.machine()}"
    )


def apply_thread_option(description: str) -> None:
    """Parse the scripts' one option, ``--threads N``, and apply it (default: torch's own thread count).

    On a shared virtual machine a descheduled core can stall a multi-threaded kernel for a
    whole time slice; ``--threads 1`` trades speed for steadier timings.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
