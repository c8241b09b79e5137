"""Run every benchmark script in this folder, one fresh interpreter each, and summarise the verdicts.

What it measures
  Nothing itself: it runs every ``bench_*.py`` beside it in turn, prints
  their Markdown tables unchanged, then a table of PASS / FAIL counts per script.

Targets
  Those of each script (see their docstrings and README.md).

Exit status 0 when every script ran to the end (whatever its verdicts), 1 when one crashed.

Command
  python benchmarks/run_all.py              # torch's default thread count
  python benchmarks/run_all.py --threads 1  # passed on to every script
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _common import markdown_table

HERE = Path(__file__).resolve().parent
SCRIPTS = sorted(p.name for p in HERE.glob("bench_*.py"))


def run_script(name: str, extra_args: list[str]) -> tuple[int, str]:
    """Run one benchmark script with this interpreter; return ``(exit code, stdout)`` after echoing it."""
    proc = subprocess.run([sys.executable, str(HERE / name), *extra_args], capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.stderr:
        print(proc.stderr, end="", file=sys.stderr)
    return proc.returncode, proc.stdout


def count_verdicts(output: str) -> tuple[int, int]:
    """Number of table rows ending in PASS and in FAIL."""
    rows = [line.rstrip() for line in output.splitlines() if line.startswith("|")]
    return sum(r.endswith("| PASS |") for r in rows), sum(r.endswith("| FAIL |") for r in rows)


def main() -> int:
    extra_args = sys.argv[1:]
    summary, crashed = [], False
    for name in SCRIPTS:
        code, output = run_script(name, extra_args)
        print()
        passed, failed = count_verdicts(output)
        crashed = crashed or code != 0
        summary.append([name, passed, failed, "ok" if code == 0 else f"crashed (exit {code})"])
    print("## Summary\n")
    print(markdown_table(["script", "PASS", "FAIL", "run"], summary))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
