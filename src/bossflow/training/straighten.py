"""Straightening (BOSS, Nguyen et al. ICLR 2024, Sec. 4): fine-tune a flow so few Euler steps land on its teacher.

Objective ``"boss"``: on teacher pairs ``(x_a, x_b)`` at consecutive times ``t_a < t_b`` of a
schedule (:mod:`bossflow.pairs`), regress

    v(x_a, s_a)  on  (x_b - x_a) / (t_b - t_a)

so one Euler step ``x_a + (t_b - t_a) v(x_a, s_a)`` lands where the teacher's fine solution
lands (``s_a = t_a`` unless the schedule carries evaluation times). With several schedules
(budgets) a batch draws a schedule uniformly, then one of its steps uniformly.

Objective ``"rollout"`` (ours, the error-propagation view of :mod:`bossflow.search` applied
to training): the student runs its own K Euler steps along one schedule from the noise and
the endpoint error against the teacher's fine solution, ``|| Euler_K(v, x_0) - x_1 ||^2``, is
back-propagated through all K model calls. BOSS trains every step on the teacher's states;
here each step is trained on the states the student itself reaches, so early errors are
corrected downstream. It costs K forward/backward passes per pair instead of one.

Objective ``"blend"``: the rollout, with the student's state after every step pulled to the
teacher's state at that time (the mean of the K distances), so intermediate states stay on
the teacher's path. With ``learn_times`` the rollout's step and evaluation times are trained
with the weights (:mod:`bossflow.training.learned_times`). Batches of every objective come
from :mod:`bossflow.training.batches`.

Objective ``"reflow"`` (Liu et al. 2022, the baseline): on the same teacher's couplings
``(x_0, x_1)`` (noise and fine solution), regress ``v(x_t, t)`` on ``x_1 - x_0`` at
``x_t = (1 - t) x_0 + t x_1``, ``t ~ U(0, 1)``, at the same number of gradient steps.

Full fine-tuning or LoRA (through ``peft``: adapters on every ``nn.Linear``/``nn.Conv2d`` by
default, picked by type; merged into a plain network on export), AdamW, gradient-norm
clipping, EMA of the trained weights (exported), seeded draws, and atomic checkpoints
(weights, EMA, optimizer moments, step, generator state) every ``checkpoint_every`` steps:
resuming gives the same final weights as an uninterrupted run (same machine and threads).
Time convention: ``t = 0`` noise, ``t = 1`` data.

Under ``torch.distributed`` (``torchrun``) the student is wrapped in DistributedDataParallel:
every rank draws the same global batch and trains on its contiguous share of the rows, so a
run on N processes takes the steps of one process (to float rounding), rank 0 alone writes
checkpoints, and a checkpoint (global state) resumes on any number of processes. Training runs
on the teacher's device.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..core.distributed import PRECISIONS, all_reduce_sum_float64, is_main, on_main, rank, shard_range, world_size
from ..core.errors import BossflowError
from ..core.noise import sample_seed
from ..core.schedules import Schedule
from .batches import STEP_SAMPLINGS, draw_batch, step_errors, transition_table, weight_steps_by_error
from .learned_times import LearnedTimes
from .loop import CHECKPOINT_NAME, LR_SCHEDULES, Run, check_resume, check_settings, learning_rate_at, loop_settings
from .pairs import PairData

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "bossflow.straighten-checkpoint/1"
OBJECTIVES = ("boss", "rollout", "blend", "reflow")
ROLLOUTS = ("rollout", "blend")
"""The objectives that run the student's own Euler steps along a schedule."""
TIMES_LR_FACTOR = 10.0
"""Learned times (``learn_times``) train at this multiple of the weights' learning rate: a handful of
parameters, each moving the whole schedule, that would otherwise barely move in a short run."""

_RESUME_KEYS = ("objective", "lora", "batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "seed",
                "distance", "teacher_sha256", "pairs", "precision", "lr_schedule", "learn_times", "step_sampling",
                "init_sha256")
_OLD_CHECKPOINT_DEFAULTS = {"precision": "fp32", "lr_schedule": "constant", "learn_times": False, "step_sampling": "uniform",
                            "init_sha256": None}
"""What checkpoints written before a setting existed were made with."""


def mse_distance(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-sample mean squared error: ``(B, *shape) -> (B,)``."""
    return (prediction - target).pow(2).flatten(1).mean(1)


def pseudo_huber_distance(prediction: Tensor, target: Tensor, c: float = 0.03) -> Tensor:
    """Per-sample pseudo-Huber distance ``sqrt(|d|^2 / D + c^2) - c`` (Song & Dhariwal 2023): ``(B,)``."""
    return ((prediction - target).pow(2).flatten(1).mean(1) + c * c).sqrt() - c


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mse_distance, "pseudo-huber": pseudo_huber_distance}
"""Built-in training distances ``(prediction, target) -> (B,)``; a callable of that form may be passed instead."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters for straightening (applied through ``peft``).

    Attributes:
        rank: adapter rank r.
        alpha: scaling numerator (the update is ``alpha / r * B A``); ``None`` means ``alpha = rank``.
        targets: module names to adapt; ``None`` means every ``nn.Linear`` and ``nn.Conv2d``.
    """

    rank: int = 8
    alpha: float | None = None
    targets: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha if self.alpha is not None else float(self.rank),
                "targets": list(self.targets) if self.targets is not None else None}


def lora_targets(model: nn.Module) -> list[str]:
    """Names of the modules LoRA adapts by default: every ``nn.Linear`` and ``nn.Conv2d`` (by type, not name)."""
    return [name for name, module in model.named_modules() if name and isinstance(module, (nn.Linear, nn.Conv2d))]


def add_lora(model: nn.Module, settings: LoraSettings, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with LoRA adapters (``peft``); only the adapters are trainable.

    The adapters' ``B`` matrices start at zero, so the result computes exactly what ``model``
    does until it is trained; ``A`` is initialised from ``seed`` (the global generator is untouched).

    Raises:
        BossflowError: ``peft`` is missing, or the settings name no adaptable module.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise BossflowError("LoRA (--lora-rank) needs the peft package, an extra of bossflow: install it with "
                            "`pip install peft` or `pip install bossflow[lora]`.") from None
    if not isinstance(settings.rank, int) or settings.rank < 1:
        raise BossflowError(f"the LoRA rank must be a positive integer, got {settings.rank!r}.")
    available = lora_targets(model)
    targets = list(settings.targets) if settings.targets is not None else available
    unknown = [t for t in targets if t not in available]
    if unknown or not targets:
        raise BossflowError(
            f"LoRA targets {unknown or targets} are not nn.Linear/nn.Conv2d modules of this model; "
            f"choose among {', '.join(available)}."
        )
    config = LoraConfig(r=settings.rank, lora_alpha=settings.to_json()["alpha"], target_modules=targets,
                        lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(copy.deepcopy(model), config)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain network of a LoRA model with the adapters merged into its weights (a copy)."""
    return copy.deepcopy(model).merge_and_unload()


class _Objective(nn.Module):
    """The per-sample training distances of one batch in one forward call (what DistributedDataParallel wraps).

    Without ``steps``: ``distance(student(x, t, **cond), target)``. With ``steps = [(dt, s), ...]``
    (or ``times``, learned ones): the student's own Euler rollout ``x <- x + dt * student(x, s, **cond)``
    from ``x``, then ``distance(x, target)``; with ``every_step`` the mean over the K steps of
    ``distance(x_k, target[:, k])``, the student's state after step k against the teacher's.
    ``cond`` is the batch's per-sample conditioning (prompt embeddings).
    """

    def __init__(self, student: nn.Module, distance: Callable[[Tensor, Tensor], Tensor], *,
                 times: LearnedTimes | None = None, every_step: bool = False) -> None:
        super().__init__()
        self.student = student
        self.distance = distance
        self.times = times
        self.every_step = every_step

    def forward(self, x: Tensor, t: Tensor | None, target: Tensor, steps: list[tuple[float, float]] | None = None,
                cond: dict[str, Tensor] | None = None) -> Tensor:
        cond = cond or {}
        if not steps:
            return self.distance(self.student(x, t, **cond), target)
        sizes, evals = self.times.steps() if self.times is not None else zip(*steps)
        distances = []
        for k, (dt, s) in enumerate(zip(sizes, evals)):
            s = s.to(x).expand(x.shape[0]) if torch.is_tensor(s) else torch.full((x.shape[0],), s, dtype=x.dtype,
                                                                                  device=x.device)
            x = x + dt * self.student(x, s, **cond)
            if self.every_step:
                distances.append(self.distance(x, target[:, k]))
        return torch.stack(distances).mean(0) if self.every_step else self.distance(x, target)


def _trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def straighten(
    teacher: nn.Module | None,
    pairs: PairData,
    *,
    objective: str = "boss",
    steps: int = 2000,
    batch_size: int = 128,
    lr: float | None = None,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    ema_decay: float = 0.999,
    lora: LoraSettings | None = None,
    distance: str | Callable[[Tensor, Tensor], Tensor] = "mse",
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 250,
    resume: bool = False,
    micro_batch: int | None = None,
    precision: str = "fp32",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    student: nn.Module | None = None,
    lr_schedule: str = "constant",
    learn_times: bool = False,
    step_sampling: str = "uniform",
    init: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune a copy of ``teacher`` on ``pairs``: BOSS straightening or the reflow baseline.

    Args:
        teacher: the pretrained velocity network ``teacher(x, t)`` (not modified); ``None`` when
            ``student`` is given (the pairs' ``model_sha256`` then names the teacher).
        pairs: teacher states from :func:`bossflow.pairs.teacher_pairs`.
        objective: ``"boss"`` (steps of the schedules), ``"rollout"`` (the student's own K-step
            endpoint error), ``"blend"`` (the rollout's state after every step against the
            teacher's) or ``"reflow"`` (straight couplings).
        steps: total optimizer steps (on resume, the target step).
        batch_size: pairs per step (the global batch: processes under ``torch.distributed`` share it).
        lr: AdamW learning rate; ``None``: 1e-4 for full fine-tuning, 1e-3 for LoRA.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: maximum gradient norm.
        ema_decay: EMA decay of the exported weights (warm-up ``min(decay, (1 + n) / (10 + n))``).
        lora: LoRA settings, or ``None`` for full fine-tuning.
        distance: a key of :data:`DISTANCES` or ``fn(prediction, target) -> (B,)``.
        seed: seeds the LoRA initialisation and every batch draw.
        out_dir: folder of ``checkpoint.safetensors`` (``None``: no checkpoints).
        checkpoint_every: steps between checkpoints (``0``: none; a final one is always written when positive).
        resume: continue from ``out_dir``'s checkpoint (a fresh start when there is none).
        micro_batch: rows per forward/backward pass on each process, gradients accumulated over
            the batch (bounds activation memory for large images; the step is the same up to
            rounding); ``None``: the whole share at once.
        precision: ``"fp32"``, or ``"bf16"``: the student's forward and backward passes under
            ``torch.autocast`` in bfloat16 (for GPUs; weights, optimizer and EMA stay float32).
        progress: show a tqdm bar with the running loss.
        on_step: called as ``on_step(step, loss)`` after every step (step counts from 1).
        student: a prepared student, trained in place instead of a copy of ``teacher``: its
            parameters that require gradients are trained (a diffusers transformer with LoRA
            adapters inside the pipeline's velocity, say); ``lora`` then only describes them.
            It is returned with the EMA weights, adapters kept (not merged).
        lr_schedule: ``"constant"``, or ``"cosine"``: decay from ``lr`` to 0 over ``steps``.
        learn_times: ``"rollout"`` along one schedule only: train its step and evaluation times
            with the weights (:class:`~bossflow.training.learned_times.LearnedTimes`, at
            :data:`TIMES_LR_FACTOR` times ``lr``); the record's ``learned_schedule`` holds them
            (EMA), and :func:`learned_schedule` turns it into the schedule to sample with.
        step_sampling: ``"boss"`` only: ``"uniform"`` steps, or ``"error"``: each schedule's steps
            drawn in proportion to the teacher's own Euler error on them (its hard steps).
        init: start from a copy of this network (same architecture as ``teacher``) instead of the
            teacher, e.g. the student of a larger budget when straightening a smaller one; the
            pairs still come from, and are checked against, ``teacher``.

    Returns:
        ``(student, record)``: the plain float32 network with the EMA weights (LoRA merged), in
        eval mode, and a JSON record of the run (settings, loss curve, time). With ``student``
        given, that module itself with its EMA weights.

    Raises:
        BossflowError: bad settings, a checkpoint without ``resume``, or a checkpoint made with other settings.
    """
    lr, distance_name, distance_fn = _check_settings(
        teacher if student is None else student, pairs, objective=objective, steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip,
        ema_decay=ema_decay, lora=lora, distance=distance, seed=seed, checkpoint_every=checkpoint_every,
        resume=resume, out_dir=out_dir, micro_batch=micro_batch, precision=precision)
    recipe = {"lr_schedule": lr_schedule, "learn_times": learn_times, "step_sampling": step_sampling}
    _check_recipe(pairs, objective=objective, **recipe)
    _check_init(init, teacher, student)
    config = _resume_config(teacher, pairs, objective=objective, lora=lora, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed,
                            distance=distance_name, precision=precision) | recipe | {"init_sha256": _fingerprint(init)}
    prepared = student is not None
    student = _student(teacher if init is None else init, lora, seed) if not prepared else _prepared_student(student)
    times = LearnedTimes(_only_schedule(pairs)) if learn_times else None
    trained = student if times is None else nn.ModuleDict({"student": student, "times": times})
    run = Run.new(trained, _trainable_names(trained), lr=lr, weight_decay=weight_decay, seed=seed, config=config,
                  format_tag=CHECKPOINT_FORMAT, out_dir=out_dir,
                  lr_factors={"times.": TIMES_LR_FACTOR} if times is not None else None)
    # Rank 0 reads the checkpoint; it is global, so any number of ranks resumes it.
    found = on_main(lambda: run.read_checkpoint(resume, "straightening"))
    if found is not None:
        run.restore(found, steps, _RESUME_KEYS, defaults=_OLD_CHECKPOINT_DEFAULTS)
        logger.info("resuming %s from step %d", run.path, run.start)
    table = _steps_table(teacher if teacher is not None else student, pairs, objective, step_sampling)
    objective_fn = _Objective(student, distance_fn, times=times, every_step=objective == "blend")
    one_step = _step_function(run, pairs, objective_fn, table, objective=objective, batch_size=batch_size, steps=steps,
                              micro_batch=micro_batch, precision=precision, grad_clip=grad_clip, ema_decay=ema_decay,
                              lr_schedule=lr_schedule)
    label = f"{objective}{' LoRA' if lora is not None else ''}"
    elapsed = run.train(steps, one_step, checkpoint_every=checkpoint_every, progress=progress and is_main(),
                        desc=f"straighten ({label})", on_step=on_step, writes=is_main())
    return _export(teacher, run, student, merge=not prepared), _record(run, steps, elapsed, times)


def learned_schedule(record: dict[str, Any], **meta: Any) -> Schedule:
    """The schedule a ``learn_times`` run ended with (from its record), to sample its student along.

    Raises:
        BossflowError: the record is not one of a ``learn_times`` run.
    """
    found = record.get("learned_schedule")
    if not found:
        raise BossflowError("this straightening run did not learn its times (learn_times=False).")
    return Schedule(found["times"], eval_times=found["eval_times"], **meta)


def _check_recipe(pairs: PairData, *, objective: str, lr_schedule: str, learn_times: bool, step_sampling: str) -> None:
    """Check the settings of :func:`straighten` beyond the loop's: learning-rate schedule, learned times, step draws."""
    if lr_schedule not in LR_SCHEDULES:
        raise BossflowError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}.")
    if step_sampling not in STEP_SAMPLINGS:
        raise BossflowError(f"step_sampling must be one of {', '.join(STEP_SAMPLINGS)}, got {step_sampling!r}.")
    if step_sampling != "uniform" and objective != "boss":
        raise BossflowError(f"step_sampling {step_sampling!r} picks the steps of the boss objective, not of {objective}.")
    if learn_times:
        if objective != "rollout":
            raise BossflowError(f"learned times train through the student's rollout: use objective rollout, not {objective}.")
        _only_schedule(pairs)


def _grid_power(pairs: PairData) -> dict[str, float]:
    """The pairs' warped fine grid, recorded only when not uniform (so older checkpoints still resume)."""
    power = float(pairs.meta.get("grid_power", 1.0))
    return {} if power == 1.0 else {"grid_power": power}


def _check_init(init: nn.Module | None, teacher: nn.Module | None, student: nn.Module | None) -> None:
    """Refuse a starting network that is not a copy-able module of the teacher's shape, or given with ``student``."""
    if init is None:
        return
    if student is not None:
        raise BossflowError("give a prepared student or a network to start from (init), not both.")
    if not isinstance(init, nn.Module) or not isinstance(teacher, nn.Module):
        raise BossflowError("init starts a full copy of another network: give the teacher and init as torch modules.")
    shapes = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    if shapes != {k: tuple(v.shape) for k, v in init.state_dict().items()}:
        raise BossflowError("init must be the teacher's architecture (a student of the same teacher); its weights differ in "
                            "names or shapes.")


def _fingerprint(model: nn.Module | None) -> str | None:
    """The weights' sha256 (:func:`bossflow.core.cost.model_fingerprint`), ``None`` for no model."""
    from ..core.cost import model_fingerprint

    return None if model is None else model_fingerprint(model)


def _only_schedule(pairs: PairData) -> Schedule:
    """The one schedule of ``pairs`` (learned times follow one budget)."""
    if len(pairs.nfes) != 1:
        raise BossflowError(f"learned times follow one schedule; these pairs hold NFE {pairs.nfes}: straighten one budget "
                            "at a time (pairs.select([k]), or --nfe K).")
    steps = sorted(pairs.transitions, key=lambda tr: tr.a)
    times = [float(pairs.times[steps[0].a])] + [float(pairs.times[tr.b]) for tr in steps]
    return Schedule(times, eval_times=[tr.eval_time for tr in steps])


def _steps_table(teacher: nn.Module, pairs: PairData, objective: str, step_sampling: str) -> dict[str, Tensor] | None:
    """The schedules' steps to draw from (``None`` for reflow), weighted by the teacher's error when asked."""
    if objective == "reflow":
        return None
    table = transition_table(pairs)
    if step_sampling == "error":
        weight_steps_by_error(table, step_errors(teacher, pairs, table))
    return table


def _check_settings(
    teacher: Any,
    pairs: PairData,
    *,
    objective: str,
    steps: int,
    batch_size: int,
    lr: float | None,
    grad_clip: float,
    ema_decay: float,
    lora: LoraSettings | None,
    distance: str | Callable[[Tensor, Tensor], Tensor],
    seed: int,
    checkpoint_every: int,
    resume: bool,
    out_dir: str | os.PathLike | None,
    micro_batch: int | None,
    precision: str,
) -> tuple[float, str, Callable[[Tensor, Tensor], Tensor]]:
    """Check :func:`straighten`'s settings, the first bad one raising; ``(lr, distance name, distance)``."""
    if objective not in OBJECTIVES:
        raise BossflowError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
    if not isinstance(teacher, nn.Module):
        raise BossflowError("straightening fine-tunes a torch nn.Module; this teacher is a plain function.")
    check_settings("a positive integer", steps=steps, batch_size=batch_size)
    lr = lr if lr is not None else (1e-3 if lora is not None else 1e-4)
    # Not check_settings' "a positive number": that refuses bools, which straighten has always taken.
    for name, value in (("lr", lr), ("grad_clip", grad_clip)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise BossflowError(f"{name} must be a positive number, got {value!r}.")
    check_settings("in [0, 1)", ema_decay=ema_decay)
    check_settings("a non-negative integer", seed=seed, checkpoint_every=checkpoint_every)
    check_resume(resume, out_dir)
    if isinstance(distance, str):
        if distance not in DISTANCES:
            raise BossflowError(f"distance must be one of {', '.join(DISTANCES)} or a callable, got {distance!r}.")
        distance_name, distance_fn = distance, DISTANCES[distance]
    elif callable(distance):
        distance_name, distance_fn = getattr(distance, "__name__", "custom"), distance
    else:
        raise BossflowError(f"distance must be a name or a callable, got {distance!r}.")
    if objective != "reflow" and not pairs.transitions:
        raise BossflowError("the pair data holds no schedule steps to straighten along.")
    if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1):
        raise BossflowError(f"micro_batch must be a positive integer or None, got {micro_batch!r}.")
    if precision not in PRECISIONS:
        raise BossflowError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    world = world_size()
    if batch_size < world:
        raise BossflowError(f"batch_size {batch_size} is smaller than the {world} processes sharing it; "
                            "pass a batch size of at least the number of processes.")
    return lr, distance_name, distance_fn


def _resume_config(
    teacher: nn.Module | None,
    pairs: PairData,
    *,
    objective: str,
    lora: LoraSettings | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    grad_clip: float,
    ema_decay: float,
    seed: int,
    distance: str,
    precision: str,
) -> dict[str, Any]:
    """The settings a checkpoint records and a resumed run must share (:data:`_RESUME_KEYS`)."""
    return {
        "objective": objective,
        "lora": lora.to_json() if lora is not None else None,
        **loop_settings(batch_size, lr, weight_decay, grad_clip, ema_decay, seed),
        "distance": distance,
        "precision": precision,
        "teacher_sha256": _fingerprint(teacher) if teacher is not None else pairs.meta.get("model_sha256"),
        "pairs": {k: pairs.meta.get(k) for k in ("model_sha256", "times", "seed", "grid_steps", "substeps", "method",
                                                  "samples")} | {"nfes": pairs.nfes} | _grid_power(pairs),
    }


def _prepared_student(student: nn.Module) -> nn.Module:
    """A prepared student (``straighten(student=...)``) in train mode, refused when nothing in it is trainable."""
    if not any(p.requires_grad for p in student.parameters()):
        raise BossflowError("the prepared student has no parameter that requires gradients; nothing would be trained.")
    return student.train()


def _student(teacher: nn.Module, lora: LoraSettings | None, seed: int) -> nn.Module:
    """The network to train, in train mode: ``teacher`` with LoRA adapters, or a full copy with every weight trainable."""
    if lora is not None:
        student = add_lora(teacher, lora, seed=sample_seed(seed, 0))
    else:
        student = copy.deepcopy(teacher)
        for p in student.parameters():
            p.requires_grad_(True)
    student.train()
    return student


def _step_function(
    run: Run,
    pairs: PairData,
    objective_fn: _Objective,
    table: dict[str, Tensor] | None,
    *,
    objective: str,
    batch_size: int,
    steps: int,
    micro_batch: int | None,
    precision: str,
    grad_clip: float,
    ema_decay: float,
    lr_schedule: str,
) -> Callable[[int], float]:
    """``one_step(step) -> loss``: one optimizer step of ``run`` on a global batch (its mean distance).

    Every rank draws the same global batch from the same generator and computes its contiguous
    share of the rows; DistributedDataParallel averages the gradients of `share sum * world / B`,
    which is the gradient of the global batch mean: the same step as one process takes.
    """
    world, me = world_size(), rank()
    device = next(run.module.parameters()).device
    if world > 1:
        objective_fn = nn.parallel.DistributedDataParallel(objective_fn,
                                                           device_ids=[device] if device.type == "cuda" else None)
    rows = slice(*shard_range(batch_size, me, world)) if world > 1 else None
    trained = list(run.state().values())
    lr = run.config["lr"]

    def one_step(step: int) -> float:
        x, t, target, rollout, cond = draw_batch(objective, pairs, table, run.generator, batch_size, rows, device)
        run.set_learning_rate(learning_rate_at(lr_schedule, lr, step, steps))
        run.optimizer.zero_grad(set_to_none=True)
        # Loss = sum of this share's distances * scale: the global batch mean once DDP averages over ranks.
        total = _accumulate_gradients(objective_fn, x, t, target, rollout, cond, micro_batch=micro_batch,
                                      scale=world / batch_size, precision=precision, world=world)
        if world > 1:
            loss_value = float(all_reduce_sum_float64([total])[0]) / batch_size
        else:
            loss_value = total / batch_size
        nn.utils.clip_grad_norm_(trained, grad_clip)
        run.optimizer.step()
        run.update_ema(ema_decay, step)
        return loss_value

    return one_step


def _accumulate_gradients(
    objective_fn: nn.Module,
    x: Tensor,
    t: Tensor | None,
    target: Tensor,
    rollout: list[tuple[float, float]] | None,
    cond: dict[str, Tensor],
    *,
    micro_batch: int | None,
    scale: float,
    precision: str,
    world: int,
) -> float:
    """Back-propagate ``scale * sum of distances`` over micro-batches of ``micro_batch`` rows; returns the sum."""
    chunk = micro_batch or x.shape[0]
    total = 0.0
    for a in range(0, x.shape[0], chunk):
        part = slice(a, a + chunk)
        last = a + chunk >= x.shape[0]
        # Gradients are all-reduced once, on the last micro-batch.
        sync = objective_fn.no_sync() if world > 1 and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                distances = objective_fn(x[part], t[part] if t is not None else None, target[part], rollout,
                                         {k: v[part] for k, v in cond.items()})
            (distances.float().sum() * scale).backward()
        total += float(distances.detach().float().sum())
    return total


def _export(teacher: nn.Module | None, run: Run, student: nn.Module, *, merge: bool = True) -> nn.Module:
    """``student`` with ``run``'s EMA weights (LoRA merged unless ``merge`` is false), frozen, in eval mode.

    The EMA is copied into everything the run trained: learned times included.
    """
    with torch.no_grad():
        for name, value in run.state().items():
            value.copy_(run.ema[name])
    result = merge_lora(student) if merge and run.config["lora"] is not None else student
    for p in result.parameters():
        p.requires_grad_(False)
    result.eval()
    if teacher is not None and hasattr(teacher, "sample_shape"):
        result.sample_shape = teacher.sample_shape
    return result


def _record(run: Run, steps: int, elapsed: float, times: LearnedTimes | None = None) -> dict[str, Any]:
    """The JSON record of a straightening run: its settings, the loss curve, time and versions, and the
    ``learned_schedule`` (times of ``times``, after the EMA was copied in) of a ``learn_times`` run."""
    config, losses = run.config, run.losses
    tail = losses[-min(100, len(losses)):]
    learned = times.to_schedule() if times is not None else None
    return {
        **{k: v for k, v in config.items() if k != "pairs"},
        "objective_text": _OBJECTIVE_TEXT[config["objective"]],
        "optimizer": "AdamW",
        "steps": steps,
        "trainable_parameters": int(sum(value.numel() for value in run.state().values())),
        "exported": "EMA weights" + (" with LoRA merged" if config["lora"] is not None else ""),
        "pairs": config["pairs"],
        "final_loss": sum(tail) / len(tail) if tail else None,
        **run.summary(elapsed),
        "processes": world_size(),
        "torch": torch.__version__,
        **({"learned_schedule": {"times": learned.times.tolist(), "eval_times": learned.evaluation_times.tolist()}}
           if learned is not None else {}),
    }


_OBJECTIVE_TEXT = {
    "boss": "BOSS straightening: || v(x_a, s_a) - (x_b - x_a) / (t_b - t_a) ||^2 on teacher states at consecutive schedule times",
    "rollout": "rollout: || Euler_K(v, x_0) - x_1 ||^2, the student's own K-step Euler rollout along a schedule vs the "
               "teacher's fine solution (back-propagated through all K steps)",
    "blend": "blend: mean over k of || Euler_k(v, x_0) - x_{t_k} ||^2, the student's own state after each of its K Euler "
             "steps vs the teacher's state at that time (back-propagated through the rollout)",
    "reflow": "reflow: || v(x_t, t) - (x_1 - x_0) ||^2, x_t = (1 - t) x_0 + t x_1 on teacher couplings, t ~ U(0, 1)",
}


__all__ = [
    "CHECKPOINT_NAME",
    "DISTANCES",
    "LoraSettings",
    "OBJECTIVES",
    "add_lora",
    "learned_schedule",
    "lora_targets",
    "merge_lora",
    "mse_distance",
    "pseudo_huber_distance",
    "straighten",
]
