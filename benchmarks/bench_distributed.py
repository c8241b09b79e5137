"""Benchmark of the cost matrix and of ``auto`` on several processes (``torch.distributed``) against one.

What it measures
  ``bossflow.cost_matrix`` throughput (noise samples per second) on two models:
  ``gmm-64d`` (the exact 64-D mixture flow, float64, 2,048 samples, batch 64, N = 100) and a
  randomly initialised ``TinyUNet(channels=3, width=16)`` on 3×16×16 images (float32, 64
  samples, batch 8, N = 50); and ``bossflow.search.auto.auto_schedules`` (the default search)
  on ``gmm-2d`` (256 noises, NFE 2, 4, 6, 8, 10, N = 100) and the shipped ``digits`` teacher
  (64 noises, NFE 2 and 4), with the refinement's chunks of 64 and 12 noises. Each configuration
  runs in fresh processes started with ``torch.multiprocessing.spawn``: 1 process × 1 thread
  (the baseline), 1 process × P threads, and P processes × 1 thread each (gloo, ranks joined
  through ``bossflow.distributed.init_from_env`` as under torchrun). Every rank builds the
  same model and noises, warms up, waits at a barrier, and the wall time of the slowest rank
  is taken; process start-up is not counted. Best of ``--repeats`` runs.

Targets
  The P-process matrix equals the 1-process matrix: max |difference| over the upper
  triangle ≤ 1e-9 × its largest entry (float64 sums; only the order of additions differs).
  The P-process auto schedules equal the 1-process ones (step and evaluation times within
  1e-9: the refinement adds its chunks' sums in one process's order; only the BOSS cost
  matrix's rounding differs). The speed-up is reported, not targeted: on P free cores it
  approaches P× where the model is expensive (auto runs its teacher and cheap searches
  whole on every process, so it gains less); on a shared 2-core machine with other jobs
  expect well under 2×, and nothing for the 2-D mixture, whose model is too cheap to split.

Command
  python benchmarks/bench_distributed.py                  # CPU, 2 processes
  python benchmarks/bench_distributed.py --cases auto-gmm-2d,auto-digits
  python benchmarks/bench_distributed.py --device auto    # the same code path on a GPU when one is present

With ``--device cuda``/``auto`` on a GPU machine every rank uses ``cuda:LOCAL_RANK`` modulo
the GPUs present (two ranks may share one GPU here: the sums travel through gloo on the
CPU). About 3 minutes on 2 idle cores; longer on a 2-core machine shared with other jobs
(the 1-process × 2-thread rows stall there).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing.util
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

import bossflow as bf
from bossflow import distributed as bd
from bossflow.loading import load_model
from bossflow.models import gmm_2d, gmm_64d
from bossflow.search.auto import auto_schedules

from _common import machine_line, markdown_table, verdict

TARGET_REL_DIFF = 1e-9

CASES = {
    "gmm-64d": {"samples": 2048, "batch": 64, "steps": 100},
    "tinyunet-3x16x16": {"samples": 64, "batch": 8, "steps": 50},
    # batch: the refinement's chunk size, the same for every number of processes
    "auto-gmm-2d": {"samples": 256, "batch": 64, "steps": 100, "nfe": [2, 4, 6, 8, 10]},
    "auto-digits": {"samples": 64, "batch": 12, "steps": 100, "nfe": [2, 4]},
}
AUTO_TOLERANCE = 1e-9


def _build(case: str, device: torch.device):
    if case == "auto-gmm-2d":
        model = gmm_2d().to(device)
        noise = bf.gaussian_noise(CASES[case]["samples"], (2,), seed=0, dtype=torch.float64, device=device)
    elif case == "auto-digits":
        loaded = load_model("digits")
        model = loaded.model.to(device)
        noise = bf.gaussian_noise(CASES[case]["samples"], loaded.sample_shape, seed=0, device=device)
    elif case == "gmm-64d":
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
    if case.startswith("auto-"):
        auto_schedules(model, noise[:16], bf.uniform_schedule(10).times, [2], refine={"steps": 2, "screen_steps": 2},
                       continue_steps=2)  # warm-up
        bd.barrier()
        start = time.perf_counter()
        found = auto_schedules(model, noise, grid, CASES[case]["nfe"], refine={"batch_size": CASES[case]["batch"]})
        result = json.dumps([s.to_dict() for s in found.values()])
    else:
        batch = CASES[case]["batch"]
        bf.cost_matrix(model, noise[: batch * world], grid, batch_size=batch, model_id="warm-up")
        if device.type == "cuda":
            torch.cuda.synchronize()
        bd.barrier()
        start = time.perf_counter()
        cost = bf.cost_matrix(model, noise, grid, batch_size=batch, model_id=case)
        result = ""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    slowest = float(bd.all_reduce_sum_float64(np.eye(world)[local] * elapsed).max())  # every rank's time, then the max
    if bd.is_main():
        if result:
            np.savez(out, schedules=result, seconds=slowest, device=str(device))
        else:
            np.savez(out, cost=cost, seconds=slowest, device=str(device))
    bd.shutdown()
    # Leave without interpreter finalisation. In 2 of 24 two-process gloo runs of auto-digits a
    # rank aborted there ("terminate called without an active exception"; faulthandler showed
    # no Python frame left), after every result had been written: a teardown race in torch's
    # gloo threads, not in this code. The file above is closed; run multiprocessing's own exit
    # handlers (what the spawned child runs after its target returns: they release the spawn
    # queue's semaphores), flush the streams and go.
    multiprocessing.util._exit_function()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(case: str, processes: int, threads: int, device: str, folder: Path) -> tuple[float, Any, str]:
    """One configuration in fresh processes: ``(slowest rank's seconds, cost matrix or schedules, device)``."""
    out = folder / f"{case}-{processes}x{threads}.npz"
    mp.spawn(_worker, args=(processes, _free_port(), case, threads, device, str(out)), nprocs=processes, join=True)
    with np.load(out) as data:
        if "schedules" in data:
            found = [bf.Schedule.from_dict(d) for d in json.loads(str(data["schedules"]))]
            return float(data["seconds"]), found, str(data["device"])
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
            if case.startswith("auto-"):
                one, many = results[(1, 1)][1], results[(p, 1)][1]
                diff = max(float(np.abs(np.concatenate([a.times - b.times, a.evaluation_times - b.evaluation_times])).max())
                           for a, b in zip(one, many))
                checks.append([case, "schedules' step and evaluation times, max abs. diff", f"{diff:.1e}",
                               f"≤ {AUTO_TOLERANCE:g}", verdict(diff <= AUTO_TOLERANCE)])
                continue
            upper = np.triu_indices(spec["steps"] + 1, 1)
            single, multi = results[(1, 1)][1][upper], results[(p, 1)][1][upper]
            rel = float(np.abs(multi - single).max() / np.abs(single).max())
            checks.append([case, "cost matrix, max rel. diff", f"{rel:.1e}", f"≤ {TARGET_REL_DIFF:g}",
                           verdict(rel <= TARGET_REL_DIFF)])
    print(markdown_table(["model", "device", "processes", "threads each", "wall", "samples/s", "vs 1×1"], rows))
    print()
    print(markdown_table(["case", f"{p}-process vs 1-process", "difference", "target", "verdict"], checks))


if __name__ == "__main__":
    main()
