"""ODE solvers on any schedule: Euler, Heun, a high-accuracy reference, and fine trajectories.

Time convention: ``t = 0`` is noise, ``t = 1`` is data, ``dx/dt = v(x, t)``. Solvers are
stateless functions ``solver(model, x0, times) -> x1`` in the style of k-diffusion's
samplers; they run under ``torch.no_grad()`` unless ``enable_grad=True``. The state keeps
the dtype of ``x0``; times stay float64 until they are cast for the model call.
Count model evaluations by wrapping the model in :class:`NFECounter`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch
from torch import Tensor

from .errors import BossflowError, ScheduleError
from .schedules import Schedule, validate_eval_times, validate_times


class NFECounter:
    """Wraps a velocity model and counts its evaluations.

    ``nfe`` counts calls (one call on a batch is one NFE, as in the literature);
    ``samples`` counts rows evaluated.

    >>> import torch, bossflow as bf
    >>> counted = NFECounter(bf.GaussianMixtureFlow(torch.zeros(1, 2), std=1.0))
    >>> _ = bf.euler(counted, torch.zeros(3, 2), bf.uniform_schedule(4))
    >>> counted.nfe, counted.samples
    (4, 12)
    """

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model = model
        self.nfe = 0
        self.samples = 0

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        self.nfe += 1
        self.samples += int(x.shape[0])
        return self.model(x, t, **cond)

    def reset(self) -> None:
        """Set both counters back to zero."""
        self.nfe = 0
        self.samples = 0


@dataclass
class Trajectory:
    """States and velocities of a sample batch along a time grid.

    Attributes:
        times: ``(N + 1,)`` float64 grid, 0 (noise) to 1 (data).
        xs: ``(N + 1, B, *shape)`` states at the grid times.
        vs: ``(N, B, *shape)`` velocities ``v(xs[i], times[i])`` at the first N grid times.
    """

    times: np.ndarray
    xs: Tensor
    vs: Tensor


Times = Union[Schedule, Tensor, np.ndarray, list]
"""What the solvers take as a schedule: a :class:`Schedule`, or its K + 1 step times."""


def schedule_times(times: Times) -> tuple[np.ndarray, np.ndarray]:
    """Step times and evaluation times of anything that describes a schedule.

    Returns:
        ``(times (K + 1,), eval_times (K,))``, both float64; ``eval_times = times[:-1]``
        unless a :class:`Schedule` carries its own.
    """
    if isinstance(times, Schedule):
        return np.asarray(times.times), np.asarray(times.evaluation_times)
    arr = validate_times(times)
    return arr, arr[:-1]


def select_cond(cond: dict, sample_index: Tensor | slice, n_samples: int) -> dict:
    """Conditioning for the rows that belong to samples ``sample_index`` (an index tensor or a slice).

    Tensors whose first dimension is ``n_samples`` are per-sample and are gathered with their
    samples; every other value (a shared embedding, a guidance scale) is passed unchanged.
    """
    out = {}
    for key, value in cond.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n_samples:
            index = sample_index if isinstance(sample_index, slice) else sample_index.to(value.device)
            out[key] = value[index]
        else:
            out[key] = value
    return out


def _model_time(value: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)


def _grad_context(enable_grad: bool) -> contextlib.AbstractContextManager:
    return torch.enable_grad() if enable_grad else torch.no_grad()


def euler(
    model: Callable[..., Tensor],
    x0: Tensor,
    times: Times,
    *,
    eval_times: Tensor | np.ndarray | list | None = None,
    cond: dict | None = None,
    enable_grad: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Euler's method along ``times``: ``x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, s_k)``. K NFE.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        x0: ``(B, *shape)`` noise at ``t = 0``.
        times: K + 1 times (a :class:`Schedule`, tensor, array or list).
        eval_times: ``(K,)`` evaluation times ``s_k``; default the schedule's own, else ``s_k = t_k``.
        cond: conditioning passed to every model call.
        enable_grad: keep the autograd graph (for differentiable rollouts).
        callback: called after each step with ``{"i", "t", "t_next", "x", "v"}``.

    Returns:
        ``(B, *shape)`` state at ``t = 1``, dtype of ``x0``.
    """
    ts, ss = schedule_times(times)
    if eval_times is not None:
        ss = validate_eval_times(eval_times, ts)
    cond = cond or {}
    x = x0
    with _grad_context(enable_grad):
        for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            v = model(x, _model_time(ss[i], x), **cond)
            # Euler step.
            x = x + (t_next - t_cur) * v
            if callback is not None:
                callback({"i": i, "t": t_cur, "t_next": t_next, "x": x, "v": v})
    return x


def heun(
    model: Callable[..., Tensor],
    x0: Tensor,
    times: Times,
    *,
    cond: dict | None = None,
    enable_grad: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Heun's second-order method (the trapezoidal corrector of Karras et al. 2022, Alg. 1) along ``times``. 2K NFE.

    Every step is corrected, the last one included: the velocity is defined at ``t = 1``
    for flow models, unlike a diffusion model's denoiser at ``sigma = 0``.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        x0: ``(B, *shape)`` noise at ``t = 0``.
        times: K + 1 times; a :class:`Schedule` with evaluation times is refused (Heun has no such notion).
        cond: conditioning passed to every model call.
        enable_grad: keep the autograd graph.
        callback: called after each step with ``{"i", "t", "t_next", "x", "v"}``.

    Returns:
        ``(B, *shape)`` state at ``t = 1``.
    """
    if isinstance(times, Schedule) and times.has_eval_times:
        raise ScheduleError(
            "Heun cannot honour a schedule's evaluation times; use euler, or a schedule without eval_times."
        )
    ts, _ = schedule_times(times)
    cond = cond or {}
    x = x0
    with _grad_context(enable_grad):
        for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
            h = t_next - t_cur
            v_cur = model(x, _model_time(t_cur, x), **cond)
            x_pred = x + h * v_cur
            # Apply 2nd order correction.
            v_next = model(x_pred, _model_time(t_next, x), **cond)
            x = x + 0.5 * h * (v_cur + v_next)
            if callback is not None:
                callback({"i": i, "t": t_cur, "t_next": t_next, "x": x, "v": 0.5 * (v_cur + v_next)})
    return x


def rk4(model: Callable[..., Tensor], x0: Tensor, times: Times, *, cond: dict | None = None) -> Tensor:
    """Classical fourth-order Runge-Kutta along ``times``. 4K NFE."""
    ts, _ = schedule_times(times)
    cond = cond or {}
    x = x0
    with torch.no_grad():
        for t_cur, t_next in zip(ts[:-1], ts[1:]):
            h = t_next - t_cur
            t_mid = t_cur + 0.5 * h
            k1 = model(x, _model_time(t_cur, x), **cond)
            k2 = model(x + 0.5 * h * k1, _model_time(t_mid, x), **cond)
            k3 = model(x + 0.5 * h * k2, _model_time(t_mid, x), **cond)
            k4 = model(x + h * k3, _model_time(t_next, x), **cond)
            x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def reference_solve(
    model: Callable[..., Tensor],
    x0: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    steps: int = 500,
    cond: dict | None = None,
) -> Tensor:
    """High-accuracy solution of the flow ODE from ``t = 0`` to ``t = 1``: the ground truth for sampler errors.

    Args:
        model: velocity model.
        x0: ``(B, *shape)`` noise.
        method: ``"dopri5"`` (adaptive Dormand-Prince through torchdiffeq, tolerances ``rtol``/``atol``)
            or ``"rk4"`` (fixed ``steps`` uniform RK4 steps, 4 NFE each).
        rtol: relative tolerance (dopri5).
        atol: absolute tolerance (dopri5).
        steps: number of RK4 steps.
        cond: conditioning.

    Returns:
        ``(B, *shape)`` state at ``t = 1``.
    """
    if method == "rk4":
        if not isinstance(steps, int) or steps < 1:
            raise BossflowError(f"steps must be a positive integer, got {steps!r}.")
        return rk4(model, x0, np.linspace(0.0, 1.0, steps + 1), cond=cond)
    if method != "dopri5":
        raise BossflowError(f"reference method must be 'dopri5' or 'rk4', got {method!r}.")
    from torchdiffeq import odeint

    cond = cond or {}

    def rhs(t: Tensor, x: Tensor) -> Tensor:
        return model(x, t.to(x.dtype).expand(x.shape[0]), **cond)

    span = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    with torch.no_grad():
        return odeint(rhs, x0, span, method="dopri5", rtol=rtol, atol=atol)[-1]


TEACHER_METHODS = ("euler", "heun")
"""Sub-step methods of a fine trajectory (:func:`fine_trajectory`'s ``method``)."""


def check_teacher_options(reference: Any, substeps: Any, batch_size: Any) -> None:
    """Check the fine-trajectory settings a search's teacher runs with.

    Raises:
        BossflowError: ``reference`` not in :data:`TEACHER_METHODS`, or ``substeps`` or
            ``batch_size`` not a positive integer.
    """
    if reference not in TEACHER_METHODS:
        raise BossflowError(f"the teacher (reference) must be 'euler' or 'heun', got {reference!r}.")
    for value, what in ((substeps, "substeps"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise BossflowError(f"{what} must be a positive integer, got {value!r}.")


def fine_trajectory(
    model: Callable[..., Tensor],
    x0: Tensor,
    grid: np.ndarray | Tensor | list,
    *,
    substeps: int = 1,
    method: str = "euler",
    cond: dict | None = None,
) -> Trajectory:
    """Integrate along a fine grid and keep every grid state and its velocity.

    With ``substeps = 1`` and ``method = "euler"`` this is BOSS's trajectory: one Euler step
    per grid interval (N NFE). ``substeps > 1`` splits every interval into that many
    Euler (or Heun) sub-steps, a more accurate reference at ``substeps`` (or ``2 substeps``)
    times the cost. ``vs[i] = v(xs[i], grid[i])`` is the first sub-step's velocity, so
    it costs nothing extra.

    Args:
        model: velocity model.
        x0: ``(B, *shape)`` noise at ``grid[0] = 0``.
        grid: ``(N + 1,)`` times, 0 to 1.
        substeps: sub-steps per grid interval.
        method: ``"euler"`` or ``"heun"`` for the sub-steps.
        cond: conditioning.

    Returns:
        :class:`Trajectory` with ``xs`` ``(N + 1, B, *shape)`` and ``vs`` ``(N, B, *shape)``.
    """
    grid = validate_times(grid, "base grid")
    if not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise BossflowError(f"substeps must be a positive integer, got {substeps!r}.")
    if method not in TEACHER_METHODS:
        raise BossflowError(f"reference trajectory method must be 'euler' or 'heun', got {method!r}.")
    cond = cond or {}
    n = grid.size - 1
    xs = torch.empty((n + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
    vs = torch.empty((n, *x0.shape), dtype=x0.dtype, device=x0.device)
    xs[0] = x0
    x = x0
    with torch.no_grad():
        for i in range(n):
            sub = np.linspace(grid[i], grid[i + 1], substeps + 1)
            for k in range(substeps):
                h = sub[k + 1] - sub[k]
                v = model(x, _model_time(sub[k], x), **cond)
                if k == 0:
                    vs[i] = v
                if method == "heun":
                    v_next = model(x + h * v, _model_time(sub[k + 1], x), **cond)
                    v = 0.5 * (v + v_next)
                x = x + h * v
            xs[i + 1] = x
    return Trajectory(times=grid, xs=xs, vs=vs)


def trajectory_batches(
    model: Callable[..., Tensor],
    noise: Tensor,
    grid: np.ndarray | Tensor | list,
    *,
    batch_size: int,
    substeps: int = 1,
    method: str = "euler",
    cond: dict | None = None,
    start: int = 0,
) -> Iterator[tuple[int, int, Trajectory]]:
    """Fine trajectories of ``noise[start:]``, ``batch_size`` samples at a time: yields ``(begin, end, Trajectory)``.

    Per-sample conditioning follows its samples (:func:`select_cond`). Streaming consumers
    (cost sums) keep one batch in memory at a time; :func:`batched_trajectory` keeps them all.
    """
    cond = cond or {}
    n_samples = int(noise.shape[0])
    for begin in range(start, n_samples, batch_size):
        end = min(begin + batch_size, n_samples)
        traj = fine_trajectory(
            model, noise[begin:end], grid, substeps=substeps, method=method, cond=select_cond(cond, slice(begin, end), n_samples)
        )
        yield begin, end, traj


def batched_trajectory(model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray | Tensor | list, *,
                       batch_size: int, **options: Any) -> Trajectory:
    """:func:`fine_trajectory` of all of ``noise``, integrated ``batch_size`` samples at a time (``xs`` ``(N + 1, B, *shape)``).

    ``options`` (``substeps``, ``method``, ``cond``) are those of :func:`trajectory_batches`.
    """
    parts = [traj for _, _, traj in trajectory_batches(model, noise, grid, batch_size=batch_size, **options)]
    if len(parts) == 1:
        return parts[0]
    return Trajectory(parts[0].times, torch.cat([t.xs for t in parts], dim=1), torch.cat([t.vs for t in parts], dim=1))
