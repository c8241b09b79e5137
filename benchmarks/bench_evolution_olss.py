"""Benchmark of the AutoDiffusion-style evolutionary search and the OLSS-style steps against uniform, BOSS and global-dp.

What it measures
  On the exact mixture flows ``gmm-2d`` and ``gmm-64d`` (float64), schedules for NFE 2, 4,
  6, 8 are searched on 256 noises (seed 0) over a uniform base grid of N = 100 steps:
    * uniform: ``bf.uniform_schedule(nfe)`` (no search);
    * BOSS: ``bossflow.search.boss_schedules`` (cost matrix + Bellman DP);
    * global-dp: ``bossflow.search.global_error_schedules`` (state-carrying DP, Euler);
    * evolution: ``bossflow.search.evolution.evolution_schedules`` with its defaults, which use
      the first 64 of the 256 noises (population 32, 40 generations, seed 0), and again with
      ``samples=None`` (all 256 noises) to show what the subsample costs;
    * OLSS: ``bossflow.search.olss.olss_schedules`` (OLSS step selection, coefficients fitted
      along the sampler's own rollout, basis x_0 and the velocities), sampled with ``olss_solve``;
      its variants (uniform step times; coefficients fitted on the teacher's trajectory as
      the OLSS code does, with OLSS's basis and with every earlier state in the basis; a
      teacher with 4 Euler sub-steps per grid interval) are in a second table, beside Euler
      on OLSS's times.
  Every schedule is scored on 1000 fresh noises (seed 1): endpoint RMSE per dimension against
  ``bf.reference_solve(model, z, rtol=1e-8, atol=1e-8)``, with Euler for the Euler schedules
  and ``olss_solve`` for OLSS. The searches' own teacher (100 Euler steps on the grid) scores
  too, as the floor that a search which imitates it approaches.
  Search wall time (one run each, the four budgets from one call) and model rows (counted
  with ``bf.NFECounter``; one row = one sample through the model) are reported too.

Timing runs on one torch thread by default (``--threads``): the machine is shared, and two
intra-op threads on calls of a few hundred rows measure the neighbours' load rather than
the searches. Wall times are comparable only within one run.

There is no pass/fail target: the numbers feed issue 8 (peers under one interface).

Command
  python benchmarks/bench_evolution_olss.py [--threads 1]
"""

from __future__ import annotations

import bossflow as bf
from bossflow.search import boss_schedules, global_error_schedules
from bossflow.search.evolution import evolution_schedules
from bossflow.search.olss import olss_schedules, olss_solve

from _common import EVAL_SAMPLES, N_STEPS, PEER_NFES, SEARCH_SAMPLES
from _common import apply_thread_option, exact_flow_cases, fmt_seconds, markdown_table, search_header, time_once

NFES = list(PEER_NFES)

EULER_METHODS = {
    "BOSS": lambda m, noise, grid: boss_schedules(m, noise, grid, NFES),
    "global-dp": lambda m, noise, grid: global_error_schedules(m, noise, grid, NFES),
    "evolution": lambda m, noise, grid: evolution_schedules(m, noise, grid, NFES),
    "evolution (256 noises)": lambda m, noise, grid: evolution_schedules(m, noise, grid, NFES, samples=None),
}
OLSS_METHODS = {
    "OLSS": lambda m, noise, grid: olss_schedules(m, noise, grid, NFES),
    "OLSS, uniform times": lambda m, noise, grid: olss_schedules(m, noise, grid, NFES, selection="uniform"),
    "OLSS, teacher fit": lambda m, noise, grid: olss_schedules(m, noise, grid, NFES, fit="teacher"),
    "OLSS, teacher fit, states basis": lambda m, noise, grid: olss_schedules(
        m, noise, grid, NFES, fit="teacher", basis="states"
    ),
    "OLSS, teacher 4 substeps": lambda m, noise, grid: olss_schedules(m, noise, grid, NFES, substeps=4),
}


def main() -> None:
    apply_thread_option(__doc__.splitlines()[0], default=1)
    print(
        search_header(
            SEARCH_SAMPLES, N_STEPS, EVAL_SAMPLES, score="endpoint RMSE", score_note="; Euler, except OLSS (olss_solve)"
        )
    )
    grid = bf.uniform_schedule(N_STEPS).times
    main_rows, olss_rows, index_rows, cost_rows = [], [], [], []
    for name, model, noise, z, reference in exact_flow_cases(SEARCH_SAMPLES, EVAL_SAMPLES):
        floor = bf.endpoint_rmse(bf.fine_trajectory(model, z, grid).xs[-1], reference)

        found = {}
        for method, run in {**EULER_METHODS, **OLSS_METHODS}.items():
            counted = bf.NFECounter(model)
            seconds, found[method] = time_once(lambda: run(counted, noise, grid))
            cost_rows.append([name, method, fmt_seconds(seconds), f"{counted.samples:,}", f"{counted.nfe:,}"])

        def euler_rmse(times) -> float:
            return bf.endpoint_rmse(bf.euler(model, z, times), reference)

        for nfe in NFES:
            uniform = euler_rmse(bf.uniform_schedule(nfe))
            scores = {m: euler_rmse(found[m][nfe]) for m in EULER_METHODS}
            olss = {m: bf.endpoint_rmse(olss_solve(model, z, found[m][nfe]), reference) for m in OLSS_METHODS}
            best_peer = min(uniform, scores["BOSS"], scores["global-dp"])
            main_rows.append(
                [name, nfe, f"{uniform:.4f}", *(f"{scores[m]:.4f}" for m in EULER_METHODS), f"{olss['OLSS']:.4f}",
                 f"{(scores['evolution'] / best_peer - 1) * 100:+.1f}%", f"{(olss['OLSS'] / best_peer - 1) * 100:+.1f}%"]
            )
            olss_rows.append(
                [name, nfe, *(f"{olss[m]:.4f}" for m in OLSS_METHODS), f"{euler_rmse(found['OLSS'][nfe]):.4f}", f"{floor:.4f}"]
            )
            index_rows.append(
                [name, nfe, *(" ".join(str(i) for i in found[m][nfe].meta["indices"]) for m in ("evolution", "OLSS"))]
            )
    print(
        markdown_table(
            ["flow", "NFE", "uniform", *EULER_METHODS, "OLSS (olss_solve)", "evolution vs best of uniform/BOSS/global-dp",
             "OLSS vs best of uniform/BOSS/global-dp"],
            main_rows,
        )
    )
    print()
    print(
        markdown_table(
            ["flow", "NFE", *(f"{m} (olss_solve)" for m in OLSS_METHODS), "Euler on OLSS's times",
             "teacher (100 Euler steps)"],
            olss_rows,
        )
    )
    print()
    print(markdown_table(["flow", "NFE", "evolution indices", "OLSS indices"], index_rows))
    print()
    print(markdown_table(["flow", "search (budgets 2, 4, 6, 8)", "wall time", "model rows", "model calls"], cost_rows))


if __name__ == "__main__":
    main()
