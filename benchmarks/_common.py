"""Small helpers shared by the benchmark scripts: timing, Markdown tables, verdicts, and the
exact-mixture setup (flows, noises, dopri5 references) of the schedule-search comparisons.

Not a benchmark itself. The scripts import it as ``_common`` because Python puts the
script's own folder (``benchmarks/``) first on ``sys.path``.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

import bossflow as bf
from bossflow.models import gmm_2d, gmm_64d


N_STEPS = 100
"""Base grid intervals of the search benchmarks (the paper's 100-step uniform grid)."""
SEARCH_SAMPLES = 256
"""Search noises of the search benchmarks."""
EVAL_SAMPLES = 1000
"""Fresh noises each schedule is scored on."""
PEER_NFES = (2, 4, 6, 8)
"""Budgets of the peer-search benchmarks."""


def print_report(doc: str, name: str, *parts: Callable[[], str]) -> None:
    """Take ``--threads`` (described by ``doc``'s first line), print ``## name (machine)``, then each part's table."""
    apply_thread_option(doc.splitlines()[0])
    print(f"## {name} ({machine_line()})\n")
    print("\n\n".join(part() for part in parts))


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


def target_row(what: str, value: str, ratio: str, target: str, ok: bool) -> list[str]:
    """A table row that checks a target: ``[what, value, ratio, target, PASS/FAIL]``."""
    return [what, value, ratio, target, verdict(ok)]


def section(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A ``###`` heading over a Markdown table."""
    return title + "\n\n" + markdown_table(headers, rows)


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


def apply_thread_option(description: str, default: int | None = None) -> None:
    """Parse the scripts' one option, ``--threads N``, and apply it (``default=None``: torch's own thread count).

    On a shared virtual machine a descheduled core can stall a multi-threaded kernel for a
    whole time slice; ``--threads 1`` trades speed for steadier timings, and the search
    comparisons pass ``default=1``.
    """
    import argparse

    note = "default: torch's choice" if default is None else f"default {default}"
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=default, help=f"torch intra-op threads ({note})")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)


# The search comparisons (bench_global_dp, bench_peer_searches, bench_evolution_olss,
# bench_refine) share one protocol on the exact mixture flows, in float64: schedules are
# searched on noises of seed 0 and scored on fresh noises of seed 1 against dopri5 at
# rtol = atol = 1e-8. ``exact_flow_cases`` builds it and ``search_header`` describes it.
EXACT_FLOWS = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}


class FlowCase(NamedTuple):
    """One exact flow of the search comparisons, with its search noises and held-out scoring set."""

    name: str
    model: bf.VelocityModel
    noise: torch.Tensor  # search noises (seed 0)
    z: torch.Tensor  # held-out noises (seed 1)
    reference: torch.Tensor  # dopri5 endpoints of ``z`` (rtol = atol = 1e-8)


# Issue 8: the OSS authors' search code (bebebe666/OptimalSteps, 32 search noises, median aggregation),
# endpoint RMSE on the exact mixtures as our benchmarks score it.
OSS_CODE = {"gmm-2d": {2: 0.280, 4: 0.132, 6: 0.106, 8: 0.083}, "gmm-64d": {2: 0.412, 4: 0.284, 6: 0.300, 8: 0.268}}


def random_starts(nfe: int, count: int, seed: int) -> list[bf.Schedule]:
    """``count`` schedules with sorted uniform random inner times (benchmark-only randomness, seeded)."""
    rng = np.random.default_rng(seed)
    return [bf.Schedule(np.concatenate([[0.0], np.sort(rng.uniform(0.0, 1.0, nfe - 1)), [1.0]]), method="random")
            for _ in range(count)]


def exact_flow_cases(search_samples: int, eval_samples: int) -> Iterator[FlowCase]:
    """The exact mixture flows in turn (``gmm-2d``, ``gmm-64d``), each with ``search_samples`` search
    noises, ``eval_samples`` held-out noises and the held-out dopri5 endpoints, all float64.
    """
    for name, make in EXACT_FLOWS.items():
        model = make()
        noise = bf.gaussian_noise(search_samples, (model.dim,), seed=0, dtype=torch.float64)
        z = bf.gaussian_noise(eval_samples, (model.dim,), seed=1, dtype=torch.float64)
        reference = bf.reference_solve(model, z, rtol=1e-8, atol=1e-8)
        yield FlowCase(name, model, noise, z, reference)


def search_header(
    search_samples: int,
    n_steps: int,
    eval_samples: int,
    *,
    search_note: str = "",
    score: str = "Euler endpoint RMSE",
    score_note: str = "",
) -> str:
    """What the search comparisons print above their tables: ``machine_line()``, then the protocol of
    ``exact_flow_cases`` on one line, then a blank line.

    ``search_note`` is appended to the search clause, ``score_note`` to the scoring clause.
    """
    return (
        f"{machine_line()}\n"
        f"search: {search_samples} noises (seed 0), uniform base grid N = {n_steps}{search_note}; "
        f"score: {score} on {eval_samples} noises (seed 1) vs dopri5 (rtol = atol = 1e-8){score_note}\n"
    )
