"""GITS-style schedule search: a DP over one-step errors measured in per-sample norms.

After GITS (Chen, Zhou, Wang, Shen, Lyu, "On the Trajectory Regularity of ODE-based
Diffusion Sampling", ICML 2024, arXiv 2405.11326; code zju-pi/diff-sampler, ``gits-main``).
GITS runs a teacher solver on a fine time grid from a few hundred noises, scores every
one-step jump between two grid times against the teacher, and picks the K-step schedule
by dynamic programming. In bossflow's convention (``t = 0`` noise, ``t = 1`` data,
``dx/dt = v(x, t)``) with teacher states ``x_i`` and velocities ``v_i = v(x_i, g_i)`` on the
base grid ``g_0 = 0 < ... < g_N = 1``, the one-step estimate of ``x_j`` from ``x_i`` is
``e_ij = x_i + (g_j - g_i) v_i`` and the cost is, per ``metric``:

* ``"l2"`` (default): ``C[i, j] = mean_b ||e_ij - x_j||_2 / sqrt(D)``, the per-sample L2
  norm (not its square) averaged over samples, GITS's ``l2`` metric;
* ``"l1"``: ``C[i, j] = mean_b ||e_ij - x_j||_1 / D``;
* ``"dev"`` (the released code's default): ``C[i, j] = mean_b dev(e_ij) - mean_b dev(x_j)``,
  where ``dev(y)`` is the distance of ``y`` from the straight line through the sample's
  teacher start ``x_0`` and end ``x_N`` (the trajectory-regularity measure of the paper),
  with ``dev(x_N) = 0``. These costs can be negative.

The divisions by ``sqrt(D)`` and ``D`` only make numbers comparable across data sizes; they
do not change any schedule. The DP is GITS's, with its discount ``coeff``: the K-step path
``0 = i_0 < ... < i_K = N`` minimises ``sum_k coeff^(k - 1) C[i_{k-1}, i_k]`` (the k-th step
from the noise end weighs ``coeff^(k-1)``; the paper's plain DP is ``coeff = 1``, the
released code uses 1.15 with ``dev``). One forward pass ``D_k[j] = min_i D_{k-1}[i] +
coeff^(k-1) C[i, j]`` gives every budget, as in :func:`bossflow.bellman_paths`.

How it differs from BOSS (:mod:`bossflow.bellman`): BOSS sums *squared* errors per
dimension from an Euler teacher on the grid itself (so ``C[j, j+1] = 0``); GITS sums
per-sample *norms* (a sample with a large error counts linearly, not quadratically), uses a
higher-order teacher, and optionally discounts steps. With ``metric="l2"``, ``coeff=1`` and
the same teacher the two differ only in the norm.

What is simplified:

* Grid and teacher: GITS runs iPNDM (a 4th-order multistep solver) on a coarse grid of 61
  polynomial (rho = 7) timestamps and picks the schedule among them; here the grid is the
  caller's (e.g. 100 uniform steps) and the teacher is bossflow's fine trajectory on it,
  Heun by default (``reference``, ``substeps``), so the schedule is a subset of that grid.
* Samples: GITS uses 256 warm-up noises; here every given noise (``batch_size`` at a time).
* Ties go to the smallest predecessor index (GITS's backtracking takes the smallest next
  index); results agree whenever the optimum is unique.
* Left out: AFS (an extra "free" first step GITS can insert) and the paper's spatial
  warm start (using the regular trajectory shape to start sampling from a better point);
  the student solver is Euler (GITS also targets iPNDM, DPM-Solver++ and others).

Cost: the teacher, ``N B`` model rows (``2 N B`` with the Heun teacher), nothing else.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..core.bellman import check_budget, check_budgets, least_cost_paths, square_matrix
from ..core.cost import cost_matrix, finish_cost_matrix
from ..core.errors import BossflowError, CostMatrixError
from ..core.noise import validate_noise
from ..core.schedules import Schedule, validate_times
from ..core.solvers import check_teacher_options, trajectory_batches

METRICS = ("l2", "l1", "dev")


def l2_norm_cost(estimate: Tensor, target: Tensor) -> Tensor:
    """Per-sample L2 norm of the error divided by ``sqrt(D)``: ``(rows,)`` float64."""
    diff = (estimate.to(torch.float64) - target.to(torch.float64)).flatten(1)
    return diff.norm(dim=1) / math.sqrt(diff.shape[1])


def l1_norm_cost(estimate: Tensor, target: Tensor) -> Tensor:
    """Per-sample L1 norm of the error divided by ``D``: ``(rows,)`` float64."""
    diff = (estimate.to(torch.float64) - target.to(torch.float64)).flatten(1)
    return diff.abs().sum(dim=1) / diff.shape[1]


PAIR_COSTS = {"l2": l2_norm_cost, "l1": l1_norm_cost}


def _check_coeff(coeff: Any) -> float:
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float, np.integer, np.floating)) or not (
        math.isfinite(coeff) and coeff > 0
    ):
        raise BossflowError(f"the GITS discount coeff must be a positive finite number, got {coeff!r}.")
    return float(coeff)


def _check_options(metric: Any, reference: Any, substeps: Any, batch_size: Any) -> None:
    if metric not in METRICS:
        raise BossflowError(f"the GITS metric must be one of {', '.join(METRICS)}, got {metric!r}.")
    check_teacher_options(reference, substeps, batch_size)


def _deviation(points: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Distance of each point from the line through ``start`` and ``end`` of its sample.

    Args:
        points: ``(M, B, D)`` float64.
        start: ``(B, D)`` float64.
        end: ``(B, D)`` float64.

    Returns:
        ``(M, B)`` float64 distances.
    """
    chord = end - start
    unit = chord / chord.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    rel = end[None] - points  # (M, B, D)
    along = (rel * unit[None]).sum(dim=2, keepdim=True)
    return (rel - along * unit[None]).norm(dim=2)


def _deviation_sums(xs: Tensor, vs: Tensor, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed student and teacher deviations of one trajectory batch.

    Returns:
        ``(student (N + 1, N + 1), teacher (N + 1,))``: ``student[i, j] = sum_b dev(e_ij)`` for
        ``i < j`` (zero elsewhere) and ``teacher[j] = sum_b dev(x_j)`` with ``teacher[N] = 0``.
    """
    n = grid.size - 1
    batch = xs.shape[1]
    x = xs.reshape(n + 1, batch, -1).to(torch.float64)
    v = vs.reshape(n, batch, -1).to(torch.float64)
    g = torch.tensor(grid, dtype=torch.float64, device=x.device)
    student = np.zeros((n + 1, n + 1), dtype=np.float64)
    teacher = np.zeros(n + 1, dtype=np.float64)
    teacher[1:n] = _deviation(x[1:n], x[0], x[n]).sum(dim=1).cpu().numpy()
    for j in range(1, n + 1):
        # One Euler jump from every earlier teacher state to g_j, all predecessors at once.
        est = x[:j] + (g[j] - g[:j])[:, None, None] * v[:j]
        student[:j, j] = _deviation(est, x[0], x[n]).sum(dim=1).cpu().numpy()
    return student, teacher


def gits_cost_matrix(
    model: Callable[..., Tensor],
    noise: Tensor,
    grid: Any,
    *,
    metric: Literal["l2", "l1", "dev"] = "l2",
    cond: dict | None = None,
    reference: Literal["euler", "heun"] = "heun",
    substeps: int = 1,
    batch_size: int = 64,
) -> np.ndarray:
    """GITS cost matrix on ``grid``: one-step errors against the teacher, in per-sample norms.

    See the module docstring for the metrics. ``"l2"`` and ``"l1"`` go through
    :func:`bossflow.cost_matrix` with a per-sample norm as its ``pair_cost``; ``"dev"`` has
    its own loop over targets, vectorised over predecessors and samples.

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape ``(B,)``.
        noise: ``(B, *shape)`` noises at ``t = 0``.
        grid: ``(N + 1,)`` base grid, 0 to 1.
        metric: ``"l2"``, ``"l1"`` or ``"dev"``.
        cond: conditioning; tensors whose first dimension is B follow their samples.
        reference: teacher sub-steps, ``"heun"`` (default) or ``"euler"``.
        substeps: teacher sub-steps per grid interval.
        batch_size: samples integrated at once (the result does not depend on it).

    Returns:
        ``(N + 1, N + 1)`` float64, finite for ``i < j`` (negative entries possible with
        ``"dev"``), ``+inf`` on and below the diagonal.
    """
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    _check_options(metric, reference, substeps, batch_size)
    if metric in PAIR_COSTS:
        return cost_matrix(
            model, noise, grid, batch_size=batch_size, substeps=substeps, reference=reference,
            pair_cost=PAIR_COSTS[metric], cond=cond,
        )
    n_samples = int(noise.shape[0])
    n = grid.size - 1
    student = np.zeros((n + 1, n + 1), dtype=np.float64)
    teacher = np.zeros(n + 1, dtype=np.float64)
    cond = cond or {}
    for _, _, traj in trajectory_batches(
        model, noise, grid, batch_size=batch_size, substeps=substeps, method=reference, cond=cond
    ):
        s, t = _deviation_sums(traj.xs, traj.vs, grid)
        student += s
        teacher += t
    sums = student - teacher[None, :]
    dim = int(np.prod(noise.shape[1:]))
    cost = finish_cost_matrix(sums, n_samples, None) / math.sqrt(dim)
    if not np.all(np.isfinite(cost[np.triu_indices(n + 1, 1)])):
        raise CostMatrixError("the GITS cost matrix has non-finite entries; the model produced NaN or inf.")
    return cost


def gits_paths(cost: Any, max_nfe: int, coeff: float = 1.0) -> dict[int, tuple[np.ndarray, float]]:
    """GITS's discounted DP for every budget 1..``max_nfe``: least ``sum_k coeff^(k-1) C[i_{k-1}, i_k]``.

    Unlike :func:`bossflow.bellman_paths`, costs may be negative (GITS's ``dev`` metric) and
    the k-th step from the noise end is weighted by ``coeff^(k-1)``; with ``coeff = 1`` and
    non-negative costs the two agree.

    Args:
        cost: ``(N + 1, N + 1)`` matrix, finite above the diagonal.
        max_nfe: largest budget, ``1 <= max_nfe <= N``.
        coeff: positive discount.

    Returns:
        ``{nfe: (indices (nfe + 1,) int64 from 0 to N, weighted total)}``.

    Example:
        >>> import numpy as np
        >>> C = np.full((4, 4), np.inf)
        >>> C[np.triu_indices(4, 1)] = 1.0
        >>> C[0, 3] = 5.0
        >>> {k: (p.tolist(), c) for k, (p, c) in gits_paths(C, 3, coeff=2.0).items()}
        {1: ([0, 3], 5.0), 2: ([0, 1, 3], 3.0), 3: ([0, 1, 2, 3], 7.0)}
    """
    c = square_matrix(cost)
    n = c.shape[0] - 1
    if not np.all(np.isfinite(c[np.triu_indices(n + 1, 1)])):
        raise CostMatrixError("the GITS cost matrix must be finite above the diagonal; recompute it.")
    max_nfe = check_budget(max_nfe, n)
    coeff = _check_coeff(coeff)
    return least_cost_paths(c, max_nfe, step_weights=coeff ** np.arange(max_nfe))


def gits_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    metric: Literal["l2", "l1", "dev"] = "l2",
    coeff: float = 1.0,
    reference: Literal["euler", "heun"] = "heun",
    substeps: int = 1,
    batch_size: int = 64,
) -> dict[int, Schedule]:
    """GITS-style :class:`Schedule` for each budget in ``nfes``, from one cost matrix and one DP.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`).
        metric: ``"l2"`` (default), ``"l1"`` or ``"dev"`` (see the module docstring).
        coeff: GITS's discount (1.0 = plain DP; the released code uses 1.15).
        reference: teacher sub-steps, ``"heun"`` or ``"euler"``.
        substeps: teacher sub-steps per grid interval.
        batch_size: samples integrated at once.

    Returns:
        ``{nfe: Schedule}`` with ``method="gits"``, the grid ``indices``, the weighted path
        ``cost``, ``metric``, ``coeff``, ``reference``, ``substeps`` and ``samples``.

    Example:
        >>> import torch, bossflow as bf
        >>> noise = bf.gaussian_noise(16, (2,), dtype=torch.float64)
        >>> s = gits_schedules(bf.models.gmm_2d(), noise, bf.uniform_schedule(10).times, [3])[3]
        >>> s.nfe, s.meta["method"], s.meta["metric"]
        (3, 'gits', 'l2')
    """
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    _check_options(metric, reference, substeps, batch_size)
    coeff = _check_coeff(coeff)
    budgets = check_budgets(nfes, grid.size - 1)
    cost = gits_cost_matrix(
        model, noise, grid, metric=metric, cond=cond, reference=reference, substeps=substeps, batch_size=batch_size
    )
    paths = gits_paths(cost, budgets[-1], coeff)
    out = {}
    for k in budgets:
        idx, total = paths[k]
        found = {
            "method": "gits", "indices": idx.tolist(), "cost": total, "metric": metric, "coeff": coeff,
            "reference": reference, "substeps": int(substeps), "samples": int(noise.shape[0]),
        }
        out[k] = Schedule(grid[idx], **{**(provenance or {}), **found})
    return out


__all__ = ["gits_cost_matrix", "gits_paths", "gits_schedules"]
