"""Straightened students against their teacher's best schedules (issue 21's targets), by an independent Fréchet distance.

What it measures
  For a teacher (default the shipped ``digits``) and its straightened students (default the
  shipped ``digits-boss-2`` and ``digits-boss-4``; any ``bossflow straighten`` output folders
  with ``--students``), each student sampled along the schedule it carries: 2,000 fresh noises
  (seed 1) through Euler, scored by the Fréchet distance on the shipped feature classifier
  (trained on the data, never by bossflow's straightening) as a multiple of the teacher's at
  100 uniform Euler steps (FD×), and the RMSE against that 100-step solution. Beside each: the
  teacher with uniform steps, with the best searched schedule (``auto``, every family, 256
  search noises by default) and along the student's own schedule.

Targets (issue 21)
  digits: 2 NFE ≤ 1.3× and 4 NFE ≤ 1.05×, and at 2 NFE clearly better (under half the FD×)
  than the teacher with the best searched schedule; Fashion-MNIST: 2 NFE ≤ 1.5×.

Command
  python benchmarks/bench_straightened.py                              # the shipped digits students, ~1 min
  python benchmarks/bench_straightened.py --teacher fashion-mnist --students runs/fmnist-boss --eval-samples 1000 \
      --search-samples 64
"""

from __future__ import annotations

import argparse
import time

import torch

import bossflow as bf
from bossflow.core.schedules import load_schedules
from bossflow.models.model_dir import load_model_dir, resolve_model_dir
from bossflow.search import SEARCHES

from _common import machine_line, markdown_table
from bench_straighten_payoff import Scorer

TARGETS = {"digits": {2: 1.3, 4: 1.05}, "fashion-mnist": {2: 1.5}}
"""Issue 21: the largest FD× a straightened student may have, per data set and budget."""


def student_rows(name: str, students: list[str], scorer: Scorer, search_samples: int = 256) -> list[dict]:
    """Every student along its schedule, with the teacher's rows for the same budget."""
    teacher, config = load_model_dir(resolve_model_dir(name))
    shape = tuple(config["sample_shape"])
    rows = []
    for spec in students:
        folder = resolve_model_dir(spec)
        student, _ = load_model_dir(folder)
        for k, schedule in sorted(load_schedules(folder / "schedules.json").items()):
            noise = bf.gaussian_noise(search_samples, shape, seed=0)
            searched = SEARCHES["auto"](teacher, noise, bf.uniform_schedule(100).times, [k])[k]
            rows += [
                {"what": "teacher, uniform steps", "nfe": k, **scorer(teacher, bf.uniform_schedule(k))},
                {"what": "teacher, best searched schedule (auto)", "nfe": k, **scorer(teacher, searched)},
                {"what": "teacher, the student's schedule", "nfe": k, **scorer(teacher, schedule)},
                {"what": f"straightened: {spec}", "nfe": k, **scorer(student, schedule)},
            ]
    return rows


def verdicts(name: str, rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if not r["what"].startswith("straightened"):
            continue
        k = r["nfe"]
        alone = next(x for x in rows if x["nfe"] == k and x["what"].startswith("teacher, best"))
        target = TARGETS.get(name, {}).get(k)
        if target is not None:
            lines.append(f"- {r['what']} at NFE {k}: FD× {r['fd_ratio']:.3f} (target ≤ {target}): "
                         f"{'PASS' if r['fd_ratio'] <= target else 'FAIL'}")
        lines.append(f"- {r['what']} at NFE {k}: {alone['fd_ratio'] / r['fd_ratio']:.2f}× lower FD than the best schedule "
                     f"alone ({alone['fd_ratio']:.2f}×): {'PASS' if r['fd_ratio'] < 0.5 * alone['fd_ratio'] else 'FAIL'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="digits", help="shipped teacher or model directory (default digits)")
    parser.add_argument("--students", default="digits-boss-2,digits-boss-4",
                        help="comma-separated straightened model directories (default the shipped digits-boss-2,4)")
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--search-samples", type=int, default=256, help="noises of the teacher's auto search (default 256)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    started = time.perf_counter()
    teacher, config = load_model_dir(resolve_model_dir(args.teacher))
    scorer = Scorer(args.teacher, teacher, tuple(config["sample_shape"]), args.eval_samples)
    rows = student_rows(args.teacher, args.students.split(","), scorer, args.search_samples)
    print(f"\n### {args.teacher}: FD× = Fréchet distance / the teacher's at 100 Euler steps ({scorer.fd_teacher:.4g}), "
          f"{args.eval_samples} noises; RMSE against that solution\n")
    print(markdown_table(["model", "NFE", "FD×", "RMSE"],
                         [[r["what"], r["nfe"], f"{r['fd_ratio']:.3f}", f"{r['rmse']:.4f}"] for r in rows]))
    print()
    print("\n".join(verdicts(args.teacher, rows)))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
