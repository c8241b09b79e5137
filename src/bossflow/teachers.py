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

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .checkpoints import (
    CONFIG_NAME,
    WEIGHTS_DTYPES,
    WEIGHTS_NAME,
    build_model,
    file_size_text,
    round_weights,
    save_model_dir,
)
from ._io import write_atomic
from .errors import BossflowError, FileFormatError, ModelSpecError
from .noise import sample_seed

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "bossflow.teacher-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
OBJECTIVE = "conditional flow matching, linear path x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), t ~ U(0, 1), target x_1 - x_0"

# Settings that must agree between a checkpoint and the run resuming it (``steps`` may grow).
_RESUME_KEYS = ("architecture", "kwargs", "batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed", "data_sha256")


def _digits_data() -> tuple[Tensor, dict[str, Any]]:
    from .data.digits import load_digits

    images = load_digits()
    return images, {"name": "digits", "source": "sklearn.datasets.load_digits", "n": int(images.shape[0]),
                    "shape": list(images.shape[1:]), "pixels": "0..16 mapped linearly to [-1, 1]"}


_GMM_2D_DATA_SIZE = 100_000
_GMM_2D_DATA_SEED = 0


def _gmm_2d_data() -> tuple[Tensor, dict[str, Any]]:
    from .data.toy import eight_gaussians

    points = eight_gaussians(_GMM_2D_DATA_SIZE, generator=torch.Generator().manual_seed(_GMM_2D_DATA_SEED))
    return points, {"name": "gmm-2d", "source": "bossflow.models.gmm_2d().sample (bossflow.data.eight_gaussians)",
                    "n": _GMM_2D_DATA_SIZE, "seed": _GMM_2D_DATA_SEED, "shape": [2]}


@dataclass(frozen=True)
class TeacherPreset:
    """Default settings of one built-in teacher (``bossflow teacher NAME``).

    Attributes:
        architecture: key of :data:`bossflow.checkpoints.ARCHITECTURES`.
        arch_kwargs: constructor arguments of the network.
        steps: optimizer steps.
        batch_size: samples per step.
        lr: AdamW learning rate (constant).
        ema_decay: EMA decay of the exported weights.
        checkpoint_every: steps between checkpoints.
        weights_dtype: storage dtype of the exported ``model.safetensors``.
        load_data: returns ``(data (N, *shape), data provenance)``.
        description: one line for ``--help``.
    """

    architecture: str
    arch_kwargs: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    ema_decay: float
    checkpoint_every: int
    weights_dtype: str
    load_data: Callable[[], tuple[Tensor, dict[str, Any]]] = field(repr=False)
    description: str = ""


TEACHER_PRESETS: dict[str, TeacherPreset] = {
    "digits": TeacherPreset(
        architecture="TinyUNet",
        arch_kwargs={"channels": 1, "width": 32, "time_dim": 64},
        steps=4000,
        batch_size=128,
        lr=2e-3,
        ema_decay=0.999,
        checkpoint_every=500,
        weights_dtype="float16",
        load_data=_digits_data,
        description="scikit-learn 8x8 digits (1,797 images); TinyUNet, 188k parameters, float16 weights (~380 KB)",
    ),
    "gmm-2d": TeacherPreset(
        architecture="VelocityMLP",
        arch_kwargs={"dim": 2, "hidden": 128, "depth": 3, "time_dim": 32},
        steps=3000,
        batch_size=512,
        lr=2e-3,
        ema_decay=0.999,
        checkpoint_every=500,
        weights_dtype="float32",
        load_data=_gmm_2d_data,
        description="the 8 Gaussians of the gmm-2d preset (100,000 points); VelocityMLP, 38k parameters",
    ),
}
"""Built-in teachers: defaults train on a CPU in a few minutes."""


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


def _update_ema(ema: dict[str, Tensor], model: nn.Module, decay: float, updates: int) -> None:
    """``ema <- d ema + (1 - d) w`` with ``d = min(decay, (1 + n) / (10 + n))`` (warm-up for short runs)."""
    d = min(decay, (1.0 + updates) / (10.0 + updates))
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                ema[name].mul_(d).add_(value, alpha=1.0 - d)
            else:
                ema[name].copy_(value)


def _save_checkpoint(
    path: Path,
    *,
    step: int,
    config: dict[str, Any],
    model: nn.Module,
    ema: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    losses: list[float],
    elapsed: float,
) -> None:
    import safetensors.torch

    tensors: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().clone().contiguous()
    for name, value in ema.items():
        tensors[f"ema.{name}"] = value.clone().contiguous()
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone().contiguous()
    tensors["rng.train"] = generator.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "step": str(step),
        "elapsed_seconds": repr(float(elapsed)),
        "config": json.dumps(config, sort_keys=True),
    }
    blob = safetensors.torch.save(tensors, metadata=metadata)
    write_atomic(path, lambda f: f.write(blob))


def _load_checkpoint(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except OSError as exc:
        raise FileFormatError(f"cannot read checkpoint {path}: {exc.strerror or exc}.") from None
    except Exception as exc:  # SafetensorError on damaged files
        raise FileFormatError(f"checkpoint {path} is damaged ({exc}); delete it to start again.") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(
            f"{path} is not a bossflow teacher checkpoint (format {metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r})."
        )
    try:
        int(metadata["step"])
        if not isinstance(json.loads(metadata["config"]), dict):
            raise ValueError("config is not a JSON object")
        float(metadata.get("elapsed_seconds", "0"))
    except (KeyError, ValueError) as exc:
        raise FileFormatError(f"checkpoint {path} has damaged metadata ({exc}); delete it to start again.") from None
    if "rng.train" not in tensors or "losses" not in tensors:
        raise FileFormatError(f"checkpoint {path} lacks its generator state or loss history; delete it to start again.")
    return metadata, tensors


def _restore(
    path: Path,
    tensors: dict[str, Tensor],
    model: nn.Module,
    ema: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."))
        ema_state = part("ema.")
        if set(ema_state) != set(ema):
            raise RuntimeError("EMA weights do not match the model")
        for name, value in ema_state.items():
            ema[name].copy_(value)
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in part("optim.").items():
            index, _, name = key.partition(".")
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
        generator.set_state(tensors["rng.train"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise FileFormatError(f"checkpoint {path} does not fit this model ({exc}); delete it to start again.") from None


def _loss_curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """``[[last step, mean loss], ...]`` over ``points`` equal windows of the history."""
    n = len(losses)
    if n == 0:
        return []
    bounds = sorted({round(n * k / points) for k in range(points + 1)})
    return [[int(b), sum(losses[a:b]) / (b - a)] for a, b in zip(bounds[:-1], bounds[1:])]


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
    from tqdm.auto import tqdm

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
            metadata, tensors = _load_checkpoint(ckpt_path)
            saved = json.loads(metadata["config"])
            differ = [k for k in _RESUME_KEYS if saved.get(k) != config[k]]
            if differ:
                raise BossflowError(
                    f"the checkpoint in {out_dir} was made with other settings ({', '.join(differ)}); "
                    "resume with the same settings, or choose another output folder."
                )
            start = int(metadata["step"])
            if start > steps:
                raise BossflowError(f"the checkpoint in {out_dir} is at step {start}, past the requested {steps} steps.")
            _restore(ckpt_path, tensors, model, ema, optimizer, generator)
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
            _save_checkpoint(ckpt_path, step=step, config=config, model=model, ema=ema, optimizer=optimizer,
                             generator=generator, losses=losses, elapsed=elapsed_before + time.perf_counter() - began)

    desc = f"teacher {data_info['name']}" if isinstance(data_info, dict) and "name" in data_info else "teacher"
    bar = tqdm(total=steps, initial=start, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
    try:
        for step in range(start, steps):
            losses.append(_train_step(model, optimizer, data, generator, batch_size, grad_clip))
            _update_ema(ema, model, ema_decay, step)
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                window = losses[-50:]
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", refresh=False)
            if checkpoint_every > 0 and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                checkpoint(step + 1)
    finally:
        bar.close()
    if start < steps:
        checkpoint(steps)
    elapsed = elapsed_before + time.perf_counter() - began

    teacher = build_model(architecture, dict(arch_kwargs))
    teacher.load_state_dict(ema)
    round_weights(teacher, weights_dtype)
    teacher.eval()
    teacher.sample_shape = sample_shape
    if out_dir is not None:
        from . import __version__

        tail = losses[-min(100, len(losses)):]
        training = {
            "objective": OBJECTIVE,
            "optimizer": "AdamW",
            "steps": steps,
            **{k: config[k] for k in ("batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed")},
            "exported": "EMA weights",
            "final_loss": sum(tail) / len(tail),
            "final_loss_window": len(tail),
            "loss_curve": _loss_curve(losses),
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


TEACHER_EXAMPLES = """\
examples:
  bossflow teacher digits --out runs/digits-teacher            # a few minutes on a CPU
  bossflow teacher digits --out runs/digits-teacher --resume   # continue after an interruption
  bossflow teacher gmm-2d --out runs/gmm-teacher --steps 1000 --seed 1
  bossflow schedule --model runs/digits-teacher --nfe 2,4,6 --out runs/digits-sched.json

The output folder is a model directory (config.json + model.safetensors, the EMA weights)
that every --model option accepts; checkpoint.safetensors beside them makes the run
resumable. Training is seeded: the same command on the same machine and thread count
gives the same weights, with or without interruptions.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_teacher_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``teacher`` subcommand to an ``argparse`` subparsers object and return its parser."""
    from .cli import _non_negative_int, _positive_int

    presets = "\n".join(f"  {name:<8} {p.description}" for name, p in TEACHER_PRESETS.items())

    def defaults(attr: str) -> str:
        return ", ".join(f"{name} {getattr(p, attr)}" for name, p in TEACHER_PRESETS.items())

    p = subparsers.add_parser(
        "teacher",
        help="train a flow-matching teacher on built-in data (digits, gmm-2d)",
        description="Train a velocity network by conditional flow matching on the linear path\n"
        "(t = 0 noise, t = 1 data) with AdamW, gradient clipping, EMA weights and checkpoints.\n\n"
        f"presets:\n{presets}",
        epilog=TEACHER_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("preset", choices=list(TEACHER_PRESETS), help="what to train")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory (also holds the checkpoint)")
    p.add_argument("--steps", type=_positive_int, metavar="N", help=f"optimizer steps (default: {defaults('steps')})")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of every random draw (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, metavar="B", help=f"samples per step (default: {defaults('batch_size')})")
    p.add_argument("--lr", type=_positive_float, help=f"AdamW learning rate (default: {defaults('lr')})")
    p.add_argument("--checkpoint-every", type=_non_negative_int, metavar="N",
                   help=f"steps between checkpoints, 0 for none (default: {defaults('checkpoint_every')})")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _command_line(args: argparse.Namespace) -> str:
    words = ["bossflow", "teacher", args.preset, "--out", str(args.out)]
    for flag, value in (("--steps", args.steps), ("--seed", args.seed), ("--batch-size", args.batch_size),
                        ("--lr", args.lr), ("--checkpoint-every", args.checkpoint_every), ("--threads", args.threads)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def cmd_teacher(args: argparse.Namespace) -> int:
    """Run ``bossflow teacher``: train a preset and write the model directory ``--out``."""
    preset = TEACHER_PRESETS[args.preset]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data, data_info = preset.load_data()
    steps = args.steps if args.steps is not None else preset.steps
    try:
        train_teacher(
            data,
            architecture=preset.architecture,
            arch_kwargs=preset.arch_kwargs,
            steps=steps,
            batch_size=args.batch_size if args.batch_size is not None else preset.batch_size,
            lr=args.lr if args.lr is not None else preset.lr,
            seed=args.seed,
            out_dir=args.out,
            checkpoint_every=args.checkpoint_every if args.checkpoint_every is not None else preset.checkpoint_every,
            resume=args.resume,
            ema_decay=preset.ema_decay,
            progress=not args.quiet,
            weights_dtype=preset.weights_dtype,
            data_info=data_info,
            provenance={"preset": args.preset, "command": _command_line(args)},
        )
    except KeyboardInterrupt:
        print(f"bossflow: interrupted; the last checkpoint in {args.out} is kept: rerun with --resume to continue.",
              file=sys.stderr)
        return 130
    out = Path(args.out)
    with open(out / CONFIG_NAME, encoding="utf-8") as f:
        training = json.load(f)["training"]
    size = file_size_text((out / WEIGHTS_NAME).stat().st_size)
    print(f"trained {args.preset} teacher for {steps} steps in {training['wall_seconds']:.0f} s, "
          f"final loss {training['final_loss']:.4f}")
    print(f"wrote {out / CONFIG_NAME} and {out / WEIGHTS_NAME} ({size}, {preset.weights_dtype})")
    return 0


__all__ = ["TEACHER_PRESETS", "TeacherPreset", "add_teacher_parser", "cmd_teacher", "train_teacher"]
