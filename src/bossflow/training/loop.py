"""What every bossflow training loop shares: EMA weights, resumable checkpoints, loss curves.

A training checkpoint is one safetensors file written atomically. Tensors:

* ``model.<name>``: the trained state (parameters and buffers being trained);
* ``ema.<name>``: their exponential moving average;
* ``optim.<param index>.<key>``: the optimizer's per-parameter state (AdamW moments, step);
* ``rng.<name>``: generator states;
* ``losses``: float64 loss history, one value per step.

Metadata: ``format`` (a tag naming the kind of run), ``step``, ``elapsed_seconds`` and
``config`` (JSON of the settings that must agree when resuming). Teachers
(:mod:`bossflow.teachers`) and straightening (:mod:`bossflow.straighten`) both use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..core._io import write_atomic
from ..core.errors import BossflowError, FileFormatError


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA decay used at update ``updates``: ``min(decay, (1 + n) / (10 + n))``, a warm-up for short runs."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def update_ema(ema: Mapping[str, Tensor], state: Mapping[str, Tensor], decay: float, updates: int) -> None:
    """``ema <- d ema + (1 - d) w`` in place for every entry of ``ema`` (non-float entries are copied)."""
    d = ema_decay_at(decay, updates)
    with torch.no_grad():
        for name, average in ema.items():
            value = state[name]
            if value.is_floating_point():
                average.mul_(d).add_(value, alpha=1.0 - d)
            else:
                average.copy_(value)


def loss_curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """``[[last step, mean loss], ...]`` over ``points`` equal windows of the history."""
    n = len(losses)
    if n == 0:
        return []
    bounds = sorted({round(n * k / points) for k in range(points + 1)})
    return [[int(b), sum(losses[a:b]) / (b - a)] for a, b in zip(bounds[:-1], bounds[1:])]


def save_checkpoint(
    path: Path,
    *,
    format_tag: str,
    step: int,
    config: dict[str, Any],
    state: Mapping[str, Tensor],
    ema: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator],
    losses: list[float],
    elapsed: float,
) -> None:
    """Write one training checkpoint atomically (layout in the module docstring)."""
    import safetensors.torch

    tensors: dict[str, Tensor] = {}
    for name, value in state.items():
        tensors[f"model.{name}"] = value.detach().clone().contiguous()
    for name, value in ema.items():
        tensors[f"ema.{name}"] = value.detach().clone().contiguous()
    for index, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone().contiguous()
    for name, generator in generators.items():
        tensors[f"rng.{name}"] = generator.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    metadata = {
        "format": format_tag,
        "step": str(step),
        "elapsed_seconds": repr(float(elapsed)),
        "config": json.dumps(config, sort_keys=True),
    }
    blob = safetensors.torch.save(tensors, metadata=metadata)
    write_atomic(path, lambda f: f.write(blob))


def load_checkpoint(path: Path, format_tag: str, generators: tuple[str, ...]) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Read and check a checkpoint written by :func:`save_checkpoint`: ``(metadata, tensors)``.

    Raises:
        FileFormatError: unreadable, damaged, or another kind of checkpoint.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except OSError as exc:
        raise FileFormatError(f"cannot read checkpoint {path}: {exc.strerror or exc}.") from None
    except Exception as exc:  # SafetensorError on damaged files
        raise FileFormatError(f"checkpoint {path} is damaged ({exc}); delete it to start again.") from None
    if metadata.get("format") != format_tag:
        raise FileFormatError(
            f"{path} is not a {format_tag.split('/')[0]} checkpoint (format {metadata.get('format')!r}, "
            f"expected {format_tag!r}); choose another output folder."
        )
    try:
        int(metadata["step"])
        if not isinstance(json.loads(metadata["config"]), dict):
            raise ValueError("config is not a JSON object")
        float(metadata.get("elapsed_seconds", "0"))
    except (KeyError, ValueError) as exc:
        raise FileFormatError(f"checkpoint {path} has damaged metadata ({exc}); delete it to start again.") from None
    needed = [f"rng.{name}" for name in generators] + ["losses"]
    if any(key not in tensors for key in needed):
        raise FileFormatError(f"checkpoint {path} lacks its generator state or loss history; delete it to start again.")
    return metadata, tensors


def check_resume_config(path: Path, saved: dict[str, Any], config: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to resume a checkpoint made with other settings (``keys`` must agree)."""
    differ = [k for k in keys if saved.get(k) != config.get(k)]
    if differ:
        raise BossflowError(
            f"the checkpoint {path} was made with other settings ({', '.join(differ)}); "
            "resume with the same settings, or choose another output folder."
        )


def restore_checkpoint(
    path: Path,
    tensors: Mapping[str, Tensor],
    *,
    module: nn.Module,
    state_names: set[str] | None,
    ema: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator],
) -> None:
    """Load a checkpoint's state into ``module``, ``ema``, ``optimizer`` and ``generators`` in place.

    Args:
        state_names: the ``module.state_dict()`` entries the checkpoint holds (``None``: all of them).

    Raises:
        FileFormatError: the checkpoint does not fit this module or optimizer.
    """

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        saved = part("model.")
        expected = set(module.state_dict()) if state_names is None else state_names
        if set(saved) != expected:
            raise RuntimeError("the saved weights are not this model's")
        module.load_state_dict(saved, strict=state_names is None)
        ema_state = part("ema.")
        if set(ema_state) != set(ema):
            raise RuntimeError("EMA weights do not match the model")
        for name, value in ema_state.items():
            ema[name].copy_(value)
        optim_state: dict[int, dict[str, Tensor]] = {}
        for key, value in part("optim.").items():
            index, _, name = key.partition(".")
            optim_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})
        for name, generator in generators.items():
            generator.set_state(tensors[f"rng.{name}"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise FileFormatError(f"checkpoint {path} does not fit this model ({exc}); delete it to start again.") from None


def run_steps(
    losses: list[float],
    start: int,
    steps: int,
    one_step: Callable[[int], float],
    *,
    checkpoint: Callable[[int], None],
    checkpoint_every: int,
    progress: bool,
    desc: str,
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """The optimisation loop: ``one_step(step)`` for ``step = start .. steps - 1``, its loss appended to ``losses``.

    Shows a tqdm bar with the mean loss of the last 50 steps, calls ``on_step(step + 1, loss)``
    after every step, and ``checkpoint(step + 1)`` every ``checkpoint_every`` steps (0: never)
    and once at the end when any step ran.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
    try:
        for step in range(start, steps):
            losses.append(one_step(step))
            bar.update(1)
            if (step + 1) % 10 == 0 or step + 1 == steps:
                window = losses[-50:]
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}", refresh=False)
            if on_step is not None:
                on_step(step + 1, losses[-1])
            if checkpoint_every > 0 and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                checkpoint(step + 1)
    finally:
        bar.close()
    if start < steps:
        checkpoint(steps)
