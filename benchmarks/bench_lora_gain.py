"""Held-out few-step error before and after LoRA straightening: the tiny SD3 pipeline (the README's commands) and the digits teacher.

What it measures
  The endpoint RMSE of K Euler steps along a searched schedule against the base model's
  100-step Euler solution of the same fresh noises, without the LoRA (the baseline, in the
  same process) and with it.
  (a) The tests' tiny random SD3 pipeline (32 px, CFG 4): the README's two commands
      (`bossflow schedule ... --nfe 2,4 --family times`, `bossflow straighten ... --lora-rank 16
      --steps 2000`, pipeline defaults: 256 noises, 40 grid steps, batch 16), scored on 8 noises
      with four prompts that are not among the six training prompts.
  (b) The shipped digits teacher, through the same straightening loop (`straighten`, LoRA rank
      8 on every layer, 4,096 teacher pairs, 2,000 steps of 128) along its bellman 2-step
      schedule (256 noises, 100 grid steps), scored on 1,000 fresh noises.

Command
  python benchmarks/bench_lora_gain.py --threads 2      # about 6 minutes on a 2-core CPU

No target: issue 19 asks for the figures; the gain should be above 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import markdown_table, print_report

PROMPTS = ["a photo of a cat", "a red car on a street", "an old man with a dog",
           "a painting of a mountain at night", "a blue bird in a tree", "a portrait of a young woman"]
HOLDOUT = ["a horse in a field", "a small house at night", "a green river in the city", "a girl with a yellow flower"]


def _pipeline_rows() -> list[list[str]]:
    """(a): the README's commands on the tiny SD3 pipeline; the held-out rows of bossflow_lora.json."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tiny_pipelines import make_sd3_pipeline

    from bossflow.cli import main

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_sd3_pipeline(root / "sd3")
        (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
        (root / "holdout.txt").write_text("\n".join(HOLDOUT) + "\n", encoding="utf-8")
        common = ["--model", f"diffusers:{root / 'sd3'}", "--prompts", str(root / "prompts.txt"), "--guidance-scale", "4",
                  "--quiet"]
        began = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["schedule", *common, "--nfe", "2,4", "--family", "times", "--out", str(root / "s.json")]) == 0
            assert main(["straighten", *common, "--schedule", str(root / "s.json"), "--lora-rank", "16", "--steps", "2000",
                         "--holdout-prompts", str(root / "holdout.txt"), "--out", str(root / "lora")]) == 0
        seconds = time.perf_counter() - began
        rows = json.loads((root / "lora" / "bossflow_lora.json").read_text())["holdout"]
    return [[f"tiny SD3 (CFG 4), held-out prompts, {seconds:.0f} s", r["nfe"], f"{r['base_rmse']:.4f}", f"{r['lora_rmse']:.4f}",
             f"{r['base_rmse'] / r['lora_rmse']:.2f}"] for r in rows]


def _digits_rows() -> list[list[str]]:
    """(b): LoRA straightening of the digits teacher along its bellman 2-step schedule."""
    import bossflow as bf
    from bossflow.core.metrics import endpoint_rmse
    from bossflow.core.solvers import euler
    from bossflow.models.model_dir import load_model_dir, resolve_model_dir
    from bossflow.search import SEARCHES
    from bossflow.search.sampling import sample_with
    from bossflow.training.pairs import teacher_pairs
    from bossflow.training.straighten import LoraSettings, straighten

    teacher, config = load_model_dir(resolve_model_dir("digits"))
    shape = tuple(config["sample_shape"])
    began = time.perf_counter()
    schedule = SEARCHES["bellman"](teacher, bf.gaussian_noise(256, shape, seed=0), bf.uniform_schedule(100).times, [2])[2]
    pairs = teacher_pairs(teacher, [schedule], shape, samples=4096, grid_steps=100, progress=False)
    student, _ = straighten(teacher, pairs, lora=LoraSettings(rank=8), steps=2000, batch_size=128, progress=False)
    seconds = time.perf_counter() - began
    held = bf.gaussian_noise(1000, shape, seed=12345)
    with torch.no_grad():
        reference = euler(teacher, held, bf.uniform_schedule(100))
        before = endpoint_rmse(sample_with(teacher, held, schedule), reference)
        after = endpoint_rmse(sample_with(student, held, schedule), reference)
    return [[f"digits teacher, 1,000 fresh noises, {seconds:.0f} s", 2, f"{before:.4f}", f"{after:.4f}", f"{before / after:.2f}"]]


def gain_table() -> str:
    rows = _pipeline_rows() + _digits_rows()
    return markdown_table(["model", "NFE", "RMSE without LoRA (baseline)", "RMSE with LoRA", "gain"], rows)


if __name__ == "__main__":
    print_report(__doc__, "held-out error before and after LoRA straightening (issue 19)", gain_table)
