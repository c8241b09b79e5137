"""The demo: baseline and Bellman schedules on the exact mixture flows, measured against the truth.

For each preset flow (``gmm-2d``, ``gmm-64d``) it builds the BOSS cost matrix, takes the
Bellman schedule for every NFE, runs the global-error DP (:mod:`bossflow.search`), and
compares the endpoint error of Euler sampling with uniform, EDM, time-shift, Bellman and
global-DP schedules against a tight adaptive reference solution from fresh noises.
Everything runs offline on CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_atomic, write_json_atomic
from .bellman import bellman_schedules
from .cost import cost_matrix
from .metrics import endpoint_rmse
from .models import PRESETS
from .noise import gaussian_noise
from .schedules import SCHEDULE_FAMILIES, Schedule, base_grid, save_schedules
from .search import global_error_schedules
from .solvers import euler, reference_solve

import torch

METHODS = ("uniform", "edm", "shift", "bellman", "global-dp")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run (``quick`` shrinks them for tests)."""

    models: tuple[str, ...] = ("gmm-2d", "gmm-64d")
    nfes: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10)
    grid_steps: int = 100
    cost_samples: int = 256
    eval_samples: int = 1000
    seed: int = 0

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(nfes=(2, 4, 6), grid_steps=50, cost_samples=64, eval_samples=200)


def evaluate_schedules(model: Any, schedules: dict[str, dict[int, Schedule]], noise: torch.Tensor, reference: torch.Tensor) -> dict[str, dict[int, float]]:
    """Endpoint RMSE of Euler along every schedule: ``{method: {nfe: rmse}}``."""
    return {
        method: {nfe: endpoint_rmse(euler(model, noise, sched), reference) for nfe, sched in by_nfe.items()}
        for method, by_nfe in schedules.items()
    }


def run_demo(out_dir: str | os.PathLike, config: DemoConfig = DemoConfig(), progress: bool = True) -> dict:
    """Run the demo and write ``report.json``, ``report.md`` and one schedule file per model into ``out_dir``.

    Returns:
        The report as a dict: per model, the schedules and ``rmse[method][nfe]``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    report: dict[str, Any] = {"config": asdict(config), "models": {}}
    stages = tqdm(total=3 * len(config.models), desc="demo", unit="stage", disable=not progress)
    for name in config.models:
        model = PRESETS[name]()
        shape = model.sample_shape
        started = time.perf_counter()
        stages.set_postfix_str(f"{name}: cost matrix")
        grid = base_grid("uniform", config.grid_steps)
        noise = gaussian_noise(config.cost_samples, shape, seed=config.seed, dtype=torch.float64)
        cost = cost_matrix(model, noise, grid, batch_size=256)
        cost_seconds = time.perf_counter() - started
        stages.update()

        stages.set_postfix_str(f"{name}: schedules")
        nfes = list(config.nfes)
        schedules: dict[str, dict[int, Schedule]] = {
            method: {k: SCHEDULE_FAMILIES[method](k) for k in nfes} for method in METHODS if method in SCHEDULE_FAMILIES
        }
        provenance = {"model": name, "grid_steps": config.grid_steps, "samples": config.cost_samples, "seed": config.seed}
        schedules["bellman"] = bellman_schedules(cost, grid, nfes, **provenance)
        schedules["global-dp"] = global_error_schedules(model, noise, grid, nfes, provenance=provenance)
        stages.update()

        stages.set_postfix_str(f"{name}: evaluation")
        eval_noise = gaussian_noise(config.eval_samples, shape, seed=config.seed + 1, dtype=torch.float64)
        reference = reference_solve(model, eval_noise, rtol=1e-8, atol=1e-8)
        rmse = evaluate_schedules(model, schedules, eval_noise, reference)
        stages.update()

        for method in ("bellman", "global-dp"):
            save_schedules(out / f"schedules-{name}-{method}.json", schedules[method].values(), model=name)
        report["models"][name] = {
            "cost_matrix_seconds": cost_seconds,
            "schedules": {m: {k: s.times.tolist() for k, s in by.items()} for m, by in schedules.items()},
            "rmse": rmse,
        }
    stages.close()
    write_json_atomic(out / "report.json", report)
    text = format_report(report)
    write_atomic(out / "report.md", lambda f: f.write(text.encode()))
    return report


def format_report(report: dict) -> str:
    """Markdown tables of endpoint RMSE per model: one row per NFE, one column per method, best in bold."""
    lines = ["# bossflow demo", "", "Endpoint RMSE of Euler sampling against an adaptive reference solution (same noises).", ""]
    for name, entry in report["models"].items():
        rmse = entry["rmse"]
        methods = list(rmse)
        lines += [f"## {name}", "", "| NFE | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for nfe in rmse[methods[0]]:
            values = [rmse[m][nfe] for m in methods]
            best = int(np.argmin(values))
            cells = [f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(values)]
            lines.append(f"| {nfe} | " + " | ".join(cells) + " |")
        for method in ("bellman", "global-dp"):
            lines += ["", f"{method} times:", ""]
            for nfe, times in entry["schedules"][method].items():
                lines.append(f"- NFE {nfe}: " + ", ".join(f"{t:.3f}" for t in times))
        lines.append("")
    return "\n".join(lines)
