"""Run every schedule search (or those given) on each model, score every schedule on fresh
noises (endpoint RMSE against a dopri5 reference, W2 to data) and report search time and
model evaluations. Writes bench.md, bench.json and bench.csv.
"""

from __future__ import annotations

import argparse

from ..core.errors import BossflowError
from . import _choices
from ._args import add_quiet, int_list, non_negative_int, positive_int, shape_list, shape_of, str_list

EXAMPLES = """\
examples:
  bossflow bench                                          # all searches, both mixtures, NFE 2..10
  bossflow bench --methods uniform,bellman,global-dp --nfe 2,4
  bossflow bench --methods bellman,auto --effort fast --nfe 2,4,8   # auto with its cheapest refinement
  bossflow bench --models mypkg.flows:make_model --shape 3,32,32 --nfe 4 --out runs/bench
"""

HELP = "run schedule searches side by side on any models"


OUTPUTS = {"out": "folder"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--models", type=str_list, default=["gmm-2d", "gmm-64d"], metavar="M[,M...]",
                   help="presets or module:attribute specs (default: gmm-2d,gmm-64d)")
    b.add_argument("--methods", type=str_list, default=list(_choices.SEARCH_METHODS), metavar="NAME[,NAME...]",
                   help=f"searches to run (default: all: {','.join(_choices.SEARCH_METHODS)})")
    b.add_argument("--nfe", type=int_list, default=list(range(2, 11)), metavar="K[,K...]", help="budgets (default: 2..10)")
    b.add_argument("--grid-steps", type=positive_int, default=100, metavar="N", help="base grid intervals (default: 100)")
    b.add_argument("--search-samples", type=positive_int, default=256, metavar="B", help="search noises (default: 256)")
    b.add_argument("--eval-samples", type=positive_int, default=1000, metavar="B", help="evaluation noises (default: 1000)")
    b.add_argument("--seed", type=non_negative_int, default=0, help="search seed; evaluation uses seed + 1 (default: 0)")
    b.add_argument("--effort", choices=list(_choices.EFFORTS), default="standard",
                   help="auto's refinement budget, as for `bossflow schedule` (default: standard)")
    b.add_argument("--shape", type=shape_list, metavar="D[,D...]", help="sample shape for models without sample_shape")
    b.add_argument("--out", default="bossflow-bench", help="output folder (default: bossflow-bench)")
    add_quiet(b)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.bench import BenchConfig, format_bench, run_bench

    if args.effort != "standard" and "auto" not in args.methods:
        raise BossflowError("--effort sets auto's refinement budget; add auto to --methods or drop --effort.")
    config = BenchConfig(
        models=tuple(args.models),
        methods=tuple(args.methods),
        nfes=tuple(sorted(set(args.nfe))),
        grid_steps=args.grid_steps,
        search_samples=args.search_samples,
        eval_samples=args.eval_samples,
        seed=args.seed,
        shape=shape_of(args.shape),
        options={"auto": {"effort": args.effort}},
    )
    report = run_bench(config, out_dir=args.out, progress=not args.quiet)
    print(format_bench(report))
    print(f"wrote {args.out}/bench.md, bench.json and bench.csv")
    return 0
