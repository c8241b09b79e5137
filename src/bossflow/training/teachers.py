"""Training teacher flows: conditional flow matching on the linear path, resumable, seeded.

Objective (Lipman et al. 2023, rectified flow of Liu et al. 2022): with data ``x_1``, noise
``x_0 ~ N(0, I)`` and ``t ~ U(0, 1)``, regress ``v(x_t, t)`` on ``x_1 - x_0`` at
``x_t = (1 - t) x_0 + t x_1`` (t = 0 noise, t = 1 data, as everywhere in bossflow).
AdamW, gradient-norm clipping and an exponential moving average (EMA) of the weights;
the EMA weights are what gets exported.

Every random draw (initial weights, batches, noises, times) comes from generators seeded
by ``seed``. Checkpoints hold the weights, EMA, optimizer moments, step, generator state
and loss history in one safetensors file written atomically; resuming gives bit-identical
final weights to an uninterrupted run (same machine, same thread count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models.model_dir import (
    CONFIG_NAME,
    WEIGHTS_DTYPES,
    build_model,
    round_weights,
    save_model_dir,
)
from ..core.errors import BossflowError, ModelSpecError
from ..core.noise import sample_seed
from .presets import TEACHER_PRESETS, TeacherPreset
from .loop import (
    check_resume_config,
    load_checkpoint,
    loss_curve,
    restore_checkpoint,
    run_steps,
    save_checkpoint,
    update_ema,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "bossflow.teacher-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
OBJECTIVE = "conditional flow matching, linear path x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), t ~ U(0, 1), target x_1 - x_0"

# Settings that must agree between a checkpoint and the run resuming it (``steps`` may grow).
_RESUME_KEYS = ("architecture", "kwargs", "batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed", "data_sha256")




def _data_sha256(data: Tensor) -> str:
    return hashlib.sha256(data.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def _check_data(data: Any) -> Tensor:
    if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] < 1 or not data.is_floating_point():
        raise BossflowError("training data must be a floating-point tensor of shape (N, *shape) with N >= 1.")
    if not bool(torch.isfinite(data).all()):
        raise BossflowError("training data holds NaN or infinite values; clean it first.")
    return data.detach().to("cpu", torch.float32)


def _positive(name: str, value: Any, kind: type = int) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool) and value > 0
    if not ok:
        raise BossflowError(f"{name} must be a positive {'number' if kind is float else 'integer'}, got {value!r}.")


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Tensor,
    generator: torch.Generator,
    batch_size: int,
    grad_clip: float,
) -> float:
    """One flow-matching step on a random batch; returns the loss (mean squared error per dimension)."""
    index = torch.randint(data.shape[0], (batch_size,), generator=generator)
    x1 = data[index]
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    t = torch.rand(batch_size, generator=generator, dtype=x1.dtype)
    tt = t.reshape(-1, *([1] * (x1.ndim - 1)))
    # Linear path and its velocity.
    xt = (1 - tt) * x0 + tt * x1
    target = x1 - x0
    loss = (model(xt, t) - target).pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


def train_teacher(
    data: Tensor,
    *,
    architecture: str,
    arch_kwargs: dict[str, Any],
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    ema_decay: float = 0.999,
    progress: bool = True,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    weights_dtype: str = "float32",
    data_info: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> nn.Module:
    """Train a velocity network on ``data`` by conditional flow matching on the linear path.

    Args:
        data: ``(N, *shape)`` training samples (float, finite); batches are drawn with replacement.
        architecture: key of :data:`bossflow.checkpoints.ARCHITECTURES` (``"VelocityMLP"``, ``"TinyUNet"``).
        arch_kwargs: constructor arguments of the network.
        steps: total optimizer steps (on resume, the target step; it may exceed the first run's).
        batch_size: samples per step.
        lr: AdamW learning rate (constant).
        seed: seeds every random draw: initial weights, batches, noises, times.
        out_dir: where checkpoints and the exported model directory go; ``None`` keeps
            everything in memory (no checkpoints, no export).
        checkpoint_every: steps between checkpoints (``0``: none; the final one is always
            written when ``out_dir`` is given and this is positive).
        resume: continue from ``out_dir``'s checkpoint (a fresh start when there is none).
        ema_decay: EMA decay of the exported weights, warmed up as ``min(decay, (1 + n) / (10 + n))``.
        progress: show a tqdm bar with the running loss.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: maximum gradient norm.
        weights_dtype: storage dtype of the export, ``"float32"`` or ``"float16"``; the returned
            model is rounded the same way, so it equals what loading the export gives.
        data_info: JSON provenance of the data, stored in the exported config as ``data``.
        provenance: further JSON fields for the exported config's ``training`` entry (e.g. the command).

    Returns:
        The EMA network (float32, eval mode, with ``sample_shape``), as exported to ``out_dir``.

    Raises:
        BossflowError: bad settings, an existing checkpoint without ``resume``, or a checkpoint
            made with other settings.
    """

    data = _check_data(data)
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        _positive(name, value)
    for name, value in (("lr", lr), ("grad_clip", grad_clip)):
        _positive(name, value, float)
    if not (isinstance(seed, int) and seed >= 0):
        raise BossflowError(f"seed must be a non-negative integer, got {seed!r}.")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 0):
        raise BossflowError(f"checkpoint_every must be a non-negative integer, got {checkpoint_every!r}.")
    if not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
        raise BossflowError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise BossflowError(f"weight_decay must be non-negative, got {weight_decay!r}.")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise BossflowError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}.")
    if resume and out_dir is None:
        raise BossflowError("resume needs out_dir, the folder holding the checkpoint.")

    sample_shape = tuple(int(s) for s in data.shape[1:])
    config = {
        "architecture": architecture,
        "kwargs": dict(arch_kwargs),
        "batch_size": batch_size,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "grad_clip": float(grad_clip),
        "ema_decay": float(ema_decay),
        "seed": seed,
        "data_sha256": _data_sha256(data),
    }

    # Initial weights from their own seeded stream (the global generator is left alone).
    model = build_model(architecture, dict(arch_kwargs), seed=sample_seed(seed, 0))
    model.train()
    try:
        with torch.no_grad():
            out = model(data[:2], torch.full((min(2, data.shape[0]),), 0.5))
        if out.shape != data[:2].shape:
            raise RuntimeError(f"output shape {tuple(out.shape)}")
    except RuntimeError as exc:
        raise ModelSpecError(
            f"{architecture}({arch_kwargs}) does not fit samples of shape {sample_shape} ({exc}); change its arguments."
        ) from None
    ema = {name: value.detach().clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(sample_seed(seed, 1))
    losses: list[float] = []
    start, elapsed_before = 0, 0.0

    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt_path is not None:
        if ckpt_path.exists():
            if not resume:
                raise BossflowError(
                    f"{out_dir} already holds a training checkpoint; pass --resume (resume=True) to continue it, "
                    "or choose another output folder."
                )
            metadata, tensors = load_checkpoint(ckpt_path, CHECKPOINT_FORMAT, ("train",))
            check_resume_config(ckpt_path, json.loads(metadata["config"]), config, _RESUME_KEYS)
            start = int(metadata["step"])
            if start > steps:
                raise BossflowError(f"the checkpoint in {out_dir} is at step {start}, past the requested {steps} steps.")
            restore_checkpoint(ckpt_path, tensors, module=model, state_names=None, ema=ema, optimizer=optimizer,
                               generators={"train": generator})
            losses = [float(v) for v in tensors["losses"].tolist()]
            elapsed_before = float(metadata.get("elapsed_seconds", "0"))
            logger.info("resuming %s from step %d", ckpt_path, start)
        elif (Path(out_dir) / CONFIG_NAME).exists():
            raise BossflowError(
                f"{out_dir} already holds a model and no checkpoint to resume; choose another output folder."
            )

    began = time.perf_counter()

    def checkpoint(step: int) -> None:
        if ckpt_path is not None and checkpoint_every > 0:
            save_checkpoint(ckpt_path, format_tag=CHECKPOINT_FORMAT, step=step, config=config, state=model.state_dict(),
                            ema=ema, optimizer=optimizer, generators={"train": generator}, losses=losses,
                            elapsed=elapsed_before + time.perf_counter() - began)

    def one_step(step: int) -> float:
        loss = _train_step(model, optimizer, data, generator, batch_size, grad_clip)
        update_ema(ema, model.state_dict(), ema_decay, step)
        return loss

    desc = f"teacher {data_info['name']}" if isinstance(data_info, dict) and "name" in data_info else "teacher"
    run_steps(losses, start, steps, one_step, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
              progress=progress, desc=desc)
    elapsed = elapsed_before + time.perf_counter() - began

    teacher = build_model(architecture, dict(arch_kwargs))
    teacher.load_state_dict(ema)
    round_weights(teacher, weights_dtype)
    teacher.eval()
    teacher.sample_shape = sample_shape
    if out_dir is not None:
        from .. import __version__

        tail = losses[-min(100, len(losses)):]
        training = {
            "objective": OBJECTIVE,
            "optimizer": "AdamW",
            "steps": steps,
            **{k: config[k] for k in ("batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed")},
            "exported": "EMA weights",
            "final_loss": sum(tail) / len(tail),
            "final_loss_window": len(tail),
            "loss_curve": loss_curve(losses),
            "wall_seconds": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "bossflow": __version__,
            "data_sha256": config["data_sha256"],
            **(provenance or {}),
        }
        save_model_dir(teacher, out_dir, architecture=architecture, kwargs=dict(arch_kwargs),
                       sample_shape=sample_shape, weights_dtype=weights_dtype, data=data_info, training=training)
    return teacher


__all__ = ["TEACHER_PRESETS", "TeacherPreset", "train_teacher"]
