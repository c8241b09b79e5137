"""Benchmark of the peers' schedule searches (GITS-style DP, AYS-style refinement) beside uniform, BOSS and global-dp.

What it measures
  On the exact mixture flows ``gmm-2d`` and ``gmm-64d`` (float64), schedules for NFE 2, 4,
  6, 8 are searched on 256 noises (seed 0) over a uniform base grid of N = 100 steps, all
  four budgets from one call of each search function:
    * uniform: ``bf.uniform_schedule(nfe)`` (no search);
    * BOSS: ``bossflow.search.boss_schedules`` (cost matrix + Bellman DP);
    * global-dp: ``bossflow.search.global_error_schedules`` (state-carrying DP, Euler);
    * gits: ``bossflow.search.gits.gits_schedules`` with its defaults (per-sample L2 norm,
      plain DP, Heun teacher); gits dev/1.15: the released GITS code's defaults
      (``metric="dev", coeff=1.15``);
    * ays: ``bossflow.search.ays.ays_schedules`` with its defaults (KLUB-like proxy, base 10
      steps); ays euler: the local Euler-error proxy (``objective="euler"``).
  Each schedule is scored on 1000 fresh noises (seed 1): endpoint RMSE per dimension of
  Euler along the schedule against ``bf.reference_solve(model, z, rtol=1e-8, atol=1e-8)``.
  Search wall time (one run each) and model rows spent (``bf.NFECounter``; one row = one
  sample through the model) are reported too.

Timing runs on one torch thread by default (``--threads``): the machine is shared. There is
no pass/fail target: the numbers feed issue 8. Wall times are comparable only within one run.

Command
  python benchmarks/bench_peer_searches.py [--threads 1]
"""

from __future__ import annotations

import bossflow as bf
from bossflow.search import boss_schedules, global_error_schedules
from bossflow.search.ays import ays_schedules
from bossflow.search.gits import gits_schedules

from _common import EVAL_SAMPLES, N_STEPS, PEER_NFES, SEARCH_SAMPLES
from _common import apply_thread_option, exact_flow_cases, fmt_seconds, markdown_table, search_header, time_once

NFES = list(PEER_NFES)
SEARCHES = {
    "BOSS": (boss_schedules, {}),
    "global-dp": (global_error_schedules, {}),
    "gits": (gits_schedules, {}),
    "gits dev/1.15": (gits_schedules, {"metric": "dev", "coeff": 1.15}),
    "ays": (ays_schedules, {}),
    "ays euler": (ays_schedules, {"objective": "euler"}),
}


def main() -> None:
    apply_thread_option(__doc__.splitlines()[0], default=1)
    print(search_header(SEARCH_SAMPLES, N_STEPS, EVAL_SAMPLES, search_note=f", NFE {NFES} from one call"))
    grid = bf.uniform_schedule(N_STEPS).times
    quality_rows, cost_rows, index_rows = [], [], []
    for name, model, noise, z, reference in exact_flow_cases(SEARCH_SAMPLES, EVAL_SAMPLES):
        found = {}
        for label, (fn, options) in SEARCHES.items():
            counted = bf.NFECounter(model)
            seconds, found[label] = time_once(lambda: fn(counted, noise, grid, NFES, **options))
            cost_rows.append([name, label, fmt_seconds(seconds), f"{counted.samples:,}"])
        for nfe in NFES:
            scores = {"uniform": bf.endpoint_rmse(bf.euler(model, z, bf.uniform_schedule(nfe)), reference)}
            for label in SEARCHES:
                scores[label] = bf.endpoint_rmse(bf.euler(model, z, found[label][nfe]), reference)
            best = min(scores.values())
            quality_rows.append(
                [name, nfe] + [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in scores.values()]
            )
            index_rows.append(
                [name, nfe] + [" ".join(str(i) for i in found[label][nfe].meta["indices"]) for label in SEARCHES]
            )
    print(markdown_table(["flow", "NFE", "uniform", *SEARCHES], quality_rows))
    print("\nGrid indices chosen (of 0..100):\n")
    print(markdown_table(["flow", "NFE", *SEARCHES], index_rows))
    print("\nSearch cost (NFE 2, 4, 6, 8 from one call):\n")
    print(markdown_table(["flow", "search", "wall time", "model rows"], cost_rows))


if __name__ == "__main__":
    main()
