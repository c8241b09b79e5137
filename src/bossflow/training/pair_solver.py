"""Which fine solution the teacher pairs are made with: measured on the teacher, not assumed.

A straightened student can only be as good as the fine solution it is trained to land on, and
that solution is most of the cost of straightening a small model. Two presets:

* ``"euler"``: 100 uniform Euler steps (BOSS's reference), 100 teacher calls per noise;
* ``"heun"``: 20 Heun steps on the grid ``1 - (1 - i/20)^1.5``, denser towards the data where
  the velocity changes fastest: 40 calls per noise. On the shipped digits teacher it is more
  accurate than 100 Euler steps (RMSE 0.004 against 0.007, against a 400-call Heun solution),
  but on a stiff flow (the shipped 2-D teacher, whose eight modes are sharp) it is worse
  (0.023 against 0.014).

:func:`choose_pair_solver` therefore measures both on a few noises against a fine Heun
solution and takes the cheaper one unless it is less accurate. Time convention: ``t = 0``
noise, ``t = 1`` data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..core._io import read_json
from ..core.conditioning import IndexedCond
from ..core.errors import BossflowError
from ..core.noise import gaussian_noise
from .pairs import META_NAME, _model_device, _model_dtype, reference_grid, teacher_states


@dataclass(frozen=True)
class PairSolver:
    """A fine solution of the teacher: ``method`` on ``grid_steps`` intervals of ``1 - (1 - u)^grid_power``."""

    method: str
    grid_steps: int
    grid_power: float = 1.0

    def calls(self, times: np.ndarray) -> int:
        """Teacher calls per noise along the grid merged with the state ``times``."""
        intervals = reference_grid(times, self.grid_steps, self.grid_power).size - 1
        return intervals * (2 if self.method == "heun" else 1)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "grid_steps": self.grid_steps, "grid_power": self.grid_power}


PAIR_SOLVERS = {"euler": PairSolver("euler", 100), "heun": PairSolver("heun", 20, 1.5)}
"""The presets :func:`choose_pair_solver` picks from (``--pair-solver``)."""
CHECK_SOLVER = PairSolver("heun", 200, 1.5)
"""The fine solution the presets are measured against (400 calls per noise)."""
CHECK_SAMPLES = 64
"""Noises of the check: ``64 x (400 + 100 + 40)`` calls, 1% of the Euler pairs of 32,768 trajectories."""


def solver_errors(
    model: Callable[..., Tensor],
    noise: Tensor,
    times: np.ndarray,
    solvers: dict[str, PairSolver],
    *,
    cond: dict | IndexedCond | None = None,
) -> dict[str, float]:
    """RMSE of each solver's states at ``times`` against :data:`CHECK_SOLVER`'s, from ``noise`` ``(n, *shape)``."""
    def states(solver: PairSolver) -> Tensor:
        return teacher_states(model, noise, times, grid_steps=solver.grid_steps, grid_power=solver.grid_power,
                              method=solver.method, batch_size=int(noise.shape[0]), cond=cond)

    fine = states(CHECK_SOLVER)
    return {name: float((states(solver) - fine).pow(2).mean().sqrt()) for name, solver in solvers.items()}


def choose_pair_solver(
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    times: np.ndarray,
    *,
    samples: int = CHECK_SAMPLES,
    seed: int = 0,
    cond: dict | IndexedCond | None = None,
    state_dtype: torch.dtype | None = None,
) -> tuple[str, dict[str, float]]:
    """The cheapest preset of :data:`PAIR_SOLVERS` at least as accurate as 100 Euler steps on this teacher.

    Args:
        model: teacher velocity model.
        shape: shape of one sample.
        times: ``(T,)`` state times of the pairs (0 first, 1 last).
        samples: noises of the check (``gaussian_noise`` of ``seed + 1``, not the pairs' own).
        seed: the pairs' noise seed.
        cond: conditioning of the ``samples`` noises.
        state_dtype: dtype of the noises (default: the model's), as in :func:`~bossflow.training.pairs.teacher_pairs`.

    Returns:
        ``(name, errors)``: the chosen preset and every preset's RMSE against :data:`CHECK_SOLVER`.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise BossflowError(f"samples must be a positive integer, got {samples!r}.")
    noise = gaussian_noise(samples, shape, seed=seed + 1, dtype=state_dtype or _model_dtype(model),
                           device=_model_device(model))
    with torch.no_grad():
        errors = solver_errors(model, noise, times, PAIR_SOLVERS, cond=cond)
    reference = errors["euler"]
    affordable = sorted(PAIR_SOLVERS, key=lambda name: PAIR_SOLVERS[name].calls(times))
    chosen = next(name for name in affordable if errors[name] <= reference)
    return chosen, errors


def cached_pair_solver(folder: str | os.PathLike | None) -> str | None:
    """The preset a pairs folder was made with (its ``meta.json``), so a rerun reuses it without a new check."""
    meta_path = Path(folder) / META_NAME if folder is not None else None
    if meta_path is None or not meta_path.exists():
        return None
    saved = read_json(meta_path, "pair cache meta")
    if not isinstance(saved, dict):
        return None
    used = (saved.get("method"), saved.get("grid_steps"), float(saved.get("grid_power", 1.0)), saved.get("substeps"))
    return next((name for name, s in PAIR_SOLVERS.items() if used == (s.method, s.grid_steps, s.grid_power, 1)), None)
