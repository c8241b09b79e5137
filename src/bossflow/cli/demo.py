"""Run uniform, EDM, time-shift, BOSS and the other searches on the exact 2-D and 64-D
Gaussian-mixture flows (NFE 2..10) and on the shipped digits teacher (a reduced set), and
report endpoint errors, W2, MMD² and the digits Fréchet distance, with figures (schedules,
error vs NFE, cost matrices, samples). Offline, CPU, about 2 minutes; the base install is
enough (the digits data ship with bossflow, no scikit-learn needed). The progress bar names
the stage running and weighs each by its expected time.
"""

from __future__ import annotations

import argparse

from ._args import add_quiet, positive_int

EXAMPLES = """\
examples:
  bossflow demo                       # full demo, a few minutes on CPU
  bossflow demo --quick --out /tmp/d  # reduced sizes, seconds
"""

HELP = "compare every schedule search on the mixture flows and the digits teacher; write a report with figures"


OUTPUTS = {"out": "folder"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--out", default="bossflow-demo", help="output folder (default: bossflow-demo)")
    d.add_argument("--quick", action="store_true", help="reduced sizes (for tests)")
    d.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="torch CPU threads (default: 1, the fastest for the demo's small models, idle or under load)")
    add_quiet(d)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.demo import DISTANCE_BOLD, format_summary, run_demo

    report = run_demo(args.out, quick=args.quick, progress=not args.quiet, threads=args.threads)
    models = ", ".join(report["floors"])
    print(f"# bossflow demo: {models} ({report['seconds']:.0f} s)\n")
    print("endpoint RMSE vs reference solution (lower is better, best per column in bold):\n")
    print(format_summary(report, "rmse"))
    print("\ndistance to data (W2 for the mixtures, digits Fréchet distance for digits):\n")
    print(format_summary(report, "distance"))
    print(f"\n{DISTANCE_BOLD}")
    figures = f" and {len(report['figures'])} figures" if report["figures"] else ""
    print(f"\nwrote {args.out}/report.md, report.json, report.csv{figures}")
    return 0
