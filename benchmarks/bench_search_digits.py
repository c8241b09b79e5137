"""Every registered search on the shipped digits teacher (a trained TinyUNet), side by side.

What it measures
  ``bossflow.bench.run_bench`` on the ``digits`` teacher: searches on 128 noises (seed 0),
  a 100-step uniform base grid, NFE 2, 4, 6, 8; every schedule scored on 500 fresh noises
  (seed 1): endpoint RMSE against a dopri5 reference, W2 on pixels to reference samples of
  other noises (with its sampling floor), search wall time and model rows. The two most
  expensive searches run reduced: refined with 20 + 60 L-BFGS evaluations, evolution with
  16 candidates over 10 generations.

Targets
  None (comparison for issue 8: the default must never be worse than the best peer).

Command
  python benchmarks/bench_search_digits.py      # about 10 minutes on one CPU thread
"""

from __future__ import annotations

import time

from bossflow.bench import BenchConfig, format_bench, run_bench

from _common import apply_thread_option, machine_line


def main() -> None:
    apply_thread_option(__doc__.splitlines()[0], default=1)
    print(machine_line())
    config = BenchConfig(
        models=("digits",),
        nfes=(2, 4, 6, 8),
        search_samples=128,
        eval_samples=500,
        options={"refined": {"steps": 60, "screen_steps": 20}, "evolution": {"population": 16, "generations": 10}},
    )
    started = time.perf_counter()
    report = run_bench(config, progress=False)
    print(format_bench(report))
    print(f"total wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
