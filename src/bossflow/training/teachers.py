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
import logging
import os
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
from .loop import CHECKPOINT_NAME, Run, check_resume, check_settings, loop_settings
from .presets import TEACHER_PRESETS, TeacherPreset

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "bossflow.teacher-checkpoint/1"
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
    data = _check_settings(data, steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip, seed=seed,
                           checkpoint_every=checkpoint_every, ema_decay=ema_decay, weight_decay=weight_decay,
                           weights_dtype=weights_dtype, resume=resume, out_dir=out_dir)
    sample_shape = tuple(int(s) for s in data.shape[1:])
    config = {"architecture": architecture, "kwargs": dict(arch_kwargs),
              **loop_settings(batch_size, lr, weight_decay, grad_clip, ema_decay, seed), "data_sha256": _data_sha256(data)}
    model = _initial_model(architecture, arch_kwargs, data, sample_shape, seed)
    run = Run.new(model, None, lr=lr, weight_decay=weight_decay, seed=seed, config=config,
                  format_tag=CHECKPOINT_FORMAT, out_dir=out_dir)
    _resume_or_start(run, resume, steps)

    def one_step(step: int) -> float:
        loss = _train_step(run.module, run.optimizer, data, run.generator, batch_size, grad_clip)
        run.update_ema(ema_decay, step)
        return loss

    desc = f"teacher {data_info['name']}" if isinstance(data_info, dict) and "name" in data_info else "teacher"
    elapsed = run.train(steps, one_step, checkpoint_every=checkpoint_every, progress=progress, desc=desc)
    teacher = _export(run, architecture, arch_kwargs, weights_dtype, sample_shape)
    if out_dir is not None:
        save_model_dir(teacher, out_dir, architecture=architecture, kwargs=dict(arch_kwargs), sample_shape=sample_shape,
                       weights_dtype=weights_dtype, data=data_info, training=_record(run, steps, elapsed, provenance))
    return teacher


def _check_settings(
    data: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    grad_clip: float,
    seed: int,
    checkpoint_every: int,
    ema_decay: float,
    weight_decay: float,
    weights_dtype: str,
    resume: bool,
    out_dir: str | os.PathLike | None,
) -> Tensor:
    """Check :func:`train_teacher`'s settings, the first bad one raising; returns the data as float32 on the CPU."""
    data = _check_data(data)
    check_settings("a positive integer", steps=steps, batch_size=batch_size)
    check_settings("a positive number", lr=lr, grad_clip=grad_clip)
    check_settings("a non-negative integer", seed=seed, checkpoint_every=checkpoint_every)
    check_settings("in [0, 1)", ema_decay=ema_decay)
    check_settings("non-negative", weight_decay=weight_decay)
    if weights_dtype not in WEIGHTS_DTYPES:
        raise BossflowError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}.")
    check_resume(resume, out_dir)
    return data


def _initial_model(architecture: str, arch_kwargs: dict[str, Any], data: Tensor, sample_shape: tuple[int, ...],
                   seed: int) -> nn.Module:
    """The untrained network in train mode, checked to map samples of ``data`` (``sample_shape``) to that shape.

    Raises:
        ModelSpecError: the network does not fit the samples.
    """
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
    return model


def _resume_or_start(run: Run, resume: bool, steps: int) -> None:
    """Continue ``run``'s checkpoint when there is one, else start afresh in a folder holding no model.

    Raises:
        BossflowError: a checkpoint without ``resume``, one made with other settings or past ``steps``,
            or a model in the folder and no checkpoint.
    """
    found = run.read_checkpoint(resume, "training")
    if found is not None:
        run.restore(found, steps, _RESUME_KEYS)
        logger.info("resuming %s from step %d", run.path, run.start)
    elif run.out_dir is not None and (Path(run.out_dir) / CONFIG_NAME).exists():
        raise BossflowError(
            f"{run.out_dir} already holds a model and no checkpoint to resume; choose another output folder."
        )


def _export(run: Run, architecture: str, arch_kwargs: dict[str, Any], weights_dtype: str,
            sample_shape: tuple[int, ...]) -> nn.Module:
    """A fresh network with ``run``'s EMA weights rounded to ``weights_dtype``, in eval mode: what the export holds."""
    teacher = build_model(architecture, dict(arch_kwargs))
    teacher.load_state_dict(run.ema)
    round_weights(teacher, weights_dtype)
    teacher.eval()
    teacher.sample_shape = sample_shape
    return teacher


def _record(run: Run, steps: int, elapsed: float, provenance: dict[str, Any] | None) -> dict[str, Any]:
    """The exported config's ``training`` entry: objective, settings, loss curve, time and versions."""
    from .._version import __version__

    config, losses = run.config, run.losses
    tail = losses[-min(100, len(losses)):]
    return {
        "objective": OBJECTIVE,
        "optimizer": "AdamW",
        "steps": steps,
        **{k: config[k] for k in ("batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed")},
        "exported": "EMA weights",
        "final_loss": sum(tail) / len(tail),
        "final_loss_window": len(tail),
        **run.summary(elapsed),
        "torch": torch.__version__,
        "bossflow": __version__,
        "data_sha256": config["data_sha256"],
        **(provenance or {}),
    }


__all__ = ["CHECKPOINT_NAME", "TEACHER_PRESETS", "TeacherPreset", "train_teacher"]
