"""CPU speed with glibc's allocator as it comes against `keep_freed_memory` (what the command line sets).

What it measures
  On the shipped digits teacher (TinyUNet, 1x8x8), in fresh processes that alternate between
  glibc's defaults (`BOSSFLOW_DEFAULT_MALLOC=1`) and `bossflow.core._allocator.keep_freed_memory()`:
  a straightening-size training step (batch 512: forward, backward, AdamW) and a sampling-size
  forward without gradients (batch 256), each the median of its process's calls (page faults
  come and go with the heap's state, so not the best call) and the best of `--rounds`
  processes; then a short `bossflow straighten` run (pairs from 512 trajectories, 20 rollout
  steps at NFE 2) as whole processes in the order default, kept, kept, default (a drifting
  load cancels), each setting's mean. Ratios are default / kept.

Command
  python benchmarks/bench_allocator.py     # about 5 minutes on a 2-core CPU
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch
from _common import machine_line, markdown_table, target_row

from bossflow.core._allocator import USER_SETTINGS

PROBE = """
import sys, time, torch
from bossflow.core._allocator import keep_freed_memory
from bossflow.models.model_dir import load_model_dir, resolve_model_dir
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(int(sys.argv[2]))
model, _ = load_model_dir(resolve_model_dir("digits"))
model.float()
opt = torch.optim.AdamW(model.parameters(), 1e-5)
x, t = torch.randn(512, 1, 8, 8), torch.rand(512)

def train():
    opt.zero_grad()
    model(x, t).square().mean().backward()
    opt.step()

def forward():
    with torch.no_grad():
        model(x[:256], t[:256])

for name, fn, calls in (("train", train, 12), ("forward", forward, 30)):
    fn(); fn()
    seconds = []
    for _ in range(calls):
        began = time.perf_counter(); fn(); seconds.append(time.perf_counter() - began)
    print(name, sorted(seconds)[calls // 2])
"""
MODES = ("default", "keep")
"""Process settings: glibc's defaults (``BOSSFLOW_DEFAULT_MALLOC=1``) and :func:`keep_freed_memory`."""


def _env(mode: str) -> dict[str, str]:
    """This process's environment without the settings that make ``keep_freed_memory`` stand aside, plus the opt-out
    for ``default``."""
    env = {k: v for k, v in os.environ.items() if k not in (*USER_SETTINGS, "GLIBC_TUNABLES")}
    return {**env, "BOSSFLOW_DEFAULT_MALLOC": "1"} if mode == "default" else env


def probe(mode: str, threads: int) -> dict[str, float]:
    """Median seconds per call of ``train`` and ``forward`` in one fresh process under ``mode``."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode, str(threads)], env=_env(mode), capture_output=True,
                          text=True, check=True)
    return {name: float(value) for name, value in (line.split() for line in done.stdout.splitlines())}


def straighten_wall(mode: str, threads: int, folder: str, run: int) -> float:
    """Seconds of a short ``bossflow straighten`` on the digits teacher (its own output and pairs per run)."""
    schedule = f"{folder}/schedule.json"
    if not os.path.exists(schedule):
        subprocess.run([sys.executable, "-m", "bossflow.cli", "schedule", "--model", "digits", "--nfe", "2",
                        "--method", "bellman", "--samples", "64", "--out", schedule], check=True, capture_output=True)
    argv = [sys.executable, "-m", "bossflow.cli", "straighten", "--model", "digits", "--schedule", schedule,
            "--out", f"{folder}/{mode}-{run}", "--samples", "512", "--steps", "20", "--pair-solver", "heun",
            "--threads", str(threads), "--quiet"]
    began = time.perf_counter()
    subprocess.run(argv, env=_env(mode), check=True, capture_output=True)
    return time.perf_counter() - began


def allocator_table(threads: int, rounds: int) -> str:
    best = {mode: {"train": float("inf"), "forward": float("inf")} for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            for name, seconds in probe(mode, threads).items():
                best[mode][name] = min(best[mode][name], seconds)
    walls = {mode: 0.0 for mode in MODES}
    with tempfile.TemporaryDirectory() as folder:
        for run, mode in enumerate(("default", "keep", "keep", "default")):
            walls[mode] += straighten_wall(mode, threads, folder, run) / 2
    rows = []
    for name, what in (("train", "training step, batch 512"), ("forward", "forward, batch 256, no grad")):
        default, kept = best["default"][name], best["keep"][name]
        rows.append([what, f"{default * 1e3:.1f} ms", f"{kept * 1e3:.1f} ms", f"{default / kept:.2f}"])
    rows.append(["`bossflow straighten`, 512 trajectories, 20 steps (mean of 2)", f"{walls['default']:.1f} s",
                 f"{walls['keep']:.1f} s", f"{walls['default'] / walls['keep']:.2f}"])
    table = markdown_table(["what", "glibc defaults (baseline)", "keep_freed_memory", "speed-up"], rows)
    ratio = walls["default"] / walls["keep"]
    check = markdown_table(["target", "value", "ratio", "goal", "verdict"],
                           [target_row("`bossflow straighten` not slower", f"{walls['keep']:.1f} s", f"{ratio:.2f}",
                                       ">= 1.00", ratio >= 1.0)])
    return table + "\n\n" + check


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting for the call timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the header's thread count is the probes'
    print(f"## glibc allocator settings ({machine_line()})\n")
    print(allocator_table(args.threads, args.rounds))
