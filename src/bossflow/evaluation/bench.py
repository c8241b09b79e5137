"""Every schedule search on the same models, side by side: ``bossflow bench``.

For each model and each method of :data:`bossflow.search.SEARCHES`, the search runs once
for all budgets on ``search_samples`` noises (seed ``seed``), and every schedule is then
scored on ``eval_samples`` fresh noises (seed ``seed + 1``):

* endpoint RMSE per dimension against a tight adaptive reference solution of the same
  noises (the paper's measure);
* Wasserstein-2 distance of the samples to the data (exact mixture samples, the real digits,
  else reference solutions of other noises: :func:`bossflow.evaluate.data_for_model`), with
  the reference solutions' own distance as its sampling floor;
* search wall time and model rows spent (one row = one sample through the model), for all
  budgets together.

Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch import Tensor

from ..core._io import write_atomic, write_json_atomic
from ..core.errors import BossflowError
from ..models.loading import load_model
from ..core.noise import gaussian_noise
from ..core.schedules import base_grid
from ..search import SEARCHES
from ..core.solvers import NFECounter
from ..core.velocity import model_dtype


@dataclass(frozen=True)
class BenchConfig:
    """What ``bossflow bench`` runs: models (preset names or ``module:attr``), methods, budgets, sizes."""

    models: tuple[str, ...] = ("gmm-2d", "gmm-64d")
    methods: tuple[str, ...] = tuple(SEARCHES)
    nfes: tuple[int, ...] = tuple(range(2, 11))
    grid_steps: int = 100
    search_samples: int = 256
    eval_samples: int = 1000
    seed: int = 0
    shape: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict)  # per-method keyword options

    def validate(self) -> "BenchConfig":
        unknown = [m for m in self.methods if m not in SEARCHES]
        if unknown:
            raise BossflowError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(SEARCHES)}.")
        if not self.nfes or min(self.nfes) < 1 or max(self.nfes) > self.grid_steps:
            raise BossflowError(f"every NFE must be in 1..{self.grid_steps} (the grid steps), got {list(self.nfes)}.")
        if not self.models:
            raise BossflowError("give at least one model.")
        return self


@dataclass
class BenchRow:
    """One (model, method, NFE) result."""

    model: str
    method: str
    nfe: int
    rmse: float
    w2: float
    search_seconds: float
    search_model_rows: int
    times: list[float]
    eval_times: list[float] | None


def _model_and_shape(spec: str, shape: tuple[int, ...] | None) -> tuple[Callable[..., Tensor], tuple[int, ...]]:
    loaded = load_model(spec)
    sample_shape = tuple(shape) if shape else loaded.sample_shape
    if sample_shape is None:
        raise BossflowError(f"model {spec!r} does not declare sample_shape; pass a shape (--shape).")
    return loaded.model, sample_shape


def bench_model(
    name: str,
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    config: BenchConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[BenchRow], dict[str, float]]:
    """Run every method of ``config`` on one model; ``progress(label)`` is called after each method.

    Returns:
        ``(rows, floor)``: one :class:`BenchRow` per method and NFE, and the reference
        solution's own ``{"rmse": 0, "w2": floor}`` for scale.
    """
    from .evaluate import ScheduleEvaluator

    grid = base_grid("uniform", config.grid_steps)
    search_noise = gaussian_noise(config.search_samples, shape, seed=config.seed, dtype=model_dtype(model))
    evaluator = ScheduleEvaluator(
        model, shape, model_id=name, samples=config.eval_samples, seed=config.seed + 1, reference_tol=1e-8
    )
    floor = {"rmse": 0.0, "w2": evaluator.reference_row().w2}
    rows = []
    nfes = sorted(set(config.nfes))
    for method in config.methods:
        counter = NFECounter(model)
        started = time.perf_counter()
        schedules = SEARCHES[method](
            counter, search_noise, grid, nfes, provenance={"model": name}, **config.options.get(method, {})
        )
        seconds = time.perf_counter() - started
        for nfe in nfes:
            scored, _ = evaluator.score(schedules[nfe])
            rows.append(
                BenchRow(
                    model=name,
                    method=method,
                    nfe=nfe,
                    rmse=scored.rmse,
                    w2=scored.w2,
                    search_seconds=seconds,
                    search_model_rows=counter.samples,
                    times=scored.times,
                    eval_times=scored.eval_times,
                )
            )
        if progress:
            progress(f"{name}: {method}")
    return rows, floor


def run_bench(config: BenchConfig, out_dir: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Run the benchmark; write ``bench.json``, ``bench.csv`` and ``bench.md`` into ``out_dir`` when given.

    Returns:
        ``{"config": ..., "rows": [BenchRow as dict, ...], "floors": {model: {...}}}``.
    """
    from tqdm.auto import tqdm

    config.validate()
    resolved = [(spec, *_model_and_shape(spec, config.shape)) for spec in config.models]
    bar = tqdm(total=len(resolved) * len(config.methods), desc="bench", unit="search", disable=not progress)
    rows: list[BenchRow] = []
    floors: dict[str, dict[str, float]] = {}

    def done(stage: str) -> None:
        bar.set_postfix_str(stage)
        bar.update(1)

    for spec, model, shape in resolved:
        model_rows, floors[spec] = bench_model(spec, model, shape, config, progress=done)
        rows += model_rows
    bar.close()
    report = {"config": asdict(config), "rows": [asdict(r) for r in rows], "floors": floors}
    if out_dir is not None:
        out = Path(out_dir)
        write_json_atomic(out / "bench.json", report)
        write_atomic(out / "bench.csv", lambda f: f.write(rows_to_csv(rows).encode()))
        write_atomic(out / "bench.md", lambda f: f.write(format_bench(report).encode()))
    return report


def rows_to_csv(rows: Sequence[BenchRow]) -> str:
    """CSV text with one line per row (times as space-separated numbers)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "method", "nfe", "rmse", "w2", "search_seconds", "search_model_rows", "times", "eval_times"])
    for r in rows:
        writer.writerow([
            r.model, r.method, r.nfe, f"{r.rmse:.6g}", f"{r.w2:.6g}", f"{r.search_seconds:.4g}", r.search_model_rows,
            " ".join(f"{t:.6g}" for t in r.times), "" if r.eval_times is None else " ".join(f"{s:.6g}" for s in r.eval_times),
        ])
    return buf.getvalue()


def format_bench(report: dict) -> str:
    """Markdown: per model, an RMSE table and a W2 table (NFE rows, method columns, best in bold) and the search costs."""
    rows = report["rows"]
    lines = ["# bossflow bench", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        nfes = sorted({r["nfe"] for r in mine})
        table = {(r["method"], r["nfe"]): r for r in mine}
        floor = report["floors"][model]["w2"]
        for metric, title in (("rmse", "endpoint RMSE vs reference solution"), ("w2", f"W2 to data (reference floor {floor:.4f})")):
            lines += [f"## {model}: {title}", "", "| NFE | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
            for nfe in nfes:
                values = [table[(m, nfe)][metric] for m in methods]
                best = int(np.argmin(values))
                cells = [f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(values)]
                lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [f"## {model}: search cost (all budgets)", "", "| method | seconds | model rows |", "|---|---|---|"]
        for m in methods:
            r = table[(m, nfes[0])]
            lines.append(f"| {m} | {r['search_seconds']:.3f} | {r['search_model_rows']:,} |")
        lines.append("")
    return "\n".join(lines)
