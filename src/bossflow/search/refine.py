"""Continuous refinement of Euler step times and per-step evaluation times by gradient descent.

After LD3 (Tong et al., "Learning to Discretize Denoising Diffusion ODEs", arXiv
2405.15506, 2024), which fits the time discretisation of a few-step sampler by
back-propagating the distance between its samples and the teacher's, through the sampler
and the frozen model, with evaluation times free to move away from the step times; and
OSS (Pei et al., "Optimal Stepsize for Diffusion Sampling", arXiv 2503.21774, 2025), whose
search may make its first evaluation late on the raw noise, here ``s_0 > t_0 = 0``.

Setting (bossflow's convention: ``t = 0`` noise, ``t = 1`` data). A K-step Euler schedule
with step times ``0 = t_0 < ... < t_K = 1`` and evaluation times ``s_k`` maps a noise
``x_0`` to

    x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, s_k),

and we minimise its endpoint error against the teacher's endpoints ``y`` of the same
noises, ``L = mean_{b,d} (x_K - y)^2`` (per dimension, averaged over the search noises).

Parametrisation (unconstrained parameters, valid schedules by construction):

* step sizes ``h = softmax(a)`` of K logits ``a``; ``t_k = h_0 + ... + h_{k-1}`` for
  ``0 < k < K``, ``t_0 = 0`` and ``t_K = 1`` exactly (the last step is ``1 - t_{K-1}``).
  Times are strictly increasing unless a step underflows; such an iterate is never returned.
* evaluation times ``s_k = t_k + tanh(b_k) (1 - t_k)`` for ``b_k >= 0`` and
  ``s_k = t_k + tanh(b_k) t_k`` for ``b_k < 0``: each evaluation time may move anywhere in
  ``[0, 1]`` (as in LD3), stays there, equals ``t_k`` at ``b_k = 0``, and follows its step
  time when that moves. At ``t_0 = 0`` only a late start ``s_0 > 0`` is possible.

Search. The objective has many local minima once evaluation times are free (on the 2-D
mixture a late first evaluation, ``s_0`` near 1, is a different basin from ``s_0 = t_0``),
so the search is a small deterministic multi-start: every start given, plus, with
evaluation times, a copy of it with ``s_0 = c`` for each ``c`` in ``late_starts`` (default
0.9 and 0.99: on the 2-D mixture the best schedules from 6 NFE on evaluate first at
``s_0`` of about 0.99, a basin that starts at 0.9 rarely reach; adding 0.99 to auto's
refinement cut its search-set RMSE at 6, 8 and 10 NFE from 0.0084, 0.0064, 0.0034 to
0.0032, 0.0023, 0.0018). Each
candidate gets ``screen_steps`` L-BFGS evaluations (skipped when there is one candidate);
the best point seen continues for ``steps`` more. The best iterate seen is kept, and the
result is checked with :func:`bossflow.euler` against every start: it is never worse on
the search noises. L-BFGS (strong-Wolfe line search) was chosen over Adam by measurement:
from uniform starts with evaluation times, 256 noises and 200 evaluations, it reached a
search-set RMSE of 0.0036 (2-D mixture, K = 8) and 0.0072 (64-D, K = 8) where the best
Adam learning rate of 0.01, 0.03, 0.1 and 0.3 reached 0.0074 and 0.0111.

Cost, in model rows (one row = one sample through the model), for B noises, K steps and
E loss evaluations (about ``candidates * screen_steps + steps``, fewer when L-BFGS
converges): ``E K B`` forward and ``E K B`` backward rows (a backward row costs about one
to two forward rows), plus one check rollout of ``K B`` rows per start and one for the
result, plus the teacher (``bossflow.reference_solve``, adaptive: about 120-150 rows per
noise on the mixtures) when ``target`` is not given.

Least-squares last step (``last_step="lstsq"``). Along an Euler schedule
``x_K = x_0 + sum_k h_k v_k``; a last step ``x_K = c_0 x_0 + sum_k c_{k+1} v_k`` with free
coefficients contains it (OLSS's final fit, Duan et al. 2023). Fitting the coefficients
after the times (``bossflow.search.auto.refit_last_step``) leaves the times tuned for Euler's
last step; here they are fitted for the least-squares one: the objective is

    J(theta) = min_c  || F(theta)^T c - y ||^2 + ridge sum_j G_jj (c_j - c^E_j)^2,

with ``F`` the rows ``x_0, v_0, ..., v_{K-1}`` of the rollout at step and evaluation
parameters ``theta``, ``G = F F^T`` and ``c^E = (1, h_0, ..., h_{K-1})`` (the ridge pulls
towards Euler relative to each column's scale, see :func:`last_step_coefficients`). The
inner minimum is a (K + 1)-unknown linear solve; by the envelope theorem the gradient of
``J`` is that of the bracket at the optimal ``c`` held fixed, so one evaluation costs
what an Euler one does when the noises are one chunk, and one more forward pass otherwise
(statistics first, then gradients chunk by chunk). This is variable projection (Golub and
Pereyra 1973). From a refined Euler schedule, 30 evaluations more (``auto``'s ``refined-ls``) took the
fresh-noise RMSE at 2 NFE from 0.088 (last step refitted after Euler-fitted times) to 0.040
on the 2-D mixture, from 0.159 to 0.137 on the digits teacher and from 0.257 to 0.244 on
Fashion-MNIST, but from 0.0154 to 0.0167 at 4 NFE on the 2-D mixture
(``benchmarks/bench_auto.py``, ``benchmarks/bench_effort.py``). Continuing it on more noises
for 80 evaluations overfitted at 8 NFE (0.0022 to 0.0055 on fresh noises), which is why
``auto`` fits it on the fitting noises only and refits just the coefficients on every noise.

What is simplified, compared with LD3: plain endpoint MSE (no slack relaxation, no
LPIPS), full-batch deterministic L-BFGS for a fixed number of evaluations instead of
stochastic mini-batches over epochs, the teacher is a high-accuracy ODE solution rather
than a many-step sampler, and only Euler steps are refined. With few search noises and
free evaluation times the fit can overfit: on the 64-D mixture with 256 noises the
search-set RMSE falls far below the held-out RMSE (rare samples that commit to the wrong
component dominate the latter); more search noises close that gap.

Measured
--------
Screening on few noises is cheaper but can rank wrongly: on the mixtures, screening on
32-64 of 256 noises (``screen_samples``) picked worse basins. The chunk size
(``batch_size``) changes the result only through floating-point rounding, but L-BFGS can
amplify it: on the 2-D mixture at 8-10 NFE, batch sizes 256 and 128 gave step and
evaluation times up to 0.03 apart, of nearly the same error (fresh-noise RMSE within 5 %).

Result meta
-----------
:func:`refine_schedule`'s schedules carry ``start`` (method of the start
the result came from) and ``late_start`` (its ``s_0`` when a late-start candidate won,
else ``None``); ``improved`` (``False`` when no refined point beat the best start, which
is then returned as is); ``start_loss`` (the best start's endpoint MSE) and ``loss``
(the result's), both per dimension on the search noises, measured with
:func:`bossflow.euler`; ``steps``, ``screen_steps``, ``candidates``, ``evaluations``,
``samples``; ``model_calls`` and ``model_rows`` (forward, counted with
:class:`bossflow.NFECounter`, checks and teacher included), ``backward_rows`` (rows
back-propagated through the model) and ``teacher_rows`` (0 when ``target`` is given);
under ``torch.distributed`` these counts are summed over the processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.distributed import all_reduce_sum_float64, rank, shard_range, world_size
from ..core.errors import BossflowError, ScheduleError
from ..core.noise import validate_noise
from ..core.schedules import Schedule
from ..core.solvers import NFECounter, euler, reference_solve, select_cond
from .olss import UPDATE
from .registry import SEARCHES, WITH_PROGRESS


def schedule_from_params(logits: Tensor, offsets: Tensor | None) -> tuple[Tensor, Tensor]:
    """Step times and evaluation times from unconstrained parameters (see the module docstring).

    Args:
        logits: ``(K,)`` float64 step-size logits.
        offsets: ``(K,)`` float64 evaluation-time parameters, or ``None`` for ``s_k = t_k``.

    Returns:
        ``(times (K + 1,), eval_times (K,))``, float64, differentiable in both inputs.

    Example:
        >>> t, s = schedule_from_params(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
        >>> t.tolist(), s.tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.5])
    """
    inner = torch.cumsum(torch.softmax(logits, dim=0), dim=0)[:-1]
    one = torch.ones(1, dtype=logits.dtype, device=logits.device)
    times = torch.cat([torch.zeros_like(one), inner, one])
    starts = times[:-1]
    if offsets is None:
        return times, starts
    r = torch.tanh(offsets)
    room = torch.where(r >= 0, 1.0 - starts, starts)
    return times, (starts + r * room).clamp(0.0, 1.0)


def params_from_schedule(times: np.ndarray, eval_times: np.ndarray) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`schedule_from_params` up to rounding: ``(logits (K,), offsets (K,))``, float64.

    An evaluation time at the very edge of its room (``s_k = 1``, or ``s_k = 0`` with
    ``t_k > 0``) maps to a large but finite offset.
    """
    times = np.asarray(times, dtype=np.float64)
    eval_times = np.asarray(eval_times, dtype=np.float64)
    logits = torch.from_numpy(np.log(np.diff(times)))
    starts = times[:-1]
    delta = eval_times - starts
    room = np.where(delta >= 0, 1.0 - starts, starts)
    ratio = np.divide(delta, room, out=np.zeros_like(delta), where=room > 0)
    return logits, torch.from_numpy(np.arctanh(np.clip(ratio, -1.0 + 1e-12, 1.0 - 1e-12)))


def _params_on(schedule: Schedule, device: torch.device) -> list[Tensor]:
    """L-BFGS's parameters ``[logits (K,), offsets (K,)]`` of a K-step ``schedule``, float64 on ``device``."""
    logits, offsets = params_from_schedule(schedule.times, schedule.evaluation_times)
    return [logits.to(device), offsets.to(device)]


def last_step_coefficients(gram: np.ndarray, rhs: np.ndarray, start: np.ndarray, ridge: float) -> np.ndarray:
    """Least-squares coefficients of a last step, pulled towards ``start`` by a ridge on unit-scaled columns.

    Minimises ``|| F^T c - y ||^2 + ridge sum_j G_jj (c_j - start_j)^2`` for basis rows ``F``
    (``gram = F F^T``, ``rhs = F y``): the ridge is relative to each column's scale, so it
    means the same for every model and dimension.

    Args:
        gram: ``(C, C)`` float64 Gram matrix of the basis.
        rhs: ``(C,)`` basis times target.
        start: ``(C,)`` coefficients the ridge pulls towards (Euler's: ``1, h_0, ..., h_{K-1}``).
        ridge: ``>= 0``.

    Returns:
        ``(C,)`` float64 coefficients.
    """
    scale = np.sqrt(np.clip(np.diagonal(gram), 0.0, None))
    scale = np.where(scale > 0, scale, 1.0)
    unit = gram / (scale[:, None] * scale[None, :])
    size = gram.shape[0]
    u = np.linalg.solve(unit + (ridge + 1e-12) * np.eye(size), rhs / scale + ridge * scale * start)
    return u / scale


def _euler_start_coefficients(times: Tensor) -> Tensor:
    """Euler's last-step coefficients on ``x_0, v_0, ..., v_{K-1}``: ``1, h_0, ..., h_{K-1}`` (differentiable)."""
    return torch.cat([torch.ones(1, dtype=times.dtype, device=times.device), times[1:] - times[:-1]])


@dataclass
class _Problem:
    """The search-set objective: the counted model, chunks of noises and targets, backward rows spent.

    ``rows`` is the chunk size (``None``: the noises split evenly over the processes, one chunk
    each). Under ``torch.distributed`` each rank evaluates a contiguous share of the chunks;
    the per-chunk sums are all-reduced into one table and added in chunk order, so every rank
    gets the value one process gets with the same chunks, bit for bit.
    """

    model: NFECounter
    noise: Tensor
    target: Tensor
    cond: dict
    rows: int | None
    backward_rows: int = 0
    last_step: str = "euler"
    ridge: float = 1e-4
    _fits: dict[bytes, tuple[float, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.noise.shape[0]
        rows = self.rows or -(-n // world_size())
        chunks = [(a, min(a + rows, n)) for a in range(0, n, rows)]
        self.n_chunks = len(chunks)
        self.first, last = shard_range(self.n_chunks, rank(), world_size())
        self.chunks = chunks[self.first:last]
        self.chunk_cond = [(select_cond(self.cond, torch.arange(a, b), n) if self.cond else {}) for a, b in self.chunks]
        self.scale = 1.0 / self.noise.numel()

    def _chunk_order_sum(self, partial: list[np.ndarray], width: int) -> np.ndarray:
        """Add the per-chunk rows of every rank in chunk order (the order one process adds them in)."""
        table = np.zeros((self.n_chunks, width), dtype=np.float64)
        if partial:
            table[self.first:self.first + len(partial)] = np.stack(partial)
        if world_size() > 1:
            table = all_reduce_sum_float64(table)  # each row comes from one rank, the others add zeros: exact
        total = np.zeros(width, dtype=np.float64)
        for row in table:
            total += row
        return total

    def loss_and_grad(self, params: list[Tensor], with_offsets: bool) -> tuple[float, list[Tensor]]:
        """Search-set loss at ``params`` and its gradient, summed over chunks (fixed order)."""
        if self.last_step == "lstsq":
            return self._lstsq_loss_and_grad(params, with_offsets)
        partial = []
        for (a, b), kw in zip(self.chunks, self.chunk_cond):
            with torch.enable_grad():
                times, evals = schedule_from_params(params[0], params[1] if with_offsets else None)
                x = self.noise[a:b]
                for k in range(times.numel() - 1):
                    t_model = evals[k].to(x.dtype).expand(x.shape[0])
                    v = self.model(x, t_model, **kw)
                    if x.requires_grad and not v.requires_grad:  # a t-independent model is fine, a detached one is not
                        raise BossflowError(
                            "the model's output does not depend differentiably on its input; "
                            "refinement needs a model torch autograd can differentiate."
                        )
                    # Euler step.
                    x = x + (times[k + 1] - times[k]).to(x.dtype) * v
                diff = x.to(torch.float64) - self.target[a:b].to(torch.float64)
                loss = diff.pow(2).sum() * self.scale
            partial.append(self._chunk_row(loss, params, b - a))
        return self._summed(partial, params)

    def _chunk_row(self, loss: Tensor, params: list[Tensor], rows: int) -> np.ndarray:
        """``[loss, gradient...]`` of one chunk of ``rows`` noises, back-propagated through the K steps."""
        # No parameter reaches the loss only for K = 1 without evaluation times: nothing to fit.
        if loss.requires_grad:
            part = torch.autograd.grad(loss, params, allow_unused=True)
            self.backward_rows += rows * params[0].numel()
        else:
            part = [None] * len(params)
        flat = [np.zeros(p.numel()) if g is None else g.detach().reshape(-1).cpu().numpy() for g, p in zip(part, params)]
        return np.concatenate([[float(loss.detach())], *flat])

    def _summed(self, partial: list[np.ndarray], params: list[Tensor]) -> tuple[float, list[Tensor]]:
        """The chunks' rows added in chunk order: ``(loss, gradient per parameter)``."""
        sizes = [p.numel() for p in params]
        summed = self._chunk_order_sum(partial, 1 + sum(sizes))
        pieces = torch.from_numpy(summed[1:]).split(sizes)
        return float(summed[0]), [piece.reshape(p.shape).to(p) for piece, p in zip(pieces, params)]

    def _velocities(self, times: Tensor, evals: Tensor, x: Tensor, kw: dict) -> list[Tensor]:
        """The K velocities of the Euler rollout from ``x`` along ``times``, evaluated at ``evals``."""
        velocities = []
        for k in range(times.numel() - 1):
            v = self.model(x, evals[k].to(x.dtype).expand(x.shape[0]), **kw)
            velocities.append(v)
            if k < times.numel() - 2:  # the last step's update is the least-squares one
                x = x + (times[k + 1] - times[k]).to(x.dtype) * v
        return velocities

    def _basis(self, times: Tensor, evals: Tensor, chunk: int) -> Tensor:
        """``(K + 1, rows * D)`` float64 rows ``x_0, v_0, ..., v_{K-1}`` of chunk ``chunk``."""
        (a, b), kw = self.chunks[chunk], self.chunk_cond[chunk]
        x = self.noise[a:b]
        rows = [x, *self._velocities(times, evals, x, kw)]
        return torch.stack([r.reshape(-1).to(torch.float64) for r in rows])

    def _lstsq_stats(self, params: list[Tensor], with_offsets: bool, keep: bool) -> tuple[np.ndarray, list[Any]]:
        """Gram matrix, right-hand side and ``|y|^2`` over every chunk, one row per quantity, in chunk order.

        With ``keep`` (one chunk in all) the chunk's basis keeps its graph for the gradient.
        """
        kept = []
        partial = []
        for i, (a, b) in enumerate(self.chunks):
            with torch.set_grad_enabled(keep):
                times, evals = schedule_from_params(params[0], params[1] if with_offsets else None)
                basis = self._basis(times, evals, i)
            flat = basis.detach()
            y = self.target[a:b].reshape(-1).to(torch.float64)
            partial.append(np.concatenate([
                (flat @ flat.T).reshape(-1).cpu().numpy(), (flat @ y).cpu().numpy(), [float(y @ y)]]))
            if keep:
                kept.append((times, basis))
        size = params[0].numel() + 1
        return self._chunk_order_sum(partial, size * size + size + 1), kept

    @staticmethod
    def _lstsq_system(stats: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """``(gram, rhs, |y|^2, Euler's coefficients)`` of the least-squares last step from the summed statistics."""
        size = times.size
        gram = stats[: size * size].reshape(size, size)
        rhs = stats[size * size : size * size + size]
        return gram, rhs, float(stats[size * size + size]), np.concatenate([[1.0], np.diff(times)])

    def _lstsq_loss_and_grad(self, params: list[Tensor], with_offsets: bool) -> tuple[float, list[Tensor]]:
        """Variable projection: the loss with the least-squares last step at its optimum, and its gradient.

        The coefficients minimise the ridge objective for the current times, so by the envelope
        theorem the gradient of the minimum is the gradient at those coefficients held fixed. Two
        passes (statistics, then gradients chunk by chunk) unless everything is one chunk, whose
        graph is kept from the first pass.
        """
        keep = len(self.chunks) == 1  # this process's only chunk: its graph fits as the plain loss's does
        stats, kept = self._lstsq_stats(params, with_offsets, keep)
        with torch.no_grad():
            times_now, _ = schedule_from_params(params[0], None)
        gram, rhs, _, euler_start = self._lstsq_system(stats, times_now.cpu().numpy())
        coef = torch.from_numpy(last_step_coefficients(gram, rhs, euler_start, self.ridge)).to(self.noise.device)
        partial = []
        for i, (a, b) in enumerate(self.chunks):
            with torch.enable_grad():
                if keep:
                    times, basis = kept[i]
                else:
                    times, evals = schedule_from_params(params[0], params[1] if with_offsets else None)
                    basis = self._basis(times, evals, i)
                y = self.target[a:b].reshape(-1).to(torch.float64)
                start = _euler_start_coefficients(times)
                residual = coef @ basis - y
                # This chunk's share of the ridge term sum_j G_jj (c_j - start_j)^2.
                penalty = (basis.pow(2).sum(1) * (coef - start).pow(2)).sum()
                loss = (residual.pow(2).sum() + self.ridge * penalty) * self.scale
            partial.append(self._chunk_row(loss, params, b - a))
        return self._summed(partial, params)

    def lstsq_fit(self, schedule: Schedule) -> tuple[float, np.ndarray]:
        """``(objective, coefficients)`` of the least-squares last step along ``schedule`` (no gradients).

        Remembered per schedule: the check of the result and its coefficients share one pass.
        """
        key = schedule.times.tobytes() + schedule.evaluation_times.tobytes()
        if key not in self._fits:
            stats, _ = self._lstsq_stats(_params_on(schedule, self.noise.device), True, False)
            gram, rhs, yy, start = self._lstsq_system(stats, schedule.times)
            coef = last_step_coefficients(gram, rhs, start, self.ridge)
            value = coef @ gram @ coef - 2.0 * coef @ rhs + yy + self.ridge * float(np.diagonal(gram) @ (coef - start) ** 2)
            self._fits[key] = (max(float(value), 0.0) * self.scale, coef)
        return self._fits[key]

    def exact_loss(self, schedule: Schedule) -> float:
        """Endpoint MSE of :func:`bossflow.euler` along ``schedule``: the number a user measures
        (with ``last_step="lstsq"``, the objective with the least-squares last step)."""
        if self.last_step == "lstsq":
            return self.lstsq_fit(schedule)[0]
        partial = []
        for (a, b), kw in zip(self.chunks, self.chunk_cond):
            x = euler(self.model, self.noise[a:b], schedule, cond=kw)
            partial.append(np.array([float((x.to(torch.float64) - self.target[a:b].to(torch.float64)).pow(2).sum())]))
        return float(self._chunk_order_sum(partial, 1)[0]) * self.scale


def _lbfgs(
    problem: _Problem, params: list[Tensor], steps: int, lr: float, with_offsets: bool, tick: Callable[[], None]
) -> tuple[float, list[Tensor] | None, int]:
    """Run L-BFGS for ``steps`` evaluations; return ``(best loss, best params, evaluations)``.

    Torch's L-BFGS checks its evaluation budget between line searches, so a run may end a few
    evaluations past ``steps``; it ends earlier when the loss stops changing.
    """
    params = [p.detach().clone().requires_grad_(True) for p in params]
    best: dict[str, Any] = {"loss": math.inf, "params": None}
    evaluations = 0
    opt = torch.optim.LBFGS(
        params,
        lr=lr,
        max_iter=steps,
        max_eval=steps,
        history_size=20,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        tick()
        loss, grads = problem.loss_and_grad(params, with_offsets)
        for p, g in zip(params, grads):
            p.grad = g
        if math.isfinite(loss) and loss < best["loss"]:
            best["loss"], best["params"] = loss, [p.detach().clone() for p in params]
        return torch.tensor(loss, dtype=torch.float64)

    opt.step(closure)
    return best["loss"], best["params"], evaluations


def _check_count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BossflowError(f"{what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _as_starts(schedule: Any) -> list[Schedule]:
    if isinstance(schedule, Schedule):
        return [schedule]
    if isinstance(schedule, (list, tuple)) and schedule and all(isinstance(s, Schedule) for s in schedule):
        starts = list(schedule)
        if len({s.nfe for s in starts}) != 1:
            raise ScheduleError(
                f"all start schedules must have the same number of steps, got NFE {[s.nfe for s in starts]}."
            )
        return starts
    return [Schedule(schedule, method="custom")]


def _checked_options(
    steps: Any, screen_steps: Any, lr: Any, late_starts: Any, last_step: Any, ridge: Any, batch_size: Any
) -> tuple[int, int, list[float], int | None]:
    """The scalar options of :func:`refine_schedule`, checked in a fixed order (the first bad one raises).

    Returns:
        ``(steps, screen_steps, late, rows)``: the evaluation counts, the late starts as floats
        in ``[0, 1]`` and the chunk size (``None``: one chunk per process).

    Raises:
        BossflowError: the first option out of its range.
    """
    steps = _check_count(steps, "steps", 1)
    screen_steps = _check_count(screen_steps, "screen_steps", 1)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise BossflowError(f"lr must be a positive number, got {lr!r}.")
    try:
        late = [float(c) for c in late_starts]
    except (TypeError, ValueError):
        raise BossflowError(f"late_starts must be a list of times in [0, 1], got {late_starts!r}.") from None
    if not all(0.0 <= c <= 1.0 for c in late):
        raise BossflowError(f"late_starts must be times in [0, 1], got {late!r}.")
    if last_step not in ("euler", "lstsq"):
        raise BossflowError(f"last_step must be 'euler' or 'lstsq', got {last_step!r}.")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise BossflowError(f"ridge must be a finite number >= 0, got {ridge!r}.")
    rows = None if batch_size is None else _check_count(batch_size, "batch_size", 1)
    return steps, screen_steps, late, rows


def _checked_starts(schedule: Any, eval_times: bool, target: Any, noise: Tensor) -> list[Schedule]:
    """The K-step start schedules, checked against ``eval_times``; ``target``, if given, checked against ``noise``.

    Raises:
        ScheduleError: a malformed start, starts of different lengths, or a start with evaluation
            times when ``eval_times=False``.
        BossflowError: ``target`` is not a tensor of the ``(B, *shape)`` shape of ``noise``.
    """
    starts = _as_starts(schedule)
    if not eval_times and any(s.has_eval_times for s in starts):
        raise ScheduleError(
            "a start schedule carries evaluation times but eval_times=False; pass eval_times=True "
            "or starts without evaluation times."
        )
    if target is not None and (not isinstance(target, Tensor) or tuple(target.shape) != tuple(noise.shape)):
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise BossflowError(
            f"target must be a tensor shaped like noise {tuple(noise.shape)} "
            f"(the teacher's endpoints of the same noises), got {got}."
        )
    return starts


def _teacher_and_problems(
    model: Callable[..., Tensor],
    noise: Tensor,
    target: Tensor | None,
    cond: dict,
    rows: int | None,
    screen_samples: Any,
    last_step: str,
    ridge: float,
) -> tuple[NFECounter, _Problem, _Problem, int]:
    """The teacher target and the objectives: on every noise, and on the screening noises.

    Args:
        noise: ``(B, *shape)`` search noises at ``t = 0``.
        target: ``(B, *shape)`` teacher endpoints at ``t = 1``, or ``None``: solved here with
            :func:`bossflow.reference_solve` through the counted model.

    Returns:
        ``(counted model, problem, screen_problem, teacher_rows)``; ``screen_problem`` is
        ``problem`` itself unless ``screen_samples`` is below B, then it holds the first
        ``screen_samples`` noises.

    Raises:
        BossflowError: ``screen_samples`` is not an integer >= 1.
    """
    n_samples = int(noise.shape[0])
    counted = NFECounter(model)
    if target is None:
        target = reference_solve(counted, noise, cond=cond or None)
    teacher_rows = counted.samples
    target = target.detach().to(device=noise.device)
    problem = _Problem(counted, noise, target, cond, rows, last_step=last_step, ridge=ridge)
    if screen_samples is None or _check_count(screen_samples, "screen_samples", 1) >= n_samples:
        return counted, problem, problem, teacher_rows
    sub = torch.arange(screen_samples)
    screen_problem = _Problem(
        counted, noise[:screen_samples], target[:screen_samples],
        select_cond(cond, sub, n_samples) if cond else {}, None if rows is None else min(rows, screen_samples),
        last_step=last_step, ridge=ridge,
    )
    return counted, problem, screen_problem, teacher_rows


def _candidates(starts: list[Schedule], eval_times: bool, late: list[float]) -> list[tuple[Schedule, float | None]]:
    """Each start and, with evaluation times, its late-start copies (``s_0 = c`` for ``c`` in ``late``).

    Returns:
        ``(schedule, c)`` pairs in order, ``c = None`` for a start as given; duplicates dropped.
    """
    candidates: list[tuple[Schedule, float | None]] = []
    seen: set[bytes] = set()
    for s in starts:
        variants = [(s.evaluation_times, None)]
        if eval_times:
            variants += [(np.concatenate([[c], s.evaluation_times[1:]]), c) for c in late]
        for ev, c in variants:
            key = s.times.tobytes() + np.asarray(ev, dtype=np.float64).tobytes()
            if key not in seen:
                seen.add(key)
                candidates.append((Schedule(s.times, ev, **s.meta), c))
    return candidates


def _search(
    problem: _Problem,
    screen_problem: _Problem,
    candidates: list[tuple[Schedule, float | None]],
    steps: int,
    screen_steps: int,
    lr: float,
    eval_times: bool,
    progress: bool,
) -> tuple[list[Tensor], int, int]:
    """Screen the candidates, then continue the best one by L-BFGS on every noise, under one progress bar.

    Returns:
        ``(params, winner, evaluations)``: the best parameters ``[logits (K,), offsets (K,)]``
        (the winner's screened point when the final run found no finite loss or, screened on
        every noise, no lower one), the index of the winning candidate and the loss evaluations spent.
    """
    from tqdm.auto import tqdm

    total_evals = steps + (screen_steps * len(candidates) if len(candidates) > 1 else 0)
    nfe = candidates[0][0].nfe
    # Transient: the bar usually sits under a caller's bar over budgets or stages.
    with tqdm(total=total_evals, desc=f"refine K={nfe}", unit="eval", leave=False, disable=not progress) as bar:

        def tick() -> None:
            # A line search may run a few evaluations past its budget: grow the total, not past 100 %.
            if bar.total is not None and bar.n >= bar.total:
                bar.total = bar.n + 1
            bar.update(1)

        found, evaluations = _screen(screen_problem, candidates, screen_steps, lr, eval_times, tick)
        winner = min(range(len(found)), key=lambda i: (found[i][0], i))
        loss, best, used = _lbfgs(problem, found[winner][1], steps, lr, eval_times, tick)
    if best is None or (screen_problem is problem and loss > found[winner][0]):
        best = found[winner][1]
    return best, winner, evaluations + used


def _screen(
    problem: _Problem,
    candidates: list[tuple[Schedule, float | None]],
    screen_steps: int,
    lr: float,
    eval_times: bool,
    tick: Callable[[], None],
) -> tuple[list[tuple[float, list[Tensor]]], int]:
    """``screen_steps`` L-BFGS evaluations for each candidate; none when there is only one.

    Returns:
        ``(found, evaluations)``: per candidate its best loss (``inf`` when not screened) and
        parameters ``[logits (K,), offsets (K,)]`` (its start when no evaluation was finite).
    """
    found: list[tuple[float, list[Tensor]]] = []
    evaluations = 0
    for cand, _ in candidates:
        params = _params_on(cand, problem.noise.device)
        if len(candidates) == 1:
            found.append((math.inf, params))
        else:
            loss, best, used = _lbfgs(problem, params, screen_steps, lr, eval_times, tick)
            evaluations += used
            found.append((loss, best if best is not None else params))
    return found, evaluations


def _checked_result(
    problem: _Problem, params: list[Tensor], eval_times: bool, start: Schedule, start_loss: float
) -> tuple[Schedule, float, bool]:
    """The schedule at ``params`` if, checked the way a user runs it, it beats ``start``; else ``start``.

    Returns:
        ``(schedule, loss, improved)``: the refined schedule (``(K + 1,)`` times from 0, noise,
        to 1, data; ``(K,)`` evaluation times or ``None``) and its :meth:`_Problem.exact_loss`
        when it beats ``start_loss`` with strictly increasing times, else ``start``.
    """
    with torch.no_grad():
        times, evals = schedule_from_params(params[0], params[1] if eval_times else None)
    t_np = times.cpu().numpy()
    if np.all(np.diff(t_np) > 0):
        refined = Schedule(t_np, np.clip(evals.cpu().numpy(), 0.0, 1.0) if eval_times else None)
        refined_loss = problem.exact_loss(refined)
        if refined_loss < start_loss:
            return refined, refined_loss, True
    return start, start_loss, False


def _lstsq_meta(problem: _Problem, result: Schedule) -> dict[str, Any]:
    """With ``last_step="lstsq"``, the result's meta ``last_step``, ``ridge`` and ``olss`` (its fitted update); else none."""
    if problem.last_step != "lstsq":
        return {}
    update = _lstsq_update(result.times, problem.lstsq_fit(result)[1])
    return {"last_step": problem.last_step, "ridge": problem.ridge, "olss": update}


def _work_done(counted: NFECounter, problem: _Problem, screen_problem: _Problem, teacher_rows: int) -> dict[str, int]:
    """Meta ``model_calls``, ``model_rows``, ``backward_rows``, ``teacher_rows``, summed over the processes.

    Each process solved the teacher itself when it was not given.
    """
    backward = problem.backward_rows + (screen_problem.backward_rows if screen_problem is not problem else 0)
    calls, rows, backward, teacher_rows = (
        int(v) for v in all_reduce_sum_float64([counted.nfe, counted.samples, backward, teacher_rows])
    )
    return {"model_calls": calls, "model_rows": rows, "backward_rows": backward, "teacher_rows": teacher_rows}


def refine_schedule(
    model: Callable[..., Tensor],
    noise: Tensor,
    schedule: Schedule | Sequence[Schedule] | Any,
    *,
    target: Tensor | None = None,
    eval_times: bool = True,
    steps: int = 200,
    screen_steps: int = 50,
    late_starts: Sequence[float] = (0.9, 0.99),
    lr: float = 1.0,
    screen_samples: int | None = None,
    cond: dict | None = None,
    batch_size: int | None = None,
    last_step: str = "euler",
    ridge: float = 1e-4,
    progress: bool = False,
) -> Schedule:
    """Refine a K-step Euler schedule by L-BFGS on its endpoint error (LD3-style, with OSS's late start).

    See the module docstring for the objective, the parametrisation, the multi-start, the
    cost and what is simplified. Deterministic: every evaluation uses the whole search set
    (in fixed chunks of ``batch_size`` rows whose gradients are summed) and nothing is
    random, so the same inputs give the same schedule. Under ``torch.distributed``
    (``torchrun``; every rank passes the same arguments) the ranks split the chunks of every
    evaluation and add the chunks' float64 sums in the order one process does: N processes
    return, bit for bit, the schedule one process returns with the same ``batch_size`` (the
    teacher, when not given, is solved whole on every rank).

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape ``(B,)``, 0 = noise, 1 = data;
            it must be differentiable in ``x`` and ``t``. Its parameters get no gradients.
        noise: ``(B, *shape)`` search noises at ``t = 0``; the rollout runs in their dtype
            (float64 noise: float64 throughout), the loss in float64, the schedule parameters in float64.
        schedule: the start: a :class:`Schedule` (uniform, Bellman, global-DP, ...), K + 1 times,
            or a list of K-step Schedules to start from each (the best is continued).
        target: ``(B, *shape)`` teacher endpoints of ``noise``. Default
            ``bossflow.reference_solve(model, noise)`` (dopri5, rtol = atol = 1e-6); pass it to
            reuse one teacher solve across budgets or to fit another teacher.
        eval_times: also fit per-step evaluation times ``s_k``; ``False`` keeps ``s_k = t_k``.
        steps: L-BFGS loss-and-gradient evaluations for the final run (each K forward and
            K backward passes over the B noises).
        screen_steps: evaluations given to each candidate before the best is continued; unused
            when there is a single candidate.
        late_starts: with ``eval_times``, extra candidates: each start with its first evaluation
            time set to each of these values (OSS's late start). Values in [0, 1]; ``()`` for none.
        lr: L-BFGS initial step length in parameter space.
        screen_samples: screen the candidates on the first this many noises only (default: all);
            the final run always uses every noise (module docstring: "Measured").
        cond: conditioning for every model call; tensors whose first dimension is B follow their samples.
        batch_size: rows per forward/backward pass (default B; under ``torch.distributed``
            B split evenly over the processes); it changes the result only through rounding,
            which L-BFGS can amplify (module docstring: "Measured").
        last_step: ``"euler"`` (default) or ``"lstsq"``: fit the times for a last step
            ``x_K = a x_0 + sum_k b_k v_k`` whose coefficients are refitted by least squares
            for every candidate times (variable projection; see "Least-squares last step" in
            the module docstring). The result then carries those coefficients (meta ``olss``)
            and is sampled with :func:`bossflow.search.sample_with`.
        ridge: with ``last_step="lstsq"``, the pull of the coefficients towards Euler's
            (:func:`last_step_coefficients`), ``>= 0``.
        progress: show a tqdm progress bar over loss evaluations (cleared when done).

    Returns:
        :class:`Schedule` with the refined ``times`` and ``eval_times`` (``None`` when
        ``eval_times=False``) and ``method="refined"``; its other meta keys are listed in the
        module docstring ("Result meta").

    Raises:
        BossflowError: bad noise, target, steps, lr or late starts, or a model autograd cannot differentiate.
        ScheduleError: a malformed start, starts of different lengths, or a start with evaluation
            times when ``eval_times=False``.

    Example:
        >>> import torch, bossflow as bf
        >>> model = bf.GaussianMixtureFlow(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), std=0.3)
        >>> noise = bf.gaussian_noise(32, (2,), seed=0, dtype=torch.float64)
        >>> s = refine_schedule(model, noise, bf.uniform_schedule(2), steps=20, screen_steps=10)
        >>> s.nfe, s.meta["loss"] <= s.meta["start_loss"]
        (2, True)
    """
    noise = validate_noise(noise)
    steps, screen_steps, late, rows = _checked_options(steps, screen_steps, lr, late_starts, last_step, ridge, batch_size)
    starts = _checked_starts(schedule, eval_times, target, noise)
    counted, problem, screen_problem, teacher_rows = _teacher_and_problems(
        model, noise, target, dict(cond or {}), rows, screen_samples, last_step, float(ridge)
    )
    candidates = _candidates(starts, eval_times, late)
    start_losses = [problem.exact_loss(s) for s in starts]
    best_start = int(np.argmin(start_losses))
    params, winner, evaluations = _search(problem, screen_problem, candidates, steps, screen_steps, lr, eval_times, progress)
    result, result_loss, improved = _checked_result(problem, params, eval_times, starts[best_start], start_losses[best_start])
    origin, late_start = candidates[winner] if improved else (starts[best_start], None)
    lstsq = _lstsq_meta(problem, result)
    return Schedule(
        result.times, result.evaluation_times if eval_times else None, method="refined",
        start=origin.meta.get("method", "custom"), late_start=late_start, improved=improved,
        start_loss=start_losses[best_start], loss=result_loss,
        steps=steps, screen_steps=screen_steps, candidates=len(candidates), evaluations=evaluations,
        samples=int(noise.shape[0]), **_work_done(counted, problem, screen_problem, teacher_rows),
        screen_samples=screen_problem.noise.shape[0], **lstsq,
    )


def euler_update(times: np.ndarray) -> tuple[list[list[float]], list[list[float]]]:
    """Rows ``a``, ``b`` of Euler's update along ``times`` in OLSS form: ``a[k] = (1, 0, ..)``, ``b[k] = (h_0, .., h_k)``."""
    h = np.diff(np.asarray(times, dtype=np.float64))
    return [[1.0] + [0.0] * i for i in range(h.size)], [[float(c) for c in h[: i + 1]] for i in range(h.size)]


def _lstsq_update(times: np.ndarray, coef: np.ndarray) -> dict[str, Any]:
    """The OLSS-form update of Euler steps with a least-squares last step (``coef`` on ``x_0, v_0, ..``)."""
    a, b = euler_update(times)
    a[-1] = [float(coef[0])] + [0.0] * (len(a) - 1)
    b[-1] = [float(c) for c in coef[1:]]
    return {"a": a, "b": b, "update": UPDATE}


def refined_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    starts: Sequence[str] = ("uniform", "bellman", "global-dp"),
    eval_times: bool = True,
    target: Tensor | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[int, Schedule]:
    """Our search: the best of several searched schedules, refined continuously (:func:`refine_schedule`).

    The start searches (names in :data:`bossflow.search.SEARCHES`, Euler schedules only) run
    once for all budgets on ``grid``; the teacher target (a dopri5 solution of ``noise``) is
    computed once and shared by every budget.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`).
        starts: start searches; each budget's candidates are their schedules.
        eval_times: also fit per-step evaluation times (the large gain at 2-4 NFE).
        target: ``(B, *shape)`` teacher endpoints of ``noise``; default ``reference_solve``.
        progress: show tqdm bars: the start searches' own (where they have one), and one over
            the budgets with each refinement's evaluations beneath it.
        options: passed to :func:`refine_schedule` (``steps``, ``screen_steps``, ``late_starts``, ...).

    Returns:
        ``{nfe: Schedule}`` with ``method="refined"``.
    """
    from tqdm.auto import tqdm


    unknown = [s for s in starts if s not in SEARCHES or s in ("refined", "olss")]
    if unknown or not starts:
        raise BossflowError(f"refinement starts must be Euler searches such as uniform, bellman, global-dp; got {list(starts)}.")
    budgets = sorted({int(k) for k in nfes})
    start_schedules = {
        name: SEARCHES[name](model, noise, grid, budgets, cond=cond, **({"progress": progress} if name in WITH_PROGRESS else {}))
        for name in starts
    }
    if target is None:
        target = reference_solve(model, noise, cond=cond)
    out = {}
    with tqdm(budgets, desc="refined", unit="budget", disable=not progress) as bar:
        for k in bar:
            bar.set_postfix_str(f"NFE {k}", refresh=False)
            refined = refine_schedule(
                model, noise, [start_schedules[name][k] for name in starts], target=target, eval_times=eval_times,
                cond=cond, progress=progress, **options,
            )
            out[k] = refined.with_meta(**{**(provenance or {}), **refined.meta})
    return out
