"""Benchmark of the default search ``auto`` against every peer search, NFE 2 to 10.

What it measures
  For each flow, schedules for NFE 2, 4, 6, 8, 10 over a uniform base grid of N = 100 steps,
  searched on noises of seed 0, by:
    * the peers, ``bossflow.search.SEARCHES[name]`` with their defaults: uniform, edm, shift,
      bellman (BOSS), global-dp (OSS-style DP), gits, ays, evolution (AutoDiffusion-style),
      olss; on the mixtures also the issue's numbers for the OSS authors' own search code;
    * refined (ours, thorough: 6 candidates x 50 screening + 200 L-BFGS evaluations on every
      noise per budget), shown for reference, not as a peer;
    * auto: ``bossflow.search.auto.auto_schedules`` with its defaults (the default of
      ``bossflow schedule``), auto-euler (``family="euler"``: Euler schedules only, what
      straightening takes) and auto-times (``family="times"``: step times only, what
      diffusers' schedulers and flow_matching's ODESolver take); auto-fast and auto-thorough
      (``effort="fast"`` and ``"thorough"``: the refinement's cheapest and largest budgets).
  Every schedule is scored on 1000 fresh noises (seed 1) with the solver it was made for
  (``bossflow.search.sample_with``): endpoint RMSE per dimension against a dopri5 solution.
  Search cost: wall time, forward model rows counted with ``bf.NFECounter`` (one row = one
  sample through the model; teachers included), rows back-propagated by refinements, and
  the forward rows in units of one fine trajectory (N rows per search noise: what BOSS
  spends for every budget at once). A second table lists auto's held-out RMSE of every
  candidate and its choice.

  Oracle (mixtures; ``--no-oracle`` skips it): where auto, auto-euler, auto-fast or
  auto-thorough returns a refined schedule (family: Euler step times with evaluation
  times), or auto-times does (family: step times only, the oracle then without evaluation
  times), a slow oracle refines from
  uniform, BOSS, global-dp and two random starts, each also with s_0 = 0.5 and 0.9, screened
  for 100 L-BFGS evaluations each and the best continued for 400, on the same search noises
  and teacher. Where auto or an effort returns ``refined-ls`` with its times fitted for the
  least-squares last step (family lstsq), the oracle does the same
  (``refine_schedule(last_step="lstsq")``), also starting from auto-euler's schedule.
  Compared: search-set RMSE (the objective both minimise; for lstsq, the sampled error) and
  held-out RMSE (what a user gets; the oracle may overfit the search noises).

  Flows and sizes:
    * ``gmm-2d``, ``gmm-64d``: the exact mixture flows in float64, 256 search noises,
      reference dopri5 at rtol = atol = 1e-8.
    * ``digits``: the shipped digits teacher (a TinyUNet, float32) from
      ``bossflow.loading.load_model("digits")``, 64 search noises, reference dopri5 at
      rtol = atol = 1e-5; evolution reduced to population 16 x 10 generations, refined to
      the BOSS start with 10 + 40 evaluations (one CPU thread).

Targets (issue 8)
  * auto's held-out RMSE <= the best peer's, with 1 % tolerance, at every NFE (PASS/FAIL;
    counted for auto-fast and auto-thorough too);
  * auto-times's <= the best peer whose schedules are step times only (all but OLSS and the
    OSS code), with 1 % tolerance: what a diffusers or flow_matching user gets;
  * auto's search-set RMSE within 1 % of the oracle's where the oracle runs;
  * the search cost in fine trajectories per budget (the call's for all five budgets, / 5):
    auto-fast at most 5 (issue 8's "no more than a few"), the default at most 12. Issue 8
    asked "a few" of the default; the default keeps the larger budget because the accuracy
    ``fast`` gives up is where auto leads the peers (see "Effort" in
    ``bossflow.search.auto``'s docstring).

Timing runs on one torch thread by default (``--threads``); about 13 minutes in all on a
shared 2-core CPU.

Command
  python benchmarks/bench_auto.py [--model gmm-2d|gmm-64d|digits|all] [--threads 1] [--no-oracle]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch
import tqdm.auto  # noqa: F401  (imported before timing: the refinement's progress bar imports it lazily)

import bossflow as bf
from bossflow.search import SEARCHES, sample_with
from bossflow.search.refine import refine_schedule

from _common import OSS_CODE, exact_flow_cases, fmt_seconds, machine_line, markdown_table, random_starts, time_once, verdict

N_STEPS = 100
EVAL_SAMPLES = 1000
NFES = [2, 4, 6, 8, 10]
PEERS = ("uniform", "edm", "shift", "bellman", "global-dp", "gits", "ays", "evolution", "olss")
OURS = ("refined", "auto", "auto-euler", "auto-times", "auto-fast", "auto-thorough")
EFFORT_RUNS = ("auto-fast", "auto-thorough")
"""auto with ``effort="fast"`` and ``effort="thorough"`` (family any), beside the default ``standard``."""
TIMES_PEERS = ("uniform", "edm", "shift", "bellman", "global-dp", "gits", "ays", "evolution")
"""The peers whose schedules are step times only (what diffusers and flow_matching sample with)."""
TOLERANCE = 0.01
COST_TARGETS = {"auto": 12.0, "auto-fast": 5.0}
"""Most fine trajectories per budget each may spend (see "Targets" above)."""
ORACLE_RANDOM_STARTS = 2
ORACLE_SCREEN, ORACLE_STEPS, ORACLE_LATE = 100, 400, (0.5, 0.9)


class Case(NamedTuple):
    """One flow: model, search noises (seed 0), fresh noises (seed 1) with their reference, search options."""

    name: str
    model: Any
    noise: torch.Tensor
    z: torch.Tensor
    reference: torch.Tensor
    options: dict
    note: str
    oracle: bool


def cases(which: str, oracle: bool) -> Iterator[Case]:
    """The flows of the comparison, built lazily (the digits reference is solved only when asked for)."""
    if which in ("gmm-2d", "gmm-64d", "all"):
        for name, model, noise, z, reference in exact_flow_cases(256, EVAL_SAMPLES):
            if which in (name, "all"):
                yield Case(name, model, noise, z, reference, {}, "256 search noises, float64, dopri5 1e-8", oracle)
    if which in ("digits", "all"):
        from bossflow.loading import load_model

        loaded = load_model("digits")
        model, shape = loaded.model, loaded.sample_shape
        noise = bf.gaussian_noise(64, shape, seed=0)
        z = bf.gaussian_noise(EVAL_SAMPLES, shape, seed=1)
        reference = bf.reference_solve(model, z, rtol=1e-5, atol=1e-5)
        options = {
            "refined": {"starts": ("bellman",), "steps": 40, "screen_steps": 10},
            "evolution": {"population": 16, "generations": 10},
        }
        yield Case("digits", model, noise, z, reference, options,
                   "64 search noises, float32, dopri5 1e-5, evolution and refined reduced", False)


def run_search(method: str, case: Case, grid: np.ndarray) -> tuple[float, dict[int, bf.Schedule], bf.NFECounter]:
    """One search call for every budget, timed and counted."""
    counted = bf.NFECounter(case.model)
    name, options = method, dict(case.options.get(method, {}))
    if method in ("auto-euler", "auto-times"):
        name, options = "auto", {"family": method.split("-")[1]}
    if method in ("auto-fast", "auto-thorough"):
        name, options = "auto", {"effort": method.split("-")[1]}
    seconds, found = time_once(lambda: SEARCHES[name](counted, case.noise, grid, NFES, **options))
    return seconds, found, counted


def backward_rows(method: str, schedules: dict[int, bf.Schedule]) -> int:
    """Rows back-propagated through the model by the whole search call (0 for searches without gradients)."""
    if method == "refined":
        return sum(int(s.meta.get("backward_rows", 0)) for s in schedules.values())
    if method.startswith("auto"):
        return int(next(iter(schedules.values())).meta["backward_rows"])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["gmm-2d", "gmm-64d", "digits", "all"], default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow oracle on the mixtures")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"base grid N = {N_STEPS} (uniform); score: endpoint RMSE on {EVAL_SAMPLES} fresh noises (seed 1) vs dopri5, "
          f"Euler except OLSS-type schedules (olss_solve)\n")

    grid = bf.uniform_schedule(N_STEPS).times
    quality, choices, costs, oracle_rows, times_rows = [], [], [], [], []
    passes = times_passes = oracle_passes = oracle_held_passes = 0
    effort_passes = {m: 0 for m in EFFORT_RUNS}
    per_budget: dict[str, list[float]] = {m: [] for m in ("bellman", "global-dp", "olss", *OURS)}
    started = time.perf_counter()
    for case in cases(args.model, not args.no_oracle):
        print(f"{case.name}: {case.note}", flush=True)
        found: dict[str, dict[int, bf.Schedule]] = {}
        fine = N_STEPS * case.noise.shape[0]
        for method in (*PEERS, *OURS):
            seconds, found[method], counted = run_search(method, case, grid)
            costs.append([case.name, method, fmt_seconds(seconds), f"{counted.samples:,}",
                          f"{backward_rows(method, found[method]):,}", f"{counted.samples / fine:.1f}"])
            if method in per_budget:
                per_budget[method].append(counted.samples / fine / len(NFES))
            print(f"  {method}: {fmt_seconds(seconds)}", flush=True)

        # The oracle's teacher: the search noises' dopri5 endpoints, solved once per flow.
        target = bf.reference_solve(case.model, case.noise) if case.oracle else None

        def score(schedule: bf.Schedule) -> float:
            return bf.endpoint_rmse(sample_with(case.model, case.z, schedule), case.reference)

        def search_rmse(schedule: bf.Schedule) -> float:
            return bf.endpoint_rmse(sample_with(case.model, case.noise, schedule), target)

        def oracle_for(family: str, ours: dict[str, bf.Schedule], starts: list[bf.Schedule], target: torch.Tensor) -> None:
            """The slow oracle of one family, and how close each of ``ours`` comes to it."""
            nonlocal oracle_passes, oracle_held_passes
            k = starts[0].nfe
            eval_times = family in ("euler", "lstsq")
            last_step = "lstsq" if family == "lstsq" else "euler"
            secs, oracle = time_once(lambda: refine_schedule(
                case.model, case.noise, starts, target=target, screen_steps=ORACLE_SCREEN, steps=ORACLE_STEPS,
                late_starts=ORACLE_LATE, eval_times=eval_times, last_step=last_step))
            # Euler families: the objective; the least-squares last step: the sampled search-set error.
            oracle_search = math.sqrt(oracle.meta["loss"]) if last_step == "euler" else search_rmse(oracle)
            oracle_held = score(oracle)
            for m, s in ours.items():
                search = math.sqrt(s.meta["candidate_meta"]["loss"]) if last_step == "euler" else search_rmse(s)
                ok = search <= oracle_search * (1 + TOLERANCE)
                held = score(s)
                held_ok = held <= oracle_held * (1 + TOLERANCE)
                oracle_passes += ok
                oracle_held_passes += held_ok
                oracle_rows.append([case.name, k, m, family, f"{search:.5f}", f"{oracle_search:.5f}",
                                    f"{(search / oracle_search - 1) * 100:+.1f}%", verdict(ok), f"{held:.4f}",
                                    f"{oracle_held:.4f}", f"{(held / oracle_held - 1) * 100:+.1f}%", verdict(held_ok),
                                    fmt_seconds(secs)])

        for k in NFES:
            rmse = {m: score(found[m][k]) for m in found}
            peers = {m: rmse[m] for m in PEERS}
            if case.name in OSS_CODE and k in OSS_CODE[case.name]:
                peers["OSS code"] = OSS_CODE[case.name][k]
            best = min(peers, key=peers.get)
            ok = rmse["auto"] <= peers[best] * (1 + TOLERANCE)
            passes += ok
            for m in EFFORT_RUNS:
                effort_passes[m] += rmse[m] <= peers[best] * (1 + TOLERANCE)
            best_times = min(TIMES_PEERS, key=rmse.get)
            times_ok = rmse["auto-times"] <= rmse[best_times] * (1 + TOLERANCE)
            times_passes += times_ok
            auto = found["auto"][k]
            quality.append([case.name, k, *(f"{rmse[m]:.4f}" for m in PEERS),
                            f"{peers['OSS code']:.3f}" if "OSS code" in peers else "-",
                            f"{rmse['refined']:.4f}", f"**{rmse['auto']:.4f}**", f"{rmse['auto-euler']:.4f}",
                            *(f"{rmse[m]:.4f}" for m in EFFORT_RUNS), auto.meta["selected"], best,
                            f"{(rmse['auto'] / peers[best] - 1) * 100:+.1f}%", verdict(ok)])
            times_rows.append([case.name, k, f"{rmse['auto-times']:.4f}", found["auto-times"][k].meta["selected"],
                               best_times, f"{rmse[best_times]:.4f}",
                               f"{(rmse['auto-times'] / rmse[best_times] - 1) * 100:+.1f}%", verdict(times_ok)])
            held = auto.meta["holdout_rmse"]
            choices.append([case.name, k, *(f"{held[m]:.4f}" if held[m] is not None else "-" for m in held),
                            auto.meta["selected"], found["auto-euler"][k].meta["selected"]])
            if not case.oracle:
                continue
            starts = [bf.uniform_schedule(k), found["bellman"][k], found["global-dp"][k],
                      *random_starts(k, ORACLE_RANDOM_STARTS, seed=k)]
            for family, members in (("euler", ("auto", "auto-euler", *EFFORT_RUNS)), ("times", ("auto-times",))):
                ours = {m: found[m][k] for m in members if found[m][k].meta["selected"] == "refined"}
                if ours:
                    oracle_for(family, ours, starts, target)
            # refined-ls with its times fitted for the least-squares last step: the oracle also starts
            # from auto-euler's refined schedule, as auto's refined-ls starts from its refinement.
            ours = {m: found[m][k] for m in ("auto", *EFFORT_RUNS) if found[m][k].meta["candidate_meta"].get("last_step")}
            if ours:
                oracle_for("lstsq", ours, [found["auto-euler"][k], *starts], target)

    print()
    print(markdown_table(["flow", "NFE", *PEERS, "OSS code", "refined (ours, slow)", "auto", "auto-euler", *EFFORT_RUNS,
                          "auto chose", "best peer", "auto vs best peer", f"auto <= best peer (+{TOLERANCE:.0%})"], quality))
    print(f"\n{passes} of {len(quality)} PASS")
    for m in EFFORT_RUNS:
        print(f"{m} <= best peer (+{TOLERANCE:.0%}): {effort_passes[m]} of {len(quality)}")
    print()
    print("Step times only (auto --family times, for diffusers and flow_matching) against the peers of that family:\n")
    print(markdown_table(["flow", "NFE", "auto-times", "auto-times chose", "best times peer", "its RMSE",
                          "auto-times vs it", f"auto-times <= it (+{TOLERANCE:.0%})"], times_rows))
    print(f"\n{times_passes} of {len(times_rows)} PASS\n")
    if oracle_rows:
        print("Oracle of the refined family (Euler step + evaluation times; step times only; or, family lstsq, step "
              "and evaluation times with a least-squares last step, whose search-set RMSE is the sampled one), where "
              "auto returned such a schedule:\n")
        print(markdown_table(["flow", "NFE", "search", "family", "search-set RMSE", "oracle", "gap", "within 1 %",
                              "held-out RMSE", "oracle", "gap", "within 1 %", "oracle wall time"], oracle_rows))
        print(f"\nwithin 1 % of the oracle: {oracle_passes} of {len(oracle_rows)} on the search set (the objective "
              f"both minimise), {oracle_held_passes} of {len(oracle_rows)} on fresh noises\n")
    print("auto's selection: held-out RMSE (1/4 of the search noises, vs the search teacher) of each candidate fitted "
          "on the other 3/4:\n")
    candidates = list(found["auto"][NFES[0]].meta["holdout_rmse"])
    print(markdown_table(["flow", "NFE", *candidates, "auto selected", "auto-euler selected"], choices))
    print("\nSearch cost, all five budgets in one call (fine trajectories = forward rows / (N x search noises)):\n")
    print(markdown_table(["flow", "search", "wall time", "forward rows", "backward rows", "fine trajectories"], costs))
    print("\nFine trajectories per budget (the call's / 5), flow by flow:\n")
    for m, values in per_budget.items():
        line = f"  {m}: " + " / ".join(f"{v:.1f}" for v in values)
        if m in COST_TARGETS and values:
            line += f"  (at most {COST_TARGETS[m]:g}: {verdict(max(values) <= COST_TARGETS[m])})"
        print(line)
    print(f"\ntotal wall time {fmt_seconds(time.perf_counter() - started)}")


if __name__ == "__main__":
    main()
