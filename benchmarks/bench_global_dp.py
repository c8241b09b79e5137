"""Benchmark of the state-carrying global-error DP against uniform steps and BOSS.

What it measures
  On the exact mixture flows ``gmm-2d`` and ``gmm-64d`` (float64), schedules for NFE 2, 4,
  6, 8 are searched on 256 noises (seed 0) over a uniform base grid of N = 100 steps:
    * uniform: ``bf.uniform_schedule(nfe)`` (no search);
    * BOSS: ``bf.bellman_paths(bf.cost_matrix(model, noise, grid), 8)``;
    * global-dp: ``bossflow.search.global_error_paths(model, noise, grid, 8)`` (Euler).
  Each schedule is then scored on 1000 fresh noises (seed 1): endpoint RMSE per dimension of
  Euler along the schedule against ``bf.reference_solve(model, z, rtol=1e-8, atol=1e-8)``.
  Search wall time (one run each, all budgets 1..8 from one search) and model rows spent
  (counted with ``bf.NFECounter``; one row = one sample through the model) are reported too.

Timing runs on one torch thread by default (``--threads``): on a shared 2-core machine, two
intra-op threads made a 256-row model call 20-100x slower than one thread, which would
measure the neighbours' load rather than the searches.

There is no pass/fail target: the numbers feed issue 8 (our default must never be worse
than the best peer). Wall times are comparable only within one run.

Command
  python benchmarks/bench_global_dp.py [--threads 1]
"""

from __future__ import annotations

import torch

import bossflow as bf
from bossflow.search import global_error_paths

from _common import EVAL_SAMPLES, N_STEPS, PEER_NFES, SEARCH_SAMPLES
from _common import apply_thread_option, exact_flow_cases, fmt_seconds, markdown_table, search_header, time_once

NFES = PEER_NFES


def rmse_along(model: bf.VelocityModel, z: torch.Tensor, reference: torch.Tensor, times) -> float:
    """Endpoint RMSE of Euler along ``times`` from ``z`` against ``reference``."""
    return bf.endpoint_rmse(bf.euler(model, z, times), reference)


def main() -> None:
    apply_thread_option(__doc__.splitlines()[0], default=1)
    print(search_header(SEARCH_SAMPLES, N_STEPS, EVAL_SAMPLES))
    quality_rows, cost_rows = [], []
    grid = bf.uniform_schedule(N_STEPS).times
    max_nfe = max(NFES)
    for name, model, noise, z, reference in exact_flow_cases(SEARCH_SAMPLES, EVAL_SAMPLES):
        counted = bf.NFECounter(model)
        boss_s, boss = time_once(lambda: bf.bellman_paths(bf.cost_matrix(counted, noise, grid), max_nfe))
        boss_rows = counted.samples
        counted.reset()
        dp_s, dp = time_once(lambda: global_error_paths(counted, noise, grid, max_nfe))
        dp_rows = counted.samples
        cost_rows.append([name, "BOSS (cost matrix + DP)", fmt_seconds(boss_s), f"{boss_rows:,}"])
        cost_rows.append([name, "global-dp (Euler)", fmt_seconds(dp_s), f"{dp_rows:,}"])

        for nfe in NFES:
            uniform = rmse_along(model, z, reference, bf.uniform_schedule(nfe))
            boss_idx = boss[nfe][0]
            dp_idx, dp_mse = dp[nfe]
            boss_rmse = rmse_along(model, z, reference, grid[boss_idx])
            dp_rmse = rmse_along(model, z, reference, grid[dp_idx])
            best = min(uniform, boss_rmse)
            quality_rows.append(
                [
                    name,
                    nfe,
                    f"{uniform:.4f}",
                    f"{boss_rmse:.4f}",
                    f"{dp_rmse:.4f}",
                    f"{(dp_rmse / best - 1) * 100:+.1f}%",
                    f"{dp_mse ** 0.5:.4f}",
                    " ".join(str(int(i)) for i in boss_idx),
                    " ".join(str(int(i)) for i in dp_idx),
                ]
            )
    print(
        markdown_table(
            [
                "flow",
                "NFE",
                "uniform",
                "BOSS",
                "global-dp",
                "global-dp vs best of uniform/BOSS",
                "global-dp search-set RMSE vs teacher",
                "BOSS indices",
                "global-dp indices",
            ],
            quality_rows,
        )
    )
    print()
    print(markdown_table(["flow", "search (all budgets 1..8)", "wall time", "model rows"], cost_rows))


if __name__ == "__main__":
    main()
