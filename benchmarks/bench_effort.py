"""Benchmark of ``auto``'s ``effort`` on a shipped image teacher: what ``fast`` saves and what it gives up.

What it measures
  On the shipped ``fashion-mnist`` teacher (TinyUNet, 28×28; ``--model digits`` for the 8×8
  digits teacher), schedules for NFE 2, 4, 6 over a uniform base grid of N = 100 steps,
  searched on 64 noises of seed 0, by the cheap peers (uniform, bellman, global-dp, olss)
  and by ``auto`` at each effort of ``--efforts`` (default fast and standard; thorough is
  about 2.5 times standard's cost). Every schedule is scored on 500 fresh noises (seed 1)
  with the solver it was made for (``bossflow.search.sample_with``): endpoint RMSE against a
  dopri5 solution at rtol = atol = 1e-4. Search cost: wall time and forward model rows
  (``bf.NFECounter``) in fine trajectories (N rows per search noise), each as a ratio
  against ``standard`` measured in the same process.

  ``benchmarks/bench_auto.py`` compares the efforts on the exact mixtures and the digits
  teacher, where the refinement can be checked against a slow oracle; this script asks the
  question a user with an expensive model has: does ``fast`` lose anything on images?

Targets
  * every effort's RMSE ≤ the best cheap peer's + 1 % at every NFE (PASS/FAIL), as issue 8
    asks of auto;
  * ``fast``: reported, not targeted: its RMSE and cost as ratios of ``standard``'s.

About 15 minutes on one CPU thread for the default (fashion-mnist, fast and standard):
the reference alone takes about 3.5 minutes.

Command
  python benchmarks/bench_effort.py [--model fashion-mnist|digits] [--efforts fast,standard,thorough] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

import bossflow as bf
from bossflow.loading import load_model
from bossflow.search import SEARCHES, sample_with
from bossflow.search.auto import EFFORTS

from _common import fmt_seconds, machine_line, markdown_table, verdict

N_STEPS = 100
NFES = [2, 4, 6]
SEARCH_SAMPLES = 64
EVAL_SAMPLES = 500
PEERS = ("uniform", "bellman", "global-dp", "olss")
TOLERANCE = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    parser.add_argument("--efforts", default="fast,standard", help="comma-separated efforts (default fast,standard)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    efforts = [e.strip() for e in args.efforts.split(",") if e.strip()]
    unknown = [e for e in efforts if e not in EFFORTS]
    if unknown or not efforts:
        parser.error(f"--efforts takes names among {', '.join(EFFORTS)}; got {args.efforts!r}")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    print(machine_line())

    loaded = load_model(args.model)
    model, shape = loaded.model, loaded.sample_shape
    noise = bf.gaussian_noise(SEARCH_SAMPLES, shape, seed=0)
    z = bf.gaussian_noise(EVAL_SAMPLES, shape, seed=1)
    started = time.perf_counter()
    reference = bf.reference_solve(model, z, rtol=1e-4, atol=1e-4)
    print(f"{args.model}: {SEARCH_SAMPLES} search noises, {EVAL_SAMPLES} fresh noises; "
          f"dopri5 1e-4 reference in {fmt_seconds(time.perf_counter() - started)}", flush=True)
    grid = bf.uniform_schedule(N_STEPS).times

    runs = {**{p: (p, {}) for p in PEERS}, **{f"auto {e}": ("auto", {"effort": e}) for e in efforts}}
    rmse: dict[str, dict[int, float]] = {}
    chose: dict[str, dict[int, str]] = {}
    cost: dict[str, tuple[float, float]] = {}
    for label, (method, options) in runs.items():
        counted = bf.NFECounter(model)
        begin = time.perf_counter()
        found = SEARCHES[method](counted, noise, grid, NFES, **options)
        seconds = time.perf_counter() - begin
        cost[label] = (seconds, counted.samples / (N_STEPS * SEARCH_SAMPLES))
        rmse[label] = {k: bf.endpoint_rmse(sample_with(model, z, found[k]), reference) for k in NFES}
        chose[label] = {k: found[k].meta.get("selected", "") for k in NFES}
        print(f"  {label}: {fmt_seconds(seconds)}", flush=True)

    ours = [f"auto {e}" for e in efforts]
    base = "auto standard" if "auto standard" in ours else None
    rows, passes = [], {label: 0 for label in ours}
    for k in NFES:
        best = min(PEERS, key=lambda p: rmse[p][k])
        cells = [f"{rmse[p][k]:.4f}" for p in PEERS]
        for label in ours:
            ok = rmse[label][k] <= rmse[best][k] * (1 + TOLERANCE)
            passes[label] += ok
            ratio = f" ({rmse[label][k] / rmse[base][k]:.2f}×)" if base and label != base else ""
            cells.append(f"{rmse[label][k]:.4f}{ratio} [{chose[label][k]}] {verdict(ok)}")
        rows.append([k, *cells, best])
    print("\nEndpoint RMSE on the fresh noises; auto's cells: RMSE (ratio to auto standard) [what it chose], "
          f"PASS when <= the best peer + {TOLERANCE:.0%}:\n")
    print(markdown_table(["NFE", *PEERS, *ours, "best peer"], rows))
    print()
    for label in ours:
        print(f"{label} <= best peer (+{TOLERANCE:.0%}): {passes[label]} of {len(NFES)}")
    print("\nSearch cost, NFE 2, 4, 6 in one call (fine trajectories = forward rows / (N x search noises)):\n")
    cost_rows = []
    for label in runs:
        seconds, fine = cost[label]
        ratio = (f"{seconds / cost[base][0]:.2f}×", f"{fine / cost[base][1]:.2f}×") if base and label in ours else ("", "")
        cost_rows.append([label, fmt_seconds(seconds), f"{fine:.1f}", *ratio])
    print(markdown_table(["search", "wall time", "fine trajectories", "time vs standard", "rows vs standard"], cost_rows))


if __name__ == "__main__":
    main()
