"""Benchmark of the Bellman dynamic program that turns a cost matrix into step schedules.

What it measures
  (a) ``bossflow.bellman_paths(C, 50)`` on a random N = 1000 upper-triangular cost matrix
      (``+inf`` on and below the diagonal): median of 7 runs. The baseline in the same
      process is a straightforward vectorised NumPy DP written here (one broadcast
      ``D_{k-1}[i] + C[i, j]`` and ``argmin`` per budget), for the ratio; its totals must
      agree with bellman_paths.
  (b) A naive pure-Python triple-loop DP written here (``dp[k][j] = min_{i<j} dp[k-1][i] +
      C[i][j]`` on lists of floats, then backtracking) against ``bellman_paths`` on an
      N = 1000 matrix with max_nfe = 50 (the size of target (a)): one naive run / best of 7,
      and an exact check of every budget's path and total.

Targets
  (a) median time of bellman_paths(C, 50) at N = 1000 < 0.1 s (the one absolute target,
      from the design; the NumPy ratio beside it is for context).
  (b) speedup >= 30x over the pure-Python DP, identical paths and totals (to 1e-12) for
      every budget 1..50.

The script exits 0 unless it crashes; each target line says PASS or FAIL. Timings on a
shared machine are noisy: re-run a FAIL before acting on it.

Command
  python benchmarks/bench_bellman.py              # torch's default thread count
  python benchmarks/bench_bellman.py --threads 1  # steadier on a shared virtual machine

Runs in about 10 seconds on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np

import bossflow as bf

from _common import fmt_seconds, median, print_report, section, target_row, time_repeats

SEED = 0
LARGE_N, LARGE_NFE = 1000, 50
SMALL_N, SMALL_NFE = LARGE_N, LARGE_NFE  # the naive loop runs on the same problem size (about 2 s)

TARGET_LARGE_SECONDS = 0.1
TARGET_SPEEDUP = 30.0
TOTAL_TOLERANCE = 1e-12
HEADERS = ["what", "time", "speedup", "target", "result"]


def random_cost_matrix(n: int, seed: int) -> np.ndarray:
    """``(n + 1, n + 1)`` float64 matrix, uniform [0, 1) above the diagonal, ``+inf`` on and below."""
    rng = np.random.default_rng(seed)
    cost = np.full((n + 1, n + 1), np.inf)
    upper = np.triu_indices(n + 1, k=1)
    cost[upper] = rng.random(upper[0].size)
    return cost


def numpy_dp_totals(cost: np.ndarray, max_nfe: int) -> np.ndarray:
    """Vectorised NumPy DP: best total for every budget 1..max_nfe (index 0 unused), predecessors kept."""
    n = cost.shape[0] - 1
    best = cost[0].copy()
    preds = np.zeros((max_nfe + 1, n + 1), dtype=np.int64)
    totals = np.full(max_nfe + 1, np.inf)
    totals[1] = best[n]
    for k in range(2, max_nfe + 1):
        candidates = best[:, None] + cost  # [i, j] = D_{k-1}[i] + C[i, j]
        preds[k] = np.argmin(candidates, axis=0)
        best = candidates[preds[k], np.arange(n + 1)]
        totals[k] = best[n]
    return totals


def naive_python_dp(cost: list[list[float]], max_nfe: int) -> dict[int, tuple[list[int], float]]:
    """Pure-Python triple loop over (budget, target, predecessor); ties go to the smallest predecessor."""
    n = len(cost) - 1
    inf = float("inf")
    dp = [[inf] * (n + 1) for _ in range(max_nfe + 1)]
    pred = [[-1] * (n + 1) for _ in range(max_nfe + 1)]
    dp[1] = [cost[0][j] for j in range(n + 1)]
    for k in range(2, max_nfe + 1):
        for j in range(1, n + 1):
            for i in range(j):
                value = dp[k - 1][i] + cost[i][j]
                if value < dp[k][j]:
                    dp[k][j] = value
                    pred[k][j] = i
    return {k: (backtrack(pred, k, n), dp[k][n]) for k in range(1, max_nfe + 1)}


def backtrack(pred: list[list[int]], nfe: int, n: int) -> list[int]:
    """Grid indices ``0, ..., n`` of the best ``nfe``-step path from the predecessor table."""
    path = [n]
    for k in range(nfe, 1, -1):
        path.append(pred[k][path[-1]])
    path.append(0)
    return path[::-1]


def compare_results(fast: dict, naive: dict) -> tuple[bool, float]:
    """``(all paths identical, largest total difference relative to max(1, |total|))`` over every budget."""
    same_paths = fast.keys() == naive.keys()
    worst = 0.0
    for k in naive:
        fast_path, fast_total = fast[k]
        naive_path, naive_total = naive[k]
        same_paths = same_paths and fast_path.tolist() == naive_path
        worst = max(worst, abs(fast_total - naive_total) / max(1.0, abs(naive_total)))
    return same_paths, worst


def bench_large() -> str:
    """Part (a): bellman_paths at N = 1000, max_nfe = 50, against a NumPy DP baseline."""
    cost = random_cost_matrix(LARGE_N, SEED)
    fast_times = time_repeats(lambda: bf.bellman_paths(cost, LARGE_NFE), repeats=7)
    numpy_times = time_repeats(lambda: numpy_dp_totals(cost, LARGE_NFE), repeats=5)
    fast = bf.bellman_paths(cost, LARGE_NFE)
    ref = numpy_dp_totals(cost, LARGE_NFE)
    diff = max(abs(fast[k][1] - ref[k]) for k in range(1, LARGE_NFE + 1))

    t_fast, t_numpy = median(fast_times), median(numpy_times)
    rows = [
        ["NumPy vectorised DP (baseline)", fmt_seconds(t_numpy), "1.0x", "", ""],
        target_row(f"bf.bellman_paths(C, {LARGE_NFE})", fmt_seconds(t_fast), f"{t_numpy / t_fast:.1f}x",
                   f"< {TARGET_LARGE_SECONDS} s", t_fast < TARGET_LARGE_SECONDS),
        target_row("max abs. total difference vs NumPy", f"{diff:.1e}", "",
                   f"<= {TOTAL_TOLERANCE:.0e}", diff <= TOTAL_TOLERANCE),
    ]
    return section(f"### (a) bellman_paths on N = {LARGE_N}, budgets 1..{LARGE_NFE} "
                   f"(median of {len(fast_times)} / {len(numpy_times)} runs)", HEADERS, rows)


def bench_small() -> str:
    """Part (b): pure-Python triple-loop DP against bellman_paths at N = 1000, max_nfe = 50."""
    cost = random_cost_matrix(SMALL_N, SEED + 1)
    cost_lists = cost.tolist()  # plain Python floats, converted once outside the timing
    naive_times = time_repeats(lambda: naive_python_dp(cost_lists, SMALL_NFE), repeats=1, warmup=0)
    fast_times = time_repeats(lambda: bf.bellman_paths(cost, SMALL_NFE), repeats=7)
    same_paths, worst = compare_results(bf.bellman_paths(cost, SMALL_NFE), naive_python_dp(cost_lists, SMALL_NFE))

    t_naive, t_fast = min(naive_times), min(fast_times)
    speedup = t_naive / t_fast
    rows = [
        ["pure-Python triple loop (baseline)", fmt_seconds(t_naive), "1.0x", "", ""],
        target_row(f"bf.bellman_paths(C, {SMALL_NFE})", fmt_seconds(t_fast), f"{speedup:.1f}x",
                   f">= {TARGET_SPEEDUP:.0f}x", speedup >= TARGET_SPEEDUP),
        target_row(f"identical paths, budgets 1..{SMALL_NFE}", str(same_paths), "", "True", same_paths),
        target_row("max total difference (relative)", f"{worst:.1e}", "",
                   f"<= {TOTAL_TOLERANCE:.0e}", worst <= TOTAL_TOLERANCE),
    ]
    return section(f"### (b) bellman_paths vs pure-Python DP on N = {SMALL_N}, budgets 1..{SMALL_NFE} "
                   f"(best of {len(naive_times)} / {len(fast_times)} runs)", HEADERS, rows)


if __name__ == "__main__":
    print_report(__doc__, "bench_bellman", bench_large, bench_small)
