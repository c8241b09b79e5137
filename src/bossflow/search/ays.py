"""Align-Your-Steps-style schedule refinement: coordinate descent on a local error proxy, then subdivision.

After AYS (Sabour, Fidler, Kreis, "Align Your Steps: Optimizing Sampling Schedules in
Diffusion Models", ICML 2024, arXiv 2404.14507). AYS minimises an upper bound on the KL
divergence (KLUB, from Girsanov's theorem) between the true generative SDE and the SDE
whose denoiser is frozen over each step interval. The bound is a sum over intervals, so
AYS improves a schedule by coordinate descent: each interior time ``t_i`` is moved within
``(t_{i-1}, t_{i+1})``, neighbours fixed, to the value that minimises the two interval
terms that depend on it; sweeps repeat. It optimises one base budget (10 steps) from a
hand-made schedule, gets 20 and 40 steps by inserting midpoints (in log noise level) and
optimising again, and other step counts by log-linear interpolation of the base schedule.

Proxy objective here (bossflow's convention: ``t = 0`` noise, ``t = 1`` data,
``dx/dt = v(x, t)``). A flow ODE has no diffusion term, so there is no KL to bound. Both
proxies are measured on the teacher trajectory ``x(s)`` of the search noises (fine
trajectory on the base grid ``g_0 = 0 < ... < g_N = 1``, velocities ``v(s) = v(x(s), s)``)
and, like the KLUB, are sums over the schedule's intervals ``F = sum_k c(t_k, t_{k+1})``:

* ``objective="klub"`` (default), the KLUB's flow analogue: the squared mismatch between
  the true velocity and the velocity an Euler step freezes at the start of its interval,
  integrated over the interval,
  ``c(a, b) = mean_b int_a^b ||v(s) - v(a)||^2 ds / D``
  (trapezoid rule on the grid points in ``[a, b]``; by Cauchy-Schwarz the squared local
  Euler error ``||x(b) - x(a) - (b - a) v(a)||^2`` is at most ``(b - a)`` times it). The
  KLUB's weighting ``1 / g(t)^2`` of the drift mismatch has no counterpart and is 1 here.
* ``objective="euler"``: the local error of one Euler step from the teacher,
  ``c(a, b) = mean_b ||x(a) + (b - a) v(a) - x(b)||^2 / D``, the BOSS cost (so its global
  optimum over the grid is BOSS's schedule; coordinate descent finds a local one).

Times are restricted to the base grid: every interval cost comes from the teacher alone
(no model call during the descent), each coordinate step is exact over all grid
candidates, and the result is deterministic. A coordinate moves only on a strict decrease
(ties to the smallest index), so no sweep increases ``F`` and the descent stops after a
sweep without moves or after ``max_sweeps``.

Budgets (AYS's scheme): the base budget ``base_nfe`` (default 10, at most N) starts from
the ``init`` family (uniform steps, the flow default; AYS starts from EDM / log-SNR / time
schedules); budgets ``base_nfe * 2^m`` start from the optimised half budget with a midpoint
inserted in every interval; every other budget starts from the optimised base schedule
interpolated to that many steps. Each start is snapped to the grid, then refined. Midpoints
and interpolation use AYS's log noise level, which for the linear path
``x_t = (1 - t) x_0 + t x_1`` is ``log((1 - t) / t) = -logit(t)``, on intervals with both
ends inside ``(0, 1)``, and ``t`` itself on the first and last interval (where the noise
level is infinite or zero; AYS's ``sigma_max``/``sigma_min`` are finite).

What is simplified: no SDE, no data (AYS draws ``x_t`` from the forward process on real
data; here the teacher from noise provides the states), no importance sampling of ``t``
(the grid quadrature is exact for the grid), no early stopping (the grid makes the
descent terminate), times on a grid rather than continuous, and the student is Euler (AYS
optimises for a given solver such as DPM-Solver++ and then reuses the schedule).

Cost: the teacher, ``N B`` model rows (``2 N B`` with the Heun teacher) plus ``B`` rows for
the velocity at ``t = 1`` (``"klub"`` only).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..core.bellman import check_budgets, validate_cost_matrix
from ..core.cost import finish_cost_matrix, gram_cost_sums
from ..core.errors import BossflowError, CostMatrixError
from ..core.noise import validate_noise
from ..core.schedules import SCHEDULE_FAMILIES, Schedule, validate_times
from ..core.solvers import check_teacher_options, select_cond, trajectory_batches

OBJECTIVES = ("klub", "euler")
DEFAULT_BASE_NFE = 10


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BossflowError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def _check_options(objective: Any, reference: Any, substeps: Any, batch_size: Any) -> None:
    if objective not in OBJECTIVES:
        raise BossflowError(f"the AYS objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
    check_teacher_options(reference, substeps, batch_size)


def _klub_sums(vs: Tensor, grid: np.ndarray) -> np.ndarray:
    """Summed ``int_{g_i}^{g_j} ||v(s) - v_i||^2 ds`` (trapezoid on the grid) over the samples of one batch.

    Args:
        vs: ``(N + 1, B, *shape)`` teacher velocities at every grid time, the last included.
        grid: ``(N + 1,)`` float64.

    Returns:
        ``(N + 1, N + 1)`` float64, meaningful for ``i < j``; zero elsewhere.
    """
    n = grid.size - 1
    v = vs.reshape(n + 1, -1).to(torch.float64)
    v = v - v.mean(dim=0, keepdim=True)  # centring leaves every difference v_m - v_i unchanged
    gram = v @ v.T
    sq = torch.diagonal(gram)
    mismatch = (sq[None, :] + sq[:, None] - 2 * gram).clamp_min(0)  # [i, m] = sum_b ||v_m - v_i||^2
    h = torch.as_tensor(np.diff(grid), dtype=torch.float64, device=v.device)
    pieces = 0.5 * h[None, :] * (mismatch[:, :-1] + mismatch[:, 1:])  # [i, m]: trapezoid over [g_m, g_{m+1}]
    m_index = torch.arange(n, device=v.device)
    pieces = torch.where(m_index[None, :] >= torch.arange(n + 1, device=v.device)[:, None], pieces, 0.0)
    out = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=v.device)
    out[:, 1:] = torch.cumsum(pieces, dim=1)  # [i, j] = sum over i <= m < j
    return out.cpu().numpy()


def ays_interval_costs(
    model: Callable[..., Tensor],
    noise: Tensor,
    grid: Any,
    *,
    objective: Literal["klub", "euler"] = "klub",
    cond: dict | None = None,
    reference: Literal["euler", "heun"] = "heun",
    substeps: int = 1,
    batch_size: int = 64,
) -> np.ndarray:
    """Interval costs ``c(g_i, g_j)`` of the AYS proxy for every grid pair (see the module docstring).

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape ``(B,)``.
        noise: ``(B, *shape)`` noises at ``t = 0``.
        grid: ``(N + 1,)`` base grid, 0 to 1.
        objective: ``"klub"`` or ``"euler"``.
        cond: conditioning; tensors whose first dimension is B follow their samples.
        reference: teacher sub-steps, ``"heun"`` (default) or ``"euler"``.
        substeps: teacher sub-steps per grid interval.
        batch_size: samples integrated at once (the result does not depend on it).

    Returns:
        ``(N + 1, N + 1)`` float64, non-negative and finite for ``i < j``, ``+inf`` elsewhere;
        averaged over samples and dimensions.
    """
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    _check_options(objective, reference, substeps, batch_size)
    n_samples = int(noise.shape[0])
    n = grid.size - 1
    sums = np.zeros((n + 1, n + 1), dtype=np.float64)
    cond = cond or {}
    with torch.no_grad():
        batches = trajectory_batches(
            model, noise, grid, batch_size=batch_size, substeps=substeps, method=reference, cond=cond
        )
        for begin, end, traj in batches:
            if objective == "euler":
                sums += gram_cost_sums(traj.xs, traj.vs, grid)
            else:
                x_end = traj.xs[n]
                t_end = torch.ones(x_end.shape[0], dtype=x_end.dtype, device=x_end.device)
                v_end = model(x_end, t_end, **select_cond(cond, slice(begin, end), n_samples))
                sums += _klub_sums(torch.cat([traj.vs, v_end[None]]), grid)
    cost = finish_cost_matrix(sums, n_samples, int(np.prod(noise.shape[1:])))
    if not np.all(np.isfinite(cost[np.triu_indices(n + 1, 1)])):
        raise CostMatrixError("the AYS interval costs have non-finite entries; the model produced NaN or inf.")
    return cost


def path_cost(cost: np.ndarray, indices: np.ndarray) -> float:
    """``sum_k cost[i_k, i_{k+1}]`` along a path of grid indices."""
    idx = np.asarray(indices)
    return float(np.sum(cost[idx[:-1], idx[1:]]))


def ays_refine(cost: Any, indices: Any, *, max_sweeps: int = 100) -> tuple[np.ndarray, list[float]]:
    """Coordinate descent on the interior indices of a path, neighbours fixed (AYS's optimiser on a grid).

    Each sweep visits the interior positions in order; position k moves to the grid index in
    ``(i_{k-1}, i_{k+1})`` with the least ``cost[i_{k-1}, i] + cost[i, i_{k+1}]``, only when that
    is strictly less than at its current index (ties to the smallest index).

    Args:
        cost: ``(N + 1, N + 1)`` non-negative interval costs, finite above the diagonal.
        indices: start path, strictly increasing grid indices from 0 to N.
        max_sweeps: bound on the number of sweeps.

    Returns:
        ``(indices, history)``: the refined ``(K + 1,)`` int64 path and the objective
        ``sum_k cost[i_k, i_{k+1}]`` at the start and after every sweep (non-increasing).

    Example:
        >>> import numpy as np
        >>> C = np.full((5, 5), np.inf)
        >>> iu = np.triu_indices(5, 1)
        >>> C[iu] = (iu[1] - iu[0]) ** 2.0
        >>> idx, hist = ays_refine(C, [0, 1, 4])
        >>> idx.tolist(), hist
        ([0, 2, 4], [10.0, 8.0, 8.0])
    """
    c = validate_cost_matrix(cost)
    n = c.shape[0] - 1
    max_sweeps = _positive_int(max_sweeps, "max_sweeps")
    idx = np.array(indices, dtype=np.int64).reshape(-1)
    if idx.size < 2 or idx[0] != 0 or idx[-1] != n or np.any(np.diff(idx) <= 0):
        raise CostMatrixError(f"the start path must be strictly increasing grid indices from 0 to {n}, got {idx.tolist()}.")
    if not np.all(np.isfinite(c[np.triu_indices(n + 1, 1)])):
        raise CostMatrixError("the interval costs must be finite above the diagonal.")
    history = [path_cost(c, idx)]
    for _ in range(max_sweeps):
        moved = False
        for k in range(1, idx.size - 1):
            a, b = idx[k - 1], idx[k + 1]
            if b - a < 2:
                continue
            candidates = np.arange(a + 1, b)
            values = c[a, candidates] + c[candidates, b]
            best = int(np.argmin(values))
            if values[best] < c[a, idx[k]] + c[idx[k], b]:
                idx[k] = candidates[best]
                moved = True
        history.append(path_cost(c, idx))
        if not moved:
            break
    return idx, history


def interpolate_times(times: Any, nfe: int) -> np.ndarray:
    """Resample a schedule to ``nfe`` steps at equal fractions of its index (AYS's interpolation rule).

    New time ``u = i / nfe`` (as a fraction of the old index ``0..K``) lies in old interval
    ``[t_a, t_b]`` at weight ``w``; it is ``sigmoid((1 - w) logit(t_a) + w logit(t_b))``
    (linear in log noise level ``log((1 - t) / t)``) when ``0 < t_a`` and ``t_b < 1``, and
    ``(1 - w) t_a + w t_b`` on the first and last interval. With ``nfe = 2K`` this inserts
    one midpoint per interval and keeps the old times.

    Args:
        times: ``(K + 1,)`` schedule times, 0 (noise) to 1 (data): a :class:`Schedule`, tensor, array or list.
        nfe: new number of steps.

    Returns:
        ``(nfe + 1,)`` float64 times, 0 first and 1 last.
    """
    times = validate_times(times)
    k_old = times.size - 1
    out = np.empty(nfe + 1, dtype=np.float64)
    for i in range(nfe + 1):
        seg, rem = divmod(i * k_old, nfe)  # exact position seg + rem / nfe on the old index
        if rem == 0:
            out[i] = times[seg]
            continue
        w = rem / nfe
        t_a, t_b = times[seg], times[seg + 1]
        if t_a > 0.0 and t_b < 1.0:
            la, lb = math.log(t_a / (1 - t_a)), math.log(t_b / (1 - t_b))
            out[i] = 1.0 / (1.0 + math.exp(-((1 - w) * la + w * lb)))
        else:
            out[i] = (1 - w) * t_a + w * t_b
    return out


def snap_to_grid(times: Any, grid: Any) -> np.ndarray:
    """Nearest grid indices of ``times`` (ties to the smaller), made strictly increasing from 0 to N.

    Requires ``len(times) - 1 <= N``. Index ``k`` is first clipped to ``[k, N - K + k]`` (room
    for the others), then raised to one past its predecessor where needed.

    Args:
        times: ``(K + 1,)`` times, 0 (noise) to 1 (data): a :class:`Schedule`, tensor, array or list.
        grid: ``(N + 1,)`` base grid, in any of those forms.

    Returns:
        ``(K + 1,)`` int64 indices ``0 = i_0 < ... < i_K = N``.
    """
    times, grid = validate_times(times), validate_times(grid, "base grid")
    n = grid.size - 1
    k_steps = times.size - 1
    right = np.clip(np.searchsorted(grid, times), 1, n)
    left = right - 1
    idx = np.where(np.abs(grid[left] - times) <= np.abs(grid[right] - times), left, right)
    positions = np.arange(k_steps + 1)
    idx = np.clip(idx, positions, n - k_steps + positions)
    idx[0], idx[-1] = 0, n
    for k in range(1, k_steps + 1):
        idx[k] = max(idx[k], idx[k - 1] + 1)
    return idx.astype(np.int64)


def _is_doubling(k: int, base: int) -> bool:
    """Whether ``k = base * 2^m`` for some ``m >= 1``."""
    if k <= base or k % base:
        return False
    ratio = k // base
    return ratio & (ratio - 1) == 0


def ays_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    objective: Literal["klub", "euler"] = "klub",
    base_nfe: int | None = None,
    init: str = "uniform",
    max_sweeps: int = 100,
    reference: Literal["euler", "heun"] = "heun",
    substeps: int = 1,
    batch_size: int = 64,
) -> dict[int, Schedule]:
    """AYS-style :class:`Schedule` for each budget in ``nfes``: refine the base budget, subdivide, refine again.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`).
        objective: interval proxy, ``"klub"`` (default) or ``"euler"`` (module docstring).
        base_nfe: the budget optimised from ``init``; default ``min(10, N)`` (AYS's 10).
        init: the family the base budget starts from: ``"uniform"``, ``"edm"`` or ``"shift"``.
        max_sweeps: bound on coordinate-descent sweeps per budget.
        reference: teacher sub-steps, ``"heun"`` or ``"euler"``.
        substeps: teacher sub-steps per grid interval.
        batch_size: samples integrated at once.

    Returns:
        ``{nfe: Schedule}`` with ``method="ays"``, the grid ``indices``, the proxy ``cost``
        (per dimension and sample) and ``start_cost``, ``start`` (``init``'s name,
        ``"subdivided"`` or ``"interpolated"``), ``sweeps``, ``objective``, ``base_nfe``,
        ``reference``, ``substeps`` and ``samples``.

    Example:
        >>> import torch, bossflow as bf
        >>> noise = bf.gaussian_noise(16, (2,), dtype=torch.float64)
        >>> s = ays_schedules(bf.models.gmm_2d(), noise, bf.uniform_schedule(20).times, [4])[4]
        >>> s.nfe, s.meta["method"], s.meta["start"]
        (4, 'ays', 'interpolated')
    """
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    _check_options(objective, reference, substeps, batch_size)
    n = grid.size - 1
    if base_nfe is None:
        base = min(DEFAULT_BASE_NFE, n)
    else:
        base = _positive_int(base_nfe, "base_nfe")
        if base > n:
            raise BossflowError(f"base_nfe must be at most the grid's {n} intervals, got {base}.")
    if init not in SCHEDULE_FAMILIES:
        raise BossflowError(f"init must be one of {', '.join(SCHEDULE_FAMILIES)}, got {init!r}.")
    max_sweeps = _positive_int(max_sweeps, "max_sweeps")
    budgets = check_budgets(nfes, n)
    cost = ays_interval_costs(
        model, noise, grid, objective=objective, cond=cond, reference=reference, substeps=substeps,
        batch_size=batch_size,
    )

    solved: dict[int, tuple[np.ndarray, list[float], str]] = {}

    def solve(k: int) -> np.ndarray:
        if k not in solved:
            if k == base:
                start, how = snap_to_grid(SCHEDULE_FAMILIES[init](k).times, grid), init
            elif _is_doubling(k, base):
                start, how = snap_to_grid(interpolate_times(grid[solve(k // 2)], k), grid), "subdivided"
            else:
                start, how = snap_to_grid(interpolate_times(grid[solve(base)], k), grid), "interpolated"
            idx, history = ays_refine(cost, start, max_sweeps=max_sweeps)
            solved[k] = (idx, history, how)
        return solved[k][0]

    out = {}
    for k in budgets:
        solve(k)
        idx, history, how = solved[k]
        found = {
            "method": "ays", "indices": idx.tolist(), "cost": history[-1], "start_cost": history[0],
            "start": how, "sweeps": len(history) - 1, "objective": objective, "base_nfe": base,
            "reference": reference, "substeps": int(substeps), "samples": int(noise.shape[0]),
        }
        out[k] = Schedule(grid[idx], **{**(provenance or {}), **found})
    return out


__all__ = ["ays_interval_costs", "ays_refine", "ays_schedules", "interpolate_times", "snap_to_grid"]
