"""What `bossflow schedule --model diffusers:DIR` costs on SD3-medium at 1024x1024: calls, FLOPs, time.

What it measures
  (a) The transformer calls of the pipeline default search for --nfe 4,6,8 with
      classifier-free guidance (bellman, 64 noises, 40 grid steps) and of its held-out table
      (8 noises, a 100-step reference, each budget searched and default), computed by the
      same functions the command prints them with.
  (b) One SD3-medium transformer call at 1024x1024 (latent 16x128x128, 4,096 image tokens,
      333 text tokens), the real architecture (diffusers' SD3Transformer2DModel with
      stabilityai/stable-diffusion-3-medium's config: 24 joint blocks, 24 heads of 64, joint
      dim 4096, pooled dim 2048) with random weights: FLOPs counted by torch's FlopCounterMode
      and CPU wall time, both measured at 1 and 2 blocks and extrapolated linearly to 24
      (every block is the same). The baseline in the same process is the 1-block call.
      FlopCounterMode counts no FLOPs for scaled_dot_product_attention on the CPU, so the joint
      attention is added from its shapes: 4 x tokens^2 x 64 x 24 heads per block (QK^T and AV).
  (c) The search's time: measured CPU seconds per call times the calls, and, since no GPU is
      measured here, a GPU figure from the counted FLOPs at an assumed sustained throughput
      (stated in the table; replace it with `first batch: ... ms per transformer call`, which
      the command prints after its first batch on your GPU).

Command
  python benchmarks/bench_pipeline_cost.py            # about 2 minutes on a 2-core CPU, 3 GB of memory
  python benchmarks/bench_pipeline_cost.py --threads 2

No target: it states the estimate asked for by issue 18.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import fmt_seconds, markdown_table, median, print_report, time_repeats

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, pos_embed_max_size=192)
LAYERS = 24
TEXT_TOKENS = 77 + 256  # CLIP's 77 and T5's default max_sequence_length of 256
LATENT = (16, 128, 128)  # 1024 / 8 (the VAE factor)
ASSUMED_GPU_FLOPS = {"A100 (assumed 150 TFLOP/s sustained bf16)": 150e12,
                     "H100 (assumed 400 TFLOP/s sustained bf16)": 400e12}


def _default_search_calls() -> tuple[int, int]:
    """(search, held-out table) transformer calls of `bossflow schedule --model diffusers:DIR --nfe 4,6,8` with CFG."""
    from bossflow.cli import _pipeline

    defaults = {name: pipeline for name, (_, pipeline) in _pipeline.DEFAULTS.items()}
    args = argparse.Namespace(**defaults, substeps=1, reference="euler", holdout_samples=8)
    nfes = [4, 6, 8]
    return _pipeline.expected_calls(args, nfes, 2), _pipeline.holdout_calls(args, nfes, 2)


def _call(layers: int) -> tuple[float, float]:
    """(FLOPs, median CPU seconds) of one SD3-medium-shaped transformer call with ``layers`` blocks."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(num_layers=layers, **SD3_MEDIUM).eval()
    inputs = dict(hidden_states=torch.randn(1, *LATENT), encoder_hidden_states=torch.randn(1, TEXT_TOKENS, 4096),
                  pooled_projections=torch.randn(1, 2048), timestep=torch.tensor([500.0]), return_dict=False)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(**inputs)
        seconds = median(time_repeats(lambda: model(**inputs), repeats=2, warmup=0))
    return float(counter.get_total_flops()), seconds


def _attention_flops() -> float:
    """FLOPs of one block's joint attention: QK^T and AV, each 2 x tokens^2 x head_dim per head."""
    tokens = (LATENT[1] // SD3_MEDIUM["patch_size"]) * (LATENT[2] // SD3_MEDIUM["patch_size"]) + TEXT_TOKENS
    return 4.0 * tokens**2 * SD3_MEDIUM["attention_head_dim"] * SD3_MEDIUM["num_attention_heads"]


def cost_table() -> str:
    search, held_out = _default_search_calls()
    (f1, s1), (f2, s2) = _call(1), _call(2)
    attention = LAYERS * _attention_flops()
    linear = f1 + (LAYERS - 1) * (f2 - f1)
    flops = linear + attention
    seconds = s1 + (LAYERS - 1) * (s2 - s1)
    calls = search + held_out
    rows = [["transformer calls: search (bellman, 64 noises x 40 steps x 2 CFG)", f"{search:,}", ""],
            ["transformer calls: held-out table (8 noises x (100 + 2 x 18) x 2)", f"{held_out:,}", ""],
            ["FLOPs per call, 1 block (measured)", f"{f1 / 1e12:.2f} T", "1.00"],
            [f"FLOPs per call, {LAYERS} blocks (extrapolated, without attention)", f"{linear / 1e12:.2f} T", f"{linear / f1:.2f}"],
            [f"attention FLOPs per call, {LAYERS} blocks (from the shapes)", f"{attention / 1e12:.2f} T", ""],
            [f"FLOPs per call, {LAYERS} blocks", f"{flops / 1e12:.2f} T", ""],
            ["CPU time per call, 1 block (measured)", fmt_seconds(s1), "1.00"],
            [f"CPU time per call, {LAYERS} blocks (extrapolated)", fmt_seconds(seconds), f"{seconds / s1:.2f}"],
            ["search + table on this CPU", f"{seconds * calls / 3600:.1f} h", ""]]
    for name, rate in ASSUMED_GPU_FLOPS.items():
        per_call = flops / rate
        rows.append([f"{name}: per call / search / search + table", f"{per_call * 1e3:.0f} ms / "
                     f"{per_call * search / 60:.1f} min / {per_call * calls / 60:.1f} min", ""])
    return markdown_table(["what", "value", "ratio to 1 block"], rows)


if __name__ == "__main__":
    print_report(__doc__, "SD3-medium 1024x1024: cost of the pipeline default search (issue 18)", cost_table)
