"""What every bossflow training loop shares: EMA weights, resumable checkpoints, loss curves.

A training checkpoint is one safetensors file written atomically. Tensors:

* ``model.<name>``: the trained state (parameters and buffers being trained);
* ``ema.<name>``: their exponential moving average;
* ``optim.<param index>.<key>``: the optimizer's per-parameter state (AdamW moments, step);
* ``rng.<name>``: generator states;
* ``losses``: float64 loss history, one value per step.

Metadata: ``format`` (a tag naming the kind of run), ``step``, ``elapsed_seconds`` and
``config`` (JSON of the settings that must agree when resuming). Teachers
(:mod:`bossflow.teachers`) and straightening (:mod:`bossflow.straighten`) both use it, through
:class:`Run` (optimizer, EMA, generator, checkpoints and loss history of one run),
:func:`check_settings` and :func:`check_resume` (the checks of the settings they share) and
:func:`loop_settings` (those settings as the ``config`` records them).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..core._io import write_atomic
from ..core.errors import BossflowError, FileFormatError
from ..core.noise import sample_seed

CHECKPOINT_NAME = "checkpoint.safetensors"
"""The checkpoint's file name in a run's output folder."""

LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules: constant, or cosine decay to 0 over the run (:func:`learning_rate_at`)."""

_RULES: dict[str, Callable[[Any], bool]] = {
    "a positive integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "a positive number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
    "a non-negative integer": lambda v: isinstance(v, int) and v >= 0,
    "in [0, 1)": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
    "non-negative": lambda v: isinstance(v, (int, float)) and v >= 0,
}


def check_settings(rule: str, **settings: Any) -> None:
    """Refuse the first of ``settings`` (in the order given) that breaks ``rule``.

    Args:
        rule: what every value must be, worded as the error says it: ``"a positive integer"``,
            ``"a positive number"``, ``"a non-negative integer"``, ``"in [0, 1)"`` or ``"non-negative"``.
        settings: the values by setting name.

    Raises:
        BossflowError: ``"<name> must be <rule>, got <value>."``
    """
    for name, value in settings.items():
        if not _RULES[rule](value):
            raise BossflowError(f"{name} must be {rule}, got {value!r}.")


def loop_settings(batch_size: int, lr: float, weight_decay: float, grad_clip: float, ema_decay: float,
                  seed: int) -> dict[str, Any]:
    """The settings of the loop itself, as a run's ``config`` records them (numbers as floats)."""
    return {
        "batch_size": batch_size,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "grad_clip": float(grad_clip),
        "ema_decay": float(ema_decay),
        "seed": seed,
    }


def check_resume(resume: bool, out_dir: str | os.PathLike | None) -> None:
    """Refuse ``resume`` without ``out_dir``, the folder that holds the checkpoint."""
    if resume and out_dir is None:
        raise BossflowError("resume needs out_dir, the folder holding the checkpoint.")


def learning_rate_at(schedule: str, lr: float, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (from 0) of a ``steps``-step run under ``schedule`` (:data:`LR_SCHEDULES`)."""
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, steps) / steps))


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


@dataclass
class Run:
    """One resumable training run: the trained state, its EMA, AdamW, the batch generator, the loss history.

    Create it with :meth:`new`, continue a checkpoint with :meth:`read_checkpoint` and
    :meth:`restore`, and train with :meth:`train`.

    Attributes:
        module: the network being trained.
        names: the parameters being trained, in order (``None``: the whole ``state_dict``, buffers included).
        ema: the exponential moving average of :meth:`state`.
        optimizer: AdamW over the trained parameters.
        generator: the ``"train"`` generator of every batch draw.
        config: the settings that must agree when resuming (stored in the checkpoint).
        format_tag: the checkpoint's ``format``.
        out_dir: the output folder as given (``None``: no checkpoints).
        path: the checkpoint file in ``out_dir``.
        losses: one loss per step taken, resumed ones included.
        start: the step the run starts (or resumed) at.
        elapsed_before: seconds spent before this resumption.
        began: when this process began its steps (``time.perf_counter``).
    """

    module: nn.Module
    names: list[str] | None
    ema: dict[str, Tensor]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: dict[str, Any]
    format_tag: str
    out_dir: str | os.PathLike | None
    path: Path | None
    losses: list[float] = field(default_factory=list)
    start: int = 0
    elapsed_before: float = 0.0
    began: float = 0.0

    @classmethod
    def new(
        cls,
        module: nn.Module,
        names: list[str] | None,
        *,
        lr: float,
        weight_decay: float,
        seed: int,
        config: dict[str, Any],
        format_tag: str,
        out_dir: str | os.PathLike | None,
        lr_factors: Mapping[str, float] | None = None,
    ) -> Run:
        """A fresh run at step 0: EMA equal to the weights, AdamW, the generator seeded from ``seed``.

        Args:
            lr_factors: learning-rate multiples by parameter-name prefix (a parameter group each);
                the rest train at ``lr``.
        """
        if names is None:
            ema = {name: value.detach().clone() for name, value in module.state_dict().items()}
            named = list(module.named_parameters())
        else:
            params = dict(module.named_parameters())
            ema = {name: params[name].detach().clone() for name in names}
            named = [(n, params[n]) for n in names]
        return cls(
            module=module,
            names=names,
            ema=ema,
            optimizer=torch.optim.AdamW(_parameter_groups(named, lr, lr_factors or {}), lr=lr, weight_decay=weight_decay),
            generator=torch.Generator().manual_seed(sample_seed(seed, 1)),
            config=config,
            format_tag=format_tag,
            out_dir=out_dir,
            path=Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None,
        )

    def state(self) -> dict[str, Tensor]:
        """The trained tensors by name: what the checkpoint's ``model.`` entries and the EMA follow."""
        if self.names is None:
            return self.module.state_dict()
        params = dict(self.module.named_parameters())
        return {name: params[name] for name in self.names}

    def read_checkpoint(self, resume: bool, kind: str) -> tuple[dict[str, str], dict[str, Tensor]] | None:
        """The checkpoint to continue, ``(metadata, tensors)``, or ``None`` when :attr:`path` holds none.

        Args:
            resume: whether continuing an existing checkpoint is wanted.
            kind: what the error calls the checkpoint (``"training"``, ``"straightening"``).

        Raises:
            BossflowError: a checkpoint exists and ``resume`` is false.
            FileFormatError: the checkpoint is unreadable, damaged or of another kind.
        """
        if self.path is None or not self.path.exists():
            return None
        if not resume:
            raise BossflowError(
                f"{self.out_dir} already holds a {kind} checkpoint; pass --resume (resume=True) to continue it, "
                "or choose another output folder."
            )
        return load_checkpoint(self.path, self.format_tag, ("train",))

    def restore(
        self,
        found: tuple[dict[str, str], dict[str, Tensor]],
        steps: int,
        keys: tuple[str, ...],
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """Continue the checkpoint ``found`` (from :meth:`read_checkpoint`) towards ``steps`` steps.

        Args:
            keys: the :attr:`config` entries that must agree with the checkpoint's.
            defaults: values of settings that older checkpoints do not record.

        Raises:
            BossflowError: the checkpoint was made with other settings, or is past ``steps``.
            FileFormatError: it does not fit this model or optimizer.
        """
        metadata, tensors = found
        saved = {**(defaults or {}), **json.loads(metadata["config"])}
        check_resume_config(self.path, saved, self.config, keys)
        self.start = int(metadata["step"])
        if self.start > steps:
            raise BossflowError(f"the checkpoint in {self.out_dir} is at step {self.start}, past the requested {steps} steps.")
        restore_checkpoint(self.path, tensors, module=self.module, state_names=None if self.names is None else set(self.names),
                           ema=self.ema, optimizer=self.optimizer, generators={"train": self.generator})
        self.losses = [float(v) for v in tensors["losses"].tolist()]
        self.elapsed_before = float(metadata.get("elapsed_seconds", "0"))

    def set_learning_rate(self, lr: float) -> None:
        """Set every parameter group's learning rate to ``lr`` times its ``lr_factor``."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]

    def update_ema(self, decay: float, step: int) -> None:
        """Fold the current weights into :attr:`ema` after optimizer step ``step`` (:func:`update_ema`)."""
        update_ema(self.ema, self.state(), decay, step)

    def elapsed(self) -> float:
        """Seconds of training so far, resumed runs included."""
        return self.elapsed_before + time.perf_counter() - self.began

    def save(self, step: int) -> None:
        """Write the checkpoint of step ``step`` to :attr:`path`."""
        save_checkpoint(self.path, format_tag=self.format_tag, step=step, config=self.config, state=self.state(),
                        ema=self.ema, optimizer=self.optimizer, generators={"train": self.generator},
                        losses=self.losses, elapsed=self.elapsed())

    def train(
        self,
        steps: int,
        one_step: Callable[[int], float],
        *,
        checkpoint_every: int,
        progress: bool,
        desc: str,
        on_step: Callable[[int, float], None] | None = None,
        writes: bool = True,
    ) -> float:
        """Take steps :attr:`start` to ``steps - 1`` with :func:`run_steps`, checkpointing; returns :meth:`elapsed`.

        Args:
            writes: whether this process writes the checkpoints (under ``torch.distributed``, rank 0 alone).
        """
        self.began = time.perf_counter()

        def checkpoint(step: int) -> None:
            if self.path is not None and checkpoint_every > 0 and writes:
                self.save(step)

        run_steps(self.losses, self.start, steps, one_step, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  progress=progress, desc=desc, on_step=on_step)
        return self.elapsed()

    def summary(self, elapsed: float) -> dict[str, Any]:
        """The record entries both kinds of run share: ``loss_curve``, ``wall_seconds`` and ``threads``."""
        return {"loss_curve": loss_curve(self.losses), "wall_seconds": round(elapsed, 1), "threads": torch.get_num_threads()}


def _parameter_groups(named: list[tuple[str, nn.Parameter]], lr: float,
                      lr_factors: Mapping[str, float]) -> list[dict[str, Any]]:
    """AdamW parameter groups: the parameters under each prefix of ``lr_factors``, then the rest (factor 1)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in named:
        factor = next((f for prefix, f in lr_factors.items() if name.startswith(prefix)), 1.0)
        groups.setdefault(factor, []).append(parameter)
    return [{"params": params, "lr": lr * factor, "lr_factor": factor} for factor, params in groups.items()]
