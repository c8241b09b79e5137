"""Benchmark of the cost matrix on several processes (``torch.distributed``) against one.

What it measures
  ``bossflow.cost_matrix`` throughput (noise samples per second) on two models:
  ``gmm-64d`` (the exact 64-D mixture flow, float64, 2,048 samples, batch 64, N = 100) and a
  randomly initialised ``TinyUNet(channels=3, width=16)`` on 3×16×16 images (float32, 64
  samples, batch 8, N = 50). Each configuration runs in fresh processes started with
  ``torch.multiprocessing.spawn``: 1 process × 1 thread (the baseline), 1 process × P
  threads, and P processes × 1 thread each (gloo, ranks joined through
  ``bossflow.distributed.init_from_env`` as under torchrun). Every rank builds the same model
  and noises, warms up on one batch, waits at a barrier, and the wall time of the slowest
  rank is taken; process start-up is not counted. Best of ``--repeats`` runs.

Targets
  The P-process matrix equals the 1-process matrix: max |difference| over the upper
  triangle ≤ 1e-9 × its largest entry (float64 sums; only the order of additions differs).
  The speed-up is reported, not targeted: on P free cores it approaches P×; on a shared
  2-core machine with other jobs expect well under 2×.

Command
  python benchmarks/bench_distributed.py                  # CPU, 2 processes
  python benchmarks/bench_distributed.py --device auto    # the same code path on a GPU when one is present

With ``--device cuda``/``auto`` on a GPU machine every rank uses ``cuda:LOCAL_RANK`` modulo
the GPUs present (two ranks may share one GPU here: the cost sums travel through gloo on
the CPU). About a minute on 2 idle cores; up to 4 minutes on a 2-core machine shared with
other jobs (the 1-process × 2-thread rows stall there).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

import bossflow as bf
from bossflow import distributed as bd
from bossflow.models import gmm_64d

from _common import machine_line, markdown_table, verdict

TARGET_REL_DIFF = 1e-9

CASES = {
    "gmm-64d": {"samples": 2048, "batch": 64, "steps": 100},
    "tinyunet-3x16x16": {"samples": 64, "batch": 8, "steps": 50},
}


def _build(case: str, device: torch.device):
    if case == "gmm-64d":
        model = gmm_64d().to(device)
        noise = bf.gaussian_noise(CASES[case]["samples"], (64,), seed=0, dtype=torch.float64, device=device)
    else:
        torch.manual_seed(0)  # the same random weights on every rank
        model = bf.TinyUNet(channels=3, width=16).to(device).eval()
        noise = bf.gaussian_noise(CASES[case]["samples"], (3, 16, 16), seed=0, device=device)
    return model, noise, bf.uniform_schedule(CASES[case]["steps"]).times


def _worker(local: int, world: int, port: int, case: str, threads: int, device_name: str, out: str) -> None:
    if world > 1:
        os.environ.update(RANK=str(local), LOCAL_RANK=str(local), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        bd.init_from_env()
    torch.set_num_threads(threads)
    device = bd.pick_device(device_name)
    model, noise, grid = _build(case, device)
    batch = CASES[case]["batch"]
    bf.cost_matrix(model, noise[: batch * world], grid, batch_size=batch, model_id="warm-up")
    if device.type == "cuda":
        torch.cuda.synchronize()
    bd.barrier()
    start = time.perf_counter()
    cost = bf.cost_matrix(model, noise, grid, batch_size=batch, model_id=case)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    slowest = float(bd.all_reduce_sum_float64(np.eye(world)[local] * elapsed).max())  # every rank's time, then the max
    if bd.is_main():
        np.savez(out, cost=cost, seconds=slowest, device=str(device))
    bd.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(case: str, processes: int, threads: int, device: str, folder: Path) -> tuple[float, np.ndarray, str]:
    out = folder / f"{case}-{processes}x{threads}.npz"
    mp.spawn(_worker, args=(processes, _free_port(), case, threads, device, str(out)), nprocs=processes, join=True)
    with np.load(out) as data:
        return float(data["seconds"]), np.array(data["cost"]), str(data["device"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="processes of the distributed run (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration, best kept (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    args = parser.parse_args()
    p = args.processes
    print(machine_line().replace(f"{torch.get_num_threads()} torch threads", "threads as listed"))
    print(f"{os.cpu_count()} CPU cores visible; device {args.device}; best of {args.repeats}\n")
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            spec = CASES[case]
            configs = [(1, 1), (1, p), (p, 1)]
            results = {}
            for processes, threads in configs:
                runs = [run(case, processes, threads, args.device, Path(tmp)) for _ in range(args.repeats)]
                results[(processes, threads)] = (min(r[0] for r in runs), runs[0][1], runs[0][2])
            base = results[(1, 1)][0]
            for (processes, threads), (seconds, _, device) in results.items():
                rows.append([case, device, processes, threads, f"{seconds:.2f} s", f"{spec['samples'] / seconds:.1f}",
                             f"{base / seconds:.2f}×"])
            upper = np.triu_indices(spec["steps"] + 1, 1)
            single, multi = results[(1, 1)][1][upper], results[(p, 1)][1][upper]
            rel = float(np.abs(multi - single).max() / np.abs(single).max())
            checks.append([case, f"{rel:.1e}", verdict(rel <= TARGET_REL_DIFF)])
    print(markdown_table(["model", "device", "processes", "threads each", "wall", "samples/s", "vs 1×1"], rows))
    print()
    print(markdown_table(["model", f"{p}-process vs 1-process matrix, max rel. diff (target ≤ {TARGET_REL_DIFF:g})",
                          "verdict"], checks))


if __name__ == "__main__":
    main()
