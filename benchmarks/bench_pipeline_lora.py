"""Memory of one LoRA straightening step of `bossflow straighten --model diffusers:DIR`: the tiny test SD3 pipeline and SD3-medium at 1024x1024.

What it measures
  The peak resident memory a training step adds, in a fresh process per configuration: RSS
  before the step (model built, adapters added, inputs drawn) and the process's high-water
  mark after one forward and backward pass of bossflow's student (the pipeline's velocity:
  both classifier-free guidance branches, bf16 autocast, LoRA rank 16 on the attention
  projections, float32 adapters), per training row.
  (a) The tiny random SD3 pipeline of the tests (32 px), through the real code path
      (`bossflow.training.pipeline_lora.straighten_pipeline`, one step of 16 rows).
  (b) SD3-medium's transformer (stabilityai/stable-diffusion-3-medium's config, random
      weights) at 1024x1024 (4,096 image + 333 text tokens), with and without gradient
      checkpointing, at 1 and 2 blocks, extrapolated linearly to its 24 blocks; plus the fixed
      memory of a GPU run: bf16 weights, float32 adapters with their gradients, AdamW moments
      and EMA (parameters counted at 1 and 2 blocks, extrapolated).
  The baseline in the same process group is (a)'s and (b)'s 1-block step without checkpointing.
  CPU RSS stands in for GPU memory: the same tensors are allocated either way (a GPU adds
  its allocator's caching and the CUDA context, about 0.5 GB); no GPU was lent to measure it.

Command
  python benchmarks/bench_pipeline_lora.py            # about 3 minutes on a 2-core CPU, 6 GB of memory

No target: it states the memory figures issue 19 asks for.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

import torch

from _common import markdown_table, print_report

SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, pos_embed_max_size=192)
LAYERS = 24
TEXT_TOKENS = 77 + 256
LATENT = (16, 128, 128)
RANK = 16
GB = 1024**3


def _rss() -> int:
    """Current resident memory of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """The process's resident high-water mark in bytes (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _step_peak(step) -> int:
    """Bytes the step ``step()`` adds above the memory held before it."""
    before = _rss()
    step()
    return max(0, _peak() - before)


def _medium_child(layers: int, checkpointing: bool) -> dict:
    """One SD3-medium-shaped training row with CFG (a batch of 2) under bf16 autocast: step bytes and parameter counts."""
    from diffusers import SD3Transformer2DModel

    from bossflow.adapters.diffusers import DiffusersVelocity
    from bossflow.adapters.lora import add_transformer_lora

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(num_layers=layers, **SD3_MEDIUM).to(torch.bfloat16)
    base = sum(p.numel() for p in transformer.parameters())
    add_transformer_lora(transformer, RANK)
    lora = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    negative = {"encoder_hidden_states": torch.randn(1, TEXT_TOKENS, 4096), "pooled_projections": torch.randn(1, 2048)}
    velocity = DiffusersVelocity(transformer, {}, negative_cond=negative, guidance_scale=4.0,
                                 per_sample=tuple(negative))
    x, t = torch.randn(1, *LATENT), torch.tensor([0.4])
    cond = {"encoder_hidden_states": torch.randn(1, TEXT_TOKENS, 4096), "pooled_projections": torch.randn(1, 2048)}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = velocity(x, t, **cond).float().pow(2).mean()
        loss.backward()

    return {"step_bytes": _step_peak(step), "base_params": base, "lora_params": lora}


def _tiny_child() -> dict:
    """One step of 16 rows of the real straightening code on the tests' tiny SD3 pipeline (fp32, CFG)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tiny_pipelines import make_sd3_pipeline

    import bossflow as bf
    from bossflow.adapters.pipelines import pipeline_model
    from bossflow.core.conditioning import IndexedCond
    from bossflow.training.pairs import teacher_pairs
    from bossflow.training.pipeline_lora import straighten_pipeline
    from bossflow.training.straighten import LoraSettings

    with tempfile.TemporaryDirectory() as folder:
        path = make_sd3_pipeline(os.path.join(folder, "sd3"))
        target = pipeline_model(str(path), ["a photo of a cat", "a red car"], samples=1, guidance_scale=4.0)
        cond = IndexedCond(target.prompt_embeds, torch.arange(16) % 2)
        pairs = teacher_pairs(target.model, [bf.Schedule([0.0, 0.5, 1.0])], target.sample_shape, samples=16,
                              grid_steps=4, cond=cond, storage_dtype=torch.float16, state_dtype=torch.float32,
                              progress=False)
        result = {}

        def step() -> None:
            straighten_pipeline(target.model, pairs, LoraSettings(rank=RANK), steps=1, batch_size=16, progress=False)

        result["step_bytes"] = _step_peak(step) / 16
        result["base_params"] = sum(p.numel() for n, p in target.model.transformer.named_parameters() if "lora" not in n)
        return result


def _run_child(*args: str) -> dict:
    """Run this file as a child with ``args`` and return the JSON it prints last."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gb(value: float) -> str:
    return f"{value / GB:.2f} GB" if value >= 0.01 * GB else f"{value / 1024**2:.1f} MB"


def memory_table() -> str:
    tiny = _run_child("tiny")
    runs = {(layers, ckpt): _run_child("medium", str(layers), str(int(ckpt))) for ckpt in (False, True) for layers in (1, 2)}

    def extrapolated(key: str, ckpt: bool) -> float:
        one, two = runs[(1, ckpt)][key], runs[(2, ckpt)][key]
        return one + (LAYERS - 1) * (two - one)

    base, lora = extrapolated("base_params", False), extrapolated("lora_params", False)
    fixed = 2 * base + 4 * 4 * lora  # bf16 weights; float32 adapters, their gradients, two AdamW moments, EMA
    plain, ckpt = extrapolated("step_bytes", False), extrapolated("step_bytes", True)
    baseline = runs[(1, False)]["step_bytes"]
    rows = [
        ["tiny SD3 (tests), fp32, CFG: step memory per training row (measured)", _gb(tiny["step_bytes"]), ""],
        ["SD3-medium 1024px, 1 block, CFG, bf16 autocast: step memory per row (measured; baseline)", _gb(baseline), "1.00"],
        ["SD3-medium, 2 blocks, same (measured)", _gb(runs[(2, False)]["step_bytes"]),
         f"{runs[(2, False)]['step_bytes'] / baseline:.2f}"],
        [f"SD3-medium, {LAYERS} blocks: step memory per row (extrapolated)", _gb(plain), f"{plain / baseline:.2f}"],
        [f"SD3-medium, {LAYERS} blocks, gradient checkpointing: per row (extrapolated)", _gb(ckpt), f"{ckpt / baseline:.2f}"],
        [f"SD3-medium parameters (extrapolated): base / LoRA rank {RANK}", f"{base / 1e9:.2f} B / {lora / 1e6:.1f} M", ""],
        ["fixed: bf16 weights + adapters, gradients, AdamW moments, EMA (float32)", _gb(fixed), ""],
        ["GPU estimate, --micro-batch 1 (fixed + 1 row)", _gb(fixed + plain), ""],
        ["GPU estimate, --micro-batch 1 --gradient-checkpointing", _gb(fixed + ckpt), ""],
        ["GPU estimate, --micro-batch 4 --gradient-checkpointing", _gb(fixed + 4 * ckpt), ""],
    ]
    return markdown_table(["what", "value", "ratio to the 1-block step"], rows)


def _child(argv: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if argv[0] == "tiny":
        result = _tiny_child()
    else:
        result = _medium_child(int(argv[1]), bool(int(argv[2])))
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
    else:
        print_report(__doc__, "memory of a LoRA straightening step (issue 19)", memory_table)
