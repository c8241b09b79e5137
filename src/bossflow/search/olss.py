"""OLSS-style steps: each coarse step is a least-squares combination of earlier states and velocities.

After OLSS (Duan, Wang, Chen, Huang, Qian, "Optimal Linear Subspace Search: Learning to
Construct Fast and High-Quality Schedulers for Diffusion Models", CIKM 2023, arXiv
2305.14677; code alibaba/EasyNLP ``diffusion/olss_scheduler``). OLSS observes that every
scheduler update is a linear combination of the latents and model outputs seen so far, so
it replaces the scheduler's coefficients by free ones: step k's result is the orthogonal
projection of the full (many-step) process's latent at the next chosen time onto the span
of the earlier latents and model outputs, fitted by least squares on a handful of
full-process generations. A path-optimisation step picks which of the full process's
times the coarse steps land on.

Here, for a flow (bossflow's convention: ``t = 0`` noise, ``t = 1`` data,
``dx/dt = v(x, t)``), with chosen times ``0 = t_0 < ... < t_K = 1`` on the base grid:

    x_{k+1} = sum_{m <= k} a[k][m] x_m + sum_{m <= k} b[k][m] v(x_m, t_m),      k = 0 .. K-1,

one model evaluation per step (K NFE); Euler is the special case ``a[k] = (0, ..., 0, 1)``,
``b[k] = (0, ..., 0, t_{k+1} - t_k)``. :func:`olss_solve` applies the coefficients, stored
in the schedule's ``meta["olss"]`` as JSON lists (``a`` and ``b``, row k of length k + 1).

* **Teacher**: the fine Euler trajectory of the search noises on the base grid
  (:func:`bossflow.fine_trajectory`), its states ``xs`` and velocities ``vs``.
* **Basis** (``basis="initial"``, the default, as OLSS): the noise ``x_0`` and every velocity
  so far, so ``a[k]`` is zero beyond its first entry. ``basis="states"`` puts every earlier
  state in the basis too (the general form above). Along the sampler's own rollout the
  states lie in the span of ``x_0`` and the velocities, so both give the same fit there; on
  the teacher's states they do not (see ``fit``).
* **Step selection** (``selection="olss"``, OLSS's path optimisation): for a threshold
  ``e``, walk greedily from index 0, each step going to the farthest grid index j such that
  every target up to j is fitted, by least squares on the teacher's own states and
  velocities at the path so far, with MSE at most ``e``; bisect ``e`` for the smallest value
  whose walk reaches N within K steps (the OLSS code bisects the same way, with a binary
  search for the farthest index). The least-squares fits come from one Gram matrix of the
  teacher's states and velocities, so the selection costs no model evaluation. A path
  shorter than K steps is padded by halving its widest gap. ``selection="uniform"`` takes
  the grid indices nearest to uniform times instead.
* **Coefficients** (``fit="student"``, the default): fitted one step after the other along
  the few-step sampler's own rollout, ``x_m`` and ``v(x_m, t_m)`` being the states it actually
  reaches from the search noises with the coefficients fitted so far, and the target the
  teacher's state at ``t_{k+1}``. ``fit="teacher"`` fits on the teacher's states and
  velocities at the chosen times instead, as the OLSS code does with its recorded full
  process; it cannot correct the errors that earlier steps make. With ``basis="states"`` it
  is unstable: the teacher's intermediate states get large cancelling coefficients that
  the sampler's own states do not cancel (measured on the mixtures: endpoint RMSE in the
  hundreds at 8 steps).
* **Numerics**: least squares in float64 through the normal equations of unit-scaled
  columns plus a small ridge (``ridge`` times the identity), so nearly collinear columns
  get bounded coefficients.

What is simplified: the OLSS code fits on its recorded full process (``fit="teacher"``);
the default here fits along the sampler's rollout, which measured better on the mixtures.
Its selection fits from the current state and the model outputs, its final fit from the
initial latent and the model outputs; here both use the same basis. There is no QR
solver, no bisection over ``[0, 10]`` in absolute units (the bracket comes from the data),
and the scores are endpoint errors against the teacher rather than FID.

Cost, in model rows, for B search noises, a grid of N steps and budget K: the teacher
``N B`` (``substeps`` times more with sub-steps), once for all budgets, and ``(K - 1) B``
per budget for the rollout (its first velocity is the teacher's). The least-squares work is
one ``(2N + 1)``-square Gram matrix over the ``B D`` teacher values, then small solves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..core.errors import BossflowError, ScheduleError
from ..core.noise import validate_noise
from ..core.schedules import Schedule
from ..core.solvers import NFECounter, _model_time, batched_trajectory, select_cond
from .evolution import _check_grid_and_budgets, snap_to_grid

SELECTIONS = ("olss", "uniform")
FITS = ("student", "teacher")
BASES = ("initial", "states")
UPDATE = "x[k+1] = sum_m a[k][m] x[m] + sum_m b[k][m] v(x[m], s[m]), m = 0..k"


def _gram(*blocks: Tensor, chunk_bytes: int = 2**26) -> Tensor:
    """``F @ F.T`` in float64 for the rows ``F`` of ``(C_i, M)`` blocks stacked, over chunks of the long axis."""
    c = sum(block.shape[0] for block in blocks)
    m = blocks[0].shape[1]
    chunk = max(1, min(m, chunk_bytes // (8 * c)))
    out = torch.zeros(c, c, dtype=torch.float64, device=blocks[0].device)
    for start in range(0, m, chunk):
        part = torch.cat([block[:, start : start + chunk] for block in blocks]).to(torch.float64)
        out += part @ part.T
    return out


def _ridge_solve(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    """Least-squares coefficients from normal equations ``gram a = rhs`` (columns scaled to unit norm, plus ridge).

    The systems are tiny (at most ``2 (K + 1)`` unknowns), so they are solved in numpy,
    where a small solve costs microseconds rather than a threaded kernel launch.

    Args:
        gram: ``(C, C)`` float64 Gram matrix of the basis.
        rhs: ``(C, T)`` float64 inner products of the basis with T targets.
        ridge: ridge added to the diagonal of the unit-scaled Gram matrix.

    Returns:
        ``(C, T)`` float64 coefficients.
    """
    scale = np.sqrt(np.clip(np.diagonal(gram), 0.0, None))
    scale = np.where(scale > 0, scale, 1.0)
    unit = gram / (scale[:, None] * scale[None, :])
    coef = np.linalg.solve(unit + ridge * np.eye(gram.shape[0]), rhs / scale[:, None])
    return coef / scale[:, None]


class _TeacherFits:
    """Least-squares fits of teacher states from teacher states and velocities, all from one Gram matrix.

    Column c < N + 1 is the teacher state ``xs[c]``; column ``N + 1 + i`` is the velocity ``vs[i]``.
    """

    def __init__(self, xs: Tensor, vs: Tensor, ridge: float, basis: str) -> None:
        n = vs.shape[0]
        self.n, self.ridge, self.kind = n, ridge, basis
        self.values = xs[0].numel()
        self.gram = _gram(xs.reshape(n + 1, -1), vs.reshape(n, -1)).cpu().numpy()

    def basis(self, path: list[int]) -> np.ndarray:
        states = path[:1] if self.kind == "initial" else path
        return np.array([*states, *(self.n + 1 + i for i in path)], dtype=np.int64)

    def coefficients(self, path: list[int], targets: np.ndarray) -> np.ndarray:
        """``(C, T)`` coefficients of the targets ``xs[j]`` on the basis of ``path`` (states first, then velocities)."""
        cols = self.basis(path)
        return _ridge_solve(self.gram[np.ix_(cols, cols)], self.gram[np.ix_(cols, targets)], self.ridge)

    def errors(self, path: list[int], targets: np.ndarray) -> np.ndarray:
        """Least-squares MSE per value of each target state ``xs[j]``, from the basis of ``path``."""
        cols = self.basis(path)
        g_ss = self.gram[np.ix_(cols, cols)]
        g_st = self.gram[np.ix_(cols, targets)]
        coef = _ridge_solve(g_ss, g_st, self.ridge)
        sq = self.gram[targets, targets] - 2 * (coef * g_st).sum(0) + (coef * (g_ss @ coef)).sum(0)
        return np.clip(sq, 0.0, None) / self.values


def _greedy_path(fits: _TeacherFits, nfe: int, threshold: float) -> list[int] | None:
    """OLSS's greedy walk: farthest next index with every fit up to it within ``threshold``; None if > nfe steps."""
    n = fits.n
    path = [0]
    while path[-1] < n:
        if len(path) > nfe:
            return None
        i = path[-1]
        err = fits.errors(path, np.arange(i + 1, n + 1))
        over = np.flatnonzero(err > threshold)
        reach = n - i if over.size == 0 else int(over[0])
        if reach == 0:
            return None
        path.append(i + reach)
    return path if len(path) - 1 <= nfe else None


def _pad_path(path: list[int], nfe: int) -> list[int]:
    """Halve the widest gap (first one on ties) until the path has ``nfe`` steps."""
    path = list(path)
    while len(path) - 1 < nfe:
        gaps = np.diff(path)
        g = int(np.argmax(gaps))
        path.insert(g + 1, path[g] + int(gaps[g]) // 2)
    return path


def select_path(fits: _TeacherFits, nfe: int, iterations: int = 50) -> tuple[list[int], float]:
    """OLSS path optimisation: the least threshold (by bisection) whose greedy walk reaches N in ``nfe`` steps.

    Returns:
        ``(indices, threshold)``: ``nfe + 1`` grid indices from 0 to N, and the per-step
        least-squares MSE bound the path meets.
    """
    n = fits.n
    hi = float(fits.errors([0], np.arange(1, n + 1)).max())  # one step reaches N at this bound
    best = _greedy_path(fits, nfe, hi) or [0, n]
    lo = 0.0
    zero = _greedy_path(fits, nfe, 0.0)
    if zero is not None:
        return _pad_path(zero, nfe), 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        path = _greedy_path(fits, nfe, mid)
        if path is None:
            lo = mid
        else:
            hi, best = mid, path
    return _pad_path(best, nfe), hi


def _check_options(selection: Any, fit: Any, basis: Any, ridge: Any, substeps: Any, batch_size: Any) -> None:
    """Check the options of :func:`olss_schedules`."""
    if selection not in SELECTIONS:
        raise BossflowError(f"OLSS selection must be one of {', '.join(SELECTIONS)}, got {selection!r}.")
    if fit not in FITS:
        raise BossflowError(f"OLSS fit must be one of {', '.join(FITS)}, got {fit!r}.")
    if basis not in BASES:
        raise BossflowError(f"OLSS basis must be one of {', '.join(BASES)}, got {basis!r}.")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not np.isfinite(ridge) or ridge < 0:
        raise BossflowError(f"ridge must be a finite number >= 0, got {ridge!r}.")
    if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise BossflowError(f"substeps must be a positive integer, got {substeps!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise BossflowError(f"batch_size must be a positive integer or None, got {batch_size!r}.")


@dataclass(frozen=True)
class _Teacher:
    """The fitting noises and their fine Euler trajectory on the base grid, shared by every budget.

    Attributes:
        model: the model, counting the rows and calls of each budget's rollout.
        noise: ``(B, *shape)`` fitting noises at ``t = 0``.
        grid: ``(N + 1,)`` base grid, 0 (noise) to 1 (data).
        cond: conditioning for every model call.
        rows: samples per model call.
        xs: ``(N + 1, B, *shape)`` teacher states at the grid times.
        vs: ``(N, B, *shape)`` teacher velocities at the first N grid times.
        counts: ``teacher_rows`` and ``teacher_calls``, the teacher's cost.
    """

    model: NFECounter
    noise: Tensor
    grid: np.ndarray
    cond: dict
    rows: int
    xs: Tensor
    vs: Tensor
    counts: dict


def _teacher_trajectory(
    model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray, cond: dict, batch_size: int | None, substeps: int
) -> _Teacher:
    """The fine Euler trajectory of ``noise`` ``(B, *shape)`` from ``t = 0`` on ``grid`` (default B rows per call).

    Raises:
        BossflowError: the trajectory is not finite.
    """
    rows = int(batch_size) if batch_size is not None else int(noise.shape[0])
    counted = NFECounter(model)
    with torch.no_grad():
        teacher = batched_trajectory(counted, noise, grid, batch_size=rows, substeps=substeps, cond=cond)
        xs, vs = teacher.xs, teacher.vs
    if not (torch.isfinite(xs).all() and torch.isfinite(vs).all()):
        raise BossflowError("the teacher trajectory is not finite; the model produced NaN or inf.")
    counts = {"teacher_rows": counted.samples, "teacher_calls": counted.nfe}
    return _Teacher(model=counted, noise=noise, grid=grid, cond=cond, rows=rows, xs=xs, vs=vs, counts=counts)


def _select_steps(fits: _TeacherFits, grid: np.ndarray, nfe: int, selection: str) -> tuple[list[int], float | None]:
    """The ``nfe + 1`` grid indices of the step times, 0 to N, and the selection's threshold (None for uniform)."""
    if selection == "olss":
        return select_path(fits, nfe)
    return snap_to_grid(grid, np.arange(nfe + 1) / nfe).tolist(), None


def _fit_coefficients(
    teacher: _Teacher, fits: _TeacherFits, path: list[int], fit: str, basis: str, ridge: float
) -> tuple[list[list[float]], list[list[float]], Tensor]:
    """Least-squares update coefficients of the steps along ``path``, fitted on the sampler's rollout or the teacher.

    Returns:
        ``(a, b, x_K)``: the coefficients (row k of length k + 1) and the ``(B, *shape)`` state at
        ``t = 1`` that the update with them reaches from the fitting noises.
    """
    grid, counted = teacher.grid, teacher.model
    if fit == "student":
        return _fit_student(
            counted, teacher.noise, teacher.xs, teacher.vs, grid, path, teacher.cond, teacher.rows, ridge, basis
        )
    a_rows, b_rows = [], []
    for step in range(len(path) - 1):
        coef = fits.coefficients(path[: step + 1], np.array([path[step + 1]]))[:, 0]
        a_row, b_row = _split(coef, step, basis)
        a_rows.append(a_row)
        b_rows.append(b_row)
    x_end = _apply(counted, teacher.noise, grid[path], grid[path[:-1]], a_rows, b_rows, teacher.cond, teacher.rows,
                   v0=teacher.vs[0])
    return a_rows, b_rows, x_end


def olss_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    selection: Literal["olss", "uniform"] = "olss",
    fit: Literal["student", "teacher"] = "student",
    basis: Literal["initial", "states"] = "initial",
    ridge: float = 1e-10,
    substeps: int = 1,
    batch_size: int | None = None,
) -> dict[int, Schedule]:
    """OLSS-style schedules (Duan et al., CIKM 2023): step times plus least-squares update coefficients.

    The schedules are meant for :func:`olss_solve`, not for Euler. See the module docstring
    for the update, the selection, what is simplified and the cost in model rows.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`).
            Use many more noise values ``B D`` than coefficients (at most ``K (K + 3) / 2`` per
            schedule with OLSS's basis, ``K (K + 1)`` with every state), or the fit follows these noises only.
        selection: ``"olss"`` (OLSS's path optimisation) or ``"uniform"`` (grid indices nearest
            to uniform times).
        fit: ``"student"`` (along the sampler's own rollout) or ``"teacher"`` (on the teacher's
            states and velocities, as the OLSS code).
        basis: ``"initial"`` (the noise ``x_0`` and every velocity so far, as OLSS) or ``"states"``
            (every earlier state and every velocity).
        ridge: ridge on the unit-scaled normal equations, ``>= 0``.
        substeps: Euler sub-steps per grid interval for the teacher trajectory.
        batch_size: samples per model call (default: all B at once).

    Returns:
        ``{nfe: Schedule}`` with ``method="olss"``, ``olss`` (the coefficients ``a``, ``b`` and the
        update rule), the grid ``indices``, ``cost`` (endpoint MSE per dimension of
        :func:`olss_solve` on the fitting noises against the teacher), ``selection``, ``fit``,
        ``threshold`` (the selection's per-step bound), ``samples`` and row/call counts
        (``teacher_rows``, ``teacher_calls`` once per call; ``search_rows``, ``search_calls`` per budget).

    Raises:
        BossflowError: a bad noise tensor, budget or option.

    Example:
        >>> import torch, bossflow as bf
        >>> model = bf.models.gmm_2d()
        >>> noise = bf.gaussian_noise(64, (2,), dtype=torch.float64)
        >>> found = olss_schedules(model, noise, bf.uniform_schedule(20).times, [3])
        >>> x1 = olss_solve(model, noise, found[3])
        >>> found[3].meta["method"], len(found[3].meta["olss"]["b"][2]), tuple(x1.shape)
        ('olss', 3, (64, 2))
    """
    grid, budgets = _check_grid_and_budgets(noise, grid, nfes)
    _check_options(selection, fit, basis, ridge, substeps, batch_size)
    teacher = _teacher_trajectory(model, noise, grid, dict(cond or {}), batch_size, int(substeps))
    fits = _TeacherFits(teacher.xs, teacher.vs, float(ridge), basis)

    out: dict[int, Schedule] = {}
    for k in budgets:
        teacher.model.reset()
        path, threshold = _select_steps(fits, grid, k, selection)
        a_rows, b_rows, x_end = _fit_coefficients(teacher, fits, path, fit, basis, float(ridge))
        cost = float((x_end.to(torch.float64) - teacher.xs[-1].to(torch.float64)).pow(2).mean())
        found = {
            "method": "olss", "olss": {"a": a_rows, "b": b_rows, "update": UPDATE},
            "indices": [int(i) for i in path], "cost": cost if np.isfinite(cost) else None,
            "selection": selection, "fit": fit, "basis": basis, "threshold": threshold, "ridge": float(ridge),
            "samples": int(noise.shape[0]), "substeps": int(substeps),
            **teacher.counts, "search_rows": teacher.model.samples, "search_calls": teacher.model.nfe,
        }
        out[k] = Schedule(grid[path], **{**(provenance or {}), **found})
    return out


def _split(coef: np.ndarray, step: int, basis: str) -> tuple[list[float], list[float]]:
    """Row ``step`` of ``a`` (length step + 1) and ``b`` from least-squares coefficients (states first)."""
    n_states = 1 if basis == "initial" else step + 1
    a = [float(c) for c in coef[:n_states]] + [0.0] * (step + 1 - n_states)
    return a, [float(c) for c in coef[n_states:]]


def _model_rows(
    model: Callable[..., Tensor], x: Tensor, t: float, cond: dict, rows: int
) -> Tensor:
    """``model(x, t)`` over ``x`` ``(B, *shape)`` in chunks of ``rows`` samples (per-sample conditioning follows)."""
    n_samples = x.shape[0]
    if rows >= n_samples:
        return model(x, _model_time(t, x), **cond)
    out = torch.empty_like(x)
    for start in range(0, n_samples, rows):
        stop = min(start + rows, n_samples)
        part = select_cond(cond, torch.arange(start, stop), n_samples) if cond else {}
        out[start:stop] = model(x[start:stop], _model_time(t, x[start:stop]), **part)
    return out


def _fit_student(
    model: Callable[..., Tensor], noise: Tensor, xs: Tensor, vs: Tensor, grid: np.ndarray, path: list[int],
    cond: dict, rows: int, ridge: float, basis_kind: str,
) -> tuple[list[list[float]], list[list[float]], Tensor]:
    """Fit the coefficients step by step along the sampler's own rollout; return ``(a, b, x_K)``."""
    n_samples = noise.shape[0]
    states = [noise.to(torch.float64).reshape(n_samples, -1)]
    vels: list[Tensor] = []
    a_rows: list[list[float]] = []
    b_rows: list[list[float]] = []
    with torch.no_grad():
        for step in range(len(path) - 1):
            if step == 0:
                v = vs[0]  # v(noise, 0): the teacher's first velocity, no extra evaluation
            else:
                v = _model_rows(model, states[-1].reshape(noise.shape).to(noise.dtype), grid[path[step]], cond, rows)
            vels.append(v.to(torch.float64).reshape(n_samples, -1))
            basis = torch.stack([*(states[:1] if basis_kind == "initial" else states), *vels])  # (C, B, D)
            basis = basis.reshape(basis.shape[0], -1)
            target = xs[path[step + 1]].to(torch.float64).reshape(1, -1)
            rhs = (basis @ target.T).cpu().numpy()
            coef = _ridge_solve(_gram(basis).cpu().numpy(), rhs, ridge)[:, 0]
            a_row, b_row = _split(coef, step, basis_kind)
            a_rows.append(a_row)
            b_rows.append(b_row)
            weights = torch.tensor(coef, dtype=torch.float64, device=basis.device)
            states.append((weights[:, None] * basis).sum(0).reshape(n_samples, -1))
    return a_rows, b_rows, states[-1].reshape(noise.shape)


def _check_coefficients(schedule: Any) -> tuple[list[list[float]], list[list[float]]]:
    if not isinstance(schedule, Schedule):
        raise ScheduleError(
            f"olss_solve needs a Schedule made by olss_schedules, got {type(schedule).__name__}."
        )
    data = schedule.meta.get("olss")
    if not isinstance(data, dict) or "a" not in data or "b" not in data:
        raise ScheduleError(
            "this schedule has no OLSS coefficients (meta['olss']); make it with olss_schedules, or sample it with euler."
        )
    k = schedule.nfe
    a, b = data["a"], data["b"]
    for name, rows in (("a", a), ("b", b)):
        ok = isinstance(rows, list) and len(rows) == k and all(
            isinstance(row, list) and len(row) == i + 1
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c) for c in row)
            for i, row in enumerate(rows)
        )
        if not ok:
            raise ScheduleError(
                f"the schedule's OLSS coefficients '{name}' must be {k} lists of finite numbers, "
                f"row k of length k + 1; the file is damaged or was edited."
            )
    return a, b


def _apply(
    model: Callable[..., Tensor], x0: Tensor, times: np.ndarray, eval_times: np.ndarray,
    a: list[list[float]], b: list[list[float]], cond: dict, rows: int, v0: Tensor | None = None,
) -> Tensor:
    """Run the OLSS update; ``v0`` (if given) replaces the first model call."""
    states = [x0.to(torch.float64)]
    vels: list[Tensor] = []
    with torch.no_grad():
        for k in range(times.size - 1):
            if k == 0 and v0 is not None:
                v = v0
            else:
                v = _model_rows(model, states[-1].to(x0.dtype), float(eval_times[k]), cond, rows)
            vels.append(v.to(torch.float64))
            # OLSS step: a least-squares combination of every earlier state and velocity.
            x = torch.zeros_like(states[0])
            for m in range(k + 1):
                x = x + a[k][m] * states[m] + b[k][m] * vels[m]
            states.append(x)
    return states[-1].to(x0.dtype)


def olss_solve(
    model: Callable[..., Tensor],
    x0: Tensor,
    schedule: Schedule,
    *,
    cond: dict | None = None,
) -> Tensor:
    """Sample along an OLSS schedule: ``x_{k+1} = sum_m a[k][m] x_m + sum_m b[k][m] v(x_m, s_m)``. K NFE.

    The model is evaluated at the schedule's evaluation times (its step times unless it
    carries its own); the combination is computed in float64 and the state cast to the
    dtype of ``x0`` for each model call.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        x0: ``(B, *shape)`` noise at ``t = 0``.
        schedule: a :class:`Schedule` from :func:`olss_schedules` (``meta["olss"]`` holds the coefficients).
        cond: conditioning passed to every model call.

    Returns:
        ``(B, *shape)`` state at ``t = 1``, dtype of ``x0``.

    Raises:
        ScheduleError: the schedule carries no (or malformed) OLSS coefficients.
    """
    a, b = _check_coefficients(schedule)
    validate_noise(x0)
    times = np.asarray(schedule.times)
    return _apply(model, x0, times, np.asarray(schedule.evaluation_times), a, b, dict(cond or {}), int(x0.shape[0]))


__all__ = ["olss_schedules", "olss_solve", "select_path"]
