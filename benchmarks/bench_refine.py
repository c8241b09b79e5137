"""Benchmark of the continuous schedule refinement against uniform steps, BOSS and the global-error DP.

What it measures
  On the exact mixture flows ``gmm-2d`` and ``gmm-64d`` (float64), schedules for NFE 2, 4,
  6, 8 are searched on 256 noises (seed 0):
    * uniform: ``bf.uniform_schedule(nfe)`` (no search);
    * BOSS: ``bf.bellman_paths(bf.cost_matrix(model, noise, grid), 8)``, uniform grid N = 100;
    * global-dp: ``bossflow.search.global_error_paths(model, noise, grid, 8)`` (Euler);
    * refined (times): ``refine_schedule(model, noise, [uniform, BOSS, global-dp], eval_times=False)``
      with its defaults: each start screened, the best continued (step times only);
    * refined (+eval): the same with per-step evaluation times (and late-start copies of each start).
  The refinements fit the teacher ``bf.reference_solve(model, noise)`` (dopri5, 1e-6), solved
  once per flow and shared by every budget. Every schedule is then scored on 1000 fresh
  noises (seed 1): endpoint RMSE per dimension of Euler along it against
  ``bf.reference_solve(model, z, rtol=1e-8, atol=1e-8)``. "OSS code" is the issue's
  number for the OSS authors' own search (bebebe666/OptimalSteps, late start), scored the same way.

  Slow oracle, per family: ``refine_schedule`` from many starts (uniform, BOSS, global-dp and
  two random time sets; with evaluation times each also with s_0 = 0.5 and 0.9), each
  screened for 100 evaluations and the best continued for 400. The default's search-set
  RMSE is compared with the oracle's (target: within 1 %); held-out RMSE is shown for both.

  Cost: search wall time and model rows (one row = one sample through the model) counted
  with ``bf.NFECounter``; the refinement's rows are its own (starts and teacher excluded,
  listed separately), forward and backward.

Targets (issue 8; verdicts in the last column)
  * refined (+eval) held-out RMSE <= the best of uniform, BOSS, global-dp and the OSS code;
  * the default refinement's search-set RMSE within 1 % of the better of itself and the oracle.

Timing runs on one torch thread by default (``--threads``): on a shared 2-core machine,
threads measure the neighbours' load rather than the searches.

Command
  python benchmarks/bench_refine.py [--threads 1]
"""

from __future__ import annotations

import time

import tqdm.auto  # noqa: F401  (imported before timing: the refinement's progress bar imports it lazily)

import bossflow as bf
from bossflow.search import global_error_paths
from bossflow.search.refine import refine_schedule

from _common import EVAL_SAMPLES, N_STEPS, OSS_CODE, PEER_NFES, SEARCH_SAMPLES
from _common import apply_thread_option, exact_flow_cases, fmt_seconds, markdown_table, random_starts, search_header
from _common import time_once, verdict

NFES = PEER_NFES
ORACLE_RANDOM_STARTS = 2
ORACLE_SCREEN, ORACLE_STEPS = 100, 400


def fmt_schedule(s: bf.Schedule) -> str:
    text = "t " + " ".join(f"{t:.3f}" for t in s.times[1:-1])
    if s.eval_times is not None:
        text += "; s " + " ".join(f"{v:.3f}" for v in s.eval_times)
    return text


def main() -> None:
    apply_thread_option(__doc__.splitlines()[0], default=1)
    print(search_header(SEARCH_SAMPLES, N_STEPS, EVAL_SAMPLES))
    quality, oracle_rows, cost_rows, schedule_rows = [], [], [], []
    grid = bf.uniform_schedule(N_STEPS).times
    max_nfe = max(NFES)
    total_start = time.perf_counter()
    for name, model, noise, z, reference in exact_flow_cases(SEARCH_SAMPLES, EVAL_SAMPLES):
        counted = bf.NFECounter(model)

        def score(schedule) -> float:
            return bf.endpoint_rmse(bf.euler(model, z, schedule), reference)

        teacher_s, target = time_once(lambda: bf.reference_solve(counted, noise))
        cost_rows.append([name, "all", "teacher (dopri5 1e-6, shared)", fmt_seconds(teacher_s), f"{counted.samples:,}", "0"])
        counted.reset()
        boss_s, boss = time_once(lambda: bf.bellman_paths(bf.cost_matrix(counted, noise, grid), max_nfe))
        cost_rows.append([name, "1..8", "BOSS (cost matrix + DP)", fmt_seconds(boss_s), f"{counted.samples:,}", "0"])
        counted.reset()
        dp_s, dp = time_once(lambda: global_error_paths(counted, noise, grid, max_nfe))
        cost_rows.append([name, "1..8", "global-dp (Euler)", fmt_seconds(dp_s), f"{counted.samples:,}", "0"])

        for nfe in NFES:
            uniform = bf.uniform_schedule(nfe)
            starts = [
                uniform,
                bf.Schedule(grid[boss[nfe][0]], method="bellman"),
                bf.Schedule(grid[dp[nfe][0]], method="global-dp"),
            ]
            refined = {}
            for family, with_eval in (("times", False), ("+eval", True)):
                secs, s = time_once(lambda: refine_schedule(model, noise, starts, target=target, eval_times=with_eval))
                refined[family] = s
                cost_rows.append(
                    [
                        name,
                        nfe,
                        f"refined ({family}): {s.meta['candidates']} candidates, {s.meta['evaluations']} evaluations",
                        fmt_seconds(secs),
                        f"{s.meta['model_rows']:,}",
                        f"{s.meta['backward_rows']:,}",
                    ]
                )
                schedule_rows.append([name, nfe, family, s.meta["start"], s.meta["late_start"], fmt_schedule(s)])
            rmse = {
                "uniform": score(uniform),
                "BOSS": score(starts[1]),
                "global-dp": score(starts[2]),
                "times": score(refined["times"]),
                "+eval": score(refined["+eval"]),
            }
            best_peer = min(rmse["uniform"], rmse["BOSS"], rmse["global-dp"], OSS_CODE[name][nfe])
            quality.append(
                [
                    name,
                    nfe,
                    *(f"{rmse[k]:.4f}" for k in ("uniform", "BOSS", "global-dp")),
                    f"{OSS_CODE[name][nfe]:.3f}",
                    f"{rmse['times']:.4f}",
                    f"**{rmse['+eval']:.4f}**",
                    f"{(rmse['+eval'] / best_peer - 1) * 100:+.0f}%",
                    verdict(rmse["+eval"] <= best_peer),
                ]
            )

            # Slow oracle: many starts, long runs, same objective.
            extra = random_starts(nfe, ORACLE_RANDOM_STARTS, seed=nfe)
            for family, with_eval in (("times", False), ("+eval", True)):
                secs, oracle = time_once(
                    lambda: refine_schedule(
                        model, noise, starts + extra, target=target, eval_times=with_eval,
                        steps=ORACLE_STEPS, screen_steps=ORACLE_SCREEN, late_starts=(0.5, 0.9),
                    )
                )
                ours = refined[family].meta["loss"] ** 0.5
                best = min(oracle.meta["loss"] ** 0.5, ours)  # the oracle may lose to the default
                gap = (ours / best - 1) * 100
                oracle_rows.append(
                    [
                        name,
                        nfe,
                        family,
                        f"{ours:.4f}",
                        f"{oracle.meta['loss'] ** 0.5:.4f}",
                        f"{rmse[family]:.4f}",
                        f"{score(oracle):.4f}",
                        f"{oracle.meta['evaluations']} ({fmt_seconds(secs)})",
                        f"{gap:+.1f}%",
                        verdict(gap <= 1.0),
                    ]
                )

    print(
        markdown_table(
            ["flow", "NFE", "uniform", "BOSS", "global-dp", "OSS code (issue)", "refined (times)",
             "refined (+eval)", "+eval vs best peer", "never worse than the best peer"],
            quality,
        )
    )
    print("\nDefault refinement vs the slow oracle (search-set RMSE vs the teacher; held-out RMSE as above):\n")
    print(
        markdown_table(
            ["flow", "NFE", "family", "default search", "oracle search", "default held-out", "oracle held-out",
             "oracle evaluations (time)", "default vs best search", "within 1 %"],
            oracle_rows,
        )
    )
    print("\nSearch cost (model rows: one sample through the model; refinement rows exclude its starts and teacher):\n")
    print(markdown_table(["flow", "NFE", "search", "wall time", "forward rows", "backward rows"], cost_rows))
    print("\nRefined schedules (inner step times t_1..t_{K-1}; evaluation times s_0..s_{K-1}):\n")
    print(markdown_table(["flow", "NFE", "family", "start", "late start", "schedule"], schedule_rows))
    print(f"\ntotal wall time {fmt_seconds(time.perf_counter() - total_start)}")


if __name__ == "__main__":
    main()
