"""The demo: every schedule search on the exact mixture flows, measured against the truth.

On the preset flows ``gmm-2d`` and ``gmm-64d`` it runs :func:`bossflow.bench.run_bench`
with every registered method (uniform, EDM, time shift, BOSS, and the searches beyond it)
for NFE 2..10, and writes ``report.md``, ``report.json`` and ``report.csv``. Everything
runs offline on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._io import write_atomic, write_json_atomic
from .bench import BenchConfig, BenchRow, format_bench, rows_to_csv, run_bench


def demo_config(quick: bool = False) -> BenchConfig:
    """The demo's sizes; ``quick`` shrinks them for tests (seconds instead of minutes)."""
    if quick:
        return BenchConfig(nfes=(2, 4, 6), grid_steps=40, search_samples=48, eval_samples=200)
    return BenchConfig()


def run_demo(out_dir: str | os.PathLike, quick: bool = False, progress: bool = True) -> dict:
    """Run the demo and write ``report.md``, ``report.json`` and ``report.csv`` into ``out_dir``."""
    report = run_bench(demo_config(quick), progress=progress)
    out = Path(out_dir)
    write_json_atomic(out / "report.json", report)
    rows = [BenchRow(**r) for r in report["rows"]]
    write_atomic(out / "report.csv", lambda f: f.write(rows_to_csv(rows).encode()))
    text = format_bench(report).replace("# bossflow bench", "# bossflow demo", 1)
    write_atomic(out / "report.md", lambda f: f.write(text.encode()))
    return report
