"""Training batches of straightening, drawn from teacher pairs with a seeded generator.

Each objective of :func:`bossflow.training.straighten.straighten` draws its batch here:

* ``"boss"``: one step of one schedule: ``(x_a, s_a, (x_b - x_a) / (t_b - t_a))``. A batch
  draws a schedule uniformly, then one of its steps, uniformly or (``step_sampling="error"``)
  in proportion to the teacher's own Euler error on that step (the schedule's hard steps);
* ``"rollout"``: the noise and the teacher's fine solution ``(x_0, x_1)`` and the Euler steps
  ``[(t_b - t_a, s_a), ...]`` of one schedule;
* ``"blend"``: as ``"rollout"``, plus the teacher's states at the end of every step
  ``(B, K, *shape)``, which the student's own states are matched to;
* ``"reflow"``: ``(x_t, t, x_1 - x_0)`` on the teacher's couplings, ``t ~ U(0, 1)``.

Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .pairs import PairData

STEP_SAMPLINGS = ("uniform", "error")
"""How a ``"boss"`` batch picks a schedule's step: uniformly, or by the teacher's Euler error on it."""

ERROR_PROBE_SAMPLES = 512
"""Pairs on which the teacher's per-step Euler error is measured for ``step_sampling="error"``."""


def as_float(states: Tensor) -> Tensor:
    """States in float32 when they are stored in float16 (targets are differences: half precision would round them)."""
    return states.float() if states.dtype == torch.float16 else states


def transition_table(pairs: PairData) -> dict[str, Tensor]:
    """The schedules' steps as tensors, grouped by schedule (ascending NFE).

    Returns:
        ``counts`` (G,) steps per schedule, ``offsets`` (G,) its first row, ``a``/``b`` (S,) state
        indices of each step, ``eval`` (S,) its evaluation time, ``times`` (T,) the state times.
    """
    nfes = pairs.nfes
    counts = torch.tensor([sum(tr.nfe == k for tr in pairs.transitions) for k in nfes])
    ordered = sorted(pairs.transitions, key=lambda tr: tr.nfe)
    return {
        "counts": counts,
        "offsets": torch.cumsum(counts, 0) - counts,
        "a": torch.tensor([tr.a for tr in ordered]),
        "b": torch.tensor([tr.b for tr in ordered]),
        "eval": torch.tensor([tr.eval_time for tr in ordered], dtype=torch.float64),
        "times": torch.tensor(np.asarray(pairs.times, dtype=np.float64)),
    }


def step_errors(teacher: Callable[..., Tensor], pairs: PairData, table: dict[str, Tensor],
                samples: int = ERROR_PROBE_SAMPLES) -> Tensor:
    """``(S,)`` mean squared error of the teacher's own Euler step on each schedule step (first ``samples`` pairs).

    This is the step's share of the schedule's cost: what straightening has to remove there.
    """
    rows = torch.arange(min(samples, pairs.n_samples))
    cond = pairs.cond_rows(rows)
    device = next(teacher.parameters()).device
    errors = []
    with torch.no_grad():
        for a, b, s in zip(table["a"].tolist(), table["b"].tolist(), table["eval"].tolist()):
            x_a, x_b = as_float(pairs.states[rows, a]).to(device), as_float(pairs.states[rows, b]).to(device)
            dt = float(table["times"][b] - table["times"][a])
            t = torch.full((rows.numel(),), s, dtype=x_a.dtype, device=device)
            step = x_a + dt * teacher(x_a, t, **{k: v.to(device) for k, v in cond.items()})
            errors.append(float((step - x_b).pow(2).mean()))
    return torch.tensor(errors, dtype=torch.float64)


def weight_steps_by_error(table: dict[str, Tensor], errors: Tensor) -> None:
    """Add ``table["cumulative"]``: per schedule, the running share of its steps' errors (for :func:`boss_batch`)."""
    cumulative = torch.empty_like(errors)
    for first, count in zip(table["offsets"].tolist(), table["counts"].tolist()):
        part = errors[first:first + count].clamp_min(1e-12)
        cumulative[first:first + count] = torch.cumsum(part, 0) / part.sum()
    table["cumulative"] = cumulative


def boss_batch(pairs: PairData, table: dict[str, Tensor], generator: torch.Generator,
               batch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_a, s_a, target, sample)``: a schedule uniformly, one of its steps, a noise uniformly."""
    group = torch.randint(table["counts"].numel(), (batch_size,), generator=generator)
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    within = _step_within(table, group, u)
    step = table["offsets"][group] + torch.minimum(within, table["counts"][group] - 1)
    sample = torch.randint(pairs.n_samples, (batch_size,), generator=generator)
    a, b = table["a"][step], table["b"][step]
    x_a, x_b = as_float(pairs.states[sample, a]), as_float(pairs.states[sample, b])
    dt = (table["times"][b] - table["times"][a]).reshape(-1, *([1] * (x_a.ndim - 1)))
    target = (x_b - x_a) / dt.to(x_a.dtype)
    return x_a, table["eval"][step].to(x_a.dtype), target, sample


def _step_within(table: dict[str, Tensor], group: Tensor, u: Tensor) -> Tensor:
    """The step index within each drawn schedule for uniforms ``u``: uniform, or by the steps' error shares."""
    if "cumulative" not in table:
        return (u * table["counts"][group]).long()
    within = torch.zeros_like(group)
    for step in range(int(table["counts"].max())):
        row = table["offsets"][group] + step
        valid = step < table["counts"][group]
        below = table["cumulative"][row.clamp_max(table["cumulative"].numel() - 1)] <= u
        within += (valid & below).long()
    return within


def reflow_batch(pairs: PairData, generator: torch.Generator, batch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_t, t, x_1 - x_0, sample)`` on the teacher's couplings, ``t ~ U(0, 1)``."""
    sample = torch.randint(pairs.n_samples, (batch_size,), generator=generator)
    x0, x1 = as_float(pairs.states[sample, 0]), as_float(pairs.states[sample, -1])
    t = torch.rand(batch_size, generator=generator, dtype=x0.dtype)
    tt = t.reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - tt) * x0 + tt * x1, t, x1 - x0, sample


def rollout_batch(pairs: PairData, table: dict[str, Tensor], generator: torch.Generator, batch_size: int,
                  *, every_step: bool = False) -> tuple[Tensor, Tensor, list[tuple[float, float]], Tensor]:
    """``(x_0, target, steps, sample)`` for a rollout along one schedule (drawn uniformly).

    ``steps = [(t_b - t_a, s_a), ...]``; ``target`` is the teacher's fine solution ``(B, *shape)``,
    or with ``every_step`` its states at the end of every step ``(B, K, *shape)``.
    """
    group = int(torch.randint(table["counts"].numel(), (1,), generator=generator))
    sample = torch.randint(pairs.n_samples, (batch_size,), generator=generator)
    first = int(table["offsets"][group])
    rows = range(first, first + int(table["counts"][group]))
    steps = []
    for step in rows:
        a, b = int(table["a"][step]), int(table["b"][step])
        steps.append((float(table["times"][b] - table["times"][a]), float(table["eval"][step])))
    x0 = as_float(pairs.states[sample, int(table["a"][first])])
    if every_step:
        target = torch.stack([as_float(pairs.states[sample, int(table["b"][step])]) for step in rows], 1)
    else:
        target = as_float(pairs.states[sample, -1])
    return x0, target, steps, sample


def draw_batch(
    objective: str,
    pairs: PairData,
    table: dict[str, Tensor] | None,
    generator: torch.Generator,
    batch_size: int,
    rows: slice | None,
    device: torch.device,
) -> tuple[Tensor, Tensor | None, Tensor, list[tuple[float, float]] | None, dict[str, Tensor]]:
    """One global batch of ``objective``, this process's ``rows`` of it (``None``: all) on ``device``.

    Returns:
        ``(x, t, target, rollout, cond)``: ``t`` is ``None`` for ``"rollout"`` and ``"blend"``,
        whose Euler steps ``rollout`` are; ``cond`` the rows' per-sample conditioning (``{}``
        when unconditional).
    """
    t, rollout = None, None
    if objective in ("rollout", "blend"):
        x, target, rollout, sample = rollout_batch(pairs, table, generator, batch_size, every_step=objective == "blend")
    elif objective == "boss":
        x, t, target, sample = boss_batch(pairs, table, generator, batch_size)
    else:
        x, t, target, sample = reflow_batch(pairs, generator, batch_size)
    if rows is not None:
        x, target, sample = x[rows], target[rows], sample[rows]
        t = t[rows] if t is not None else None
    x, target = x.to(device), target.to(device)
    t = t.to(device) if t is not None else None
    cond = {k: v.to(device) for k, v in pairs.cond_rows(sample).items()}
    return x, t, target, rollout, cond


__all__ = [
    "ERROR_PROBE_SAMPLES",
    "STEP_SAMPLINGS",
    "as_float",
    "boss_batch",
    "draw_batch",
    "reflow_batch",
    "rollout_batch",
    "step_errors",
    "transition_table",
    "weight_steps_by_error",
]
