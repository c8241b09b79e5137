"""The default search: fit several searches on part of the noises, keep per budget the best on the rest.

No single search wins everywhere (issue 8): continuous refinement of Euler step and
evaluation times (:mod:`bossflow.search.refine`) is far ahead on the 2-D mixture, OLSS-style
least-squares steps (:mod:`bossflow.search.olss`) on the 64-D mixture and the digits teacher
from 4 NFE on, and which is better changes with the budget. ``auto`` decides per budget by
held-out validation, the way one picks a model, and spends the expensive refinement only
where it won:

1. **Teacher.** The dopri5 endpoints of every search noise (:func:`bossflow.reference_solve`),
   solved once and shared by every candidate and budget.
2. **Split.** The last ``round(holdout * B)`` search noises are held out (at least one, and at
   least one is kept for fitting); the split is by position, so it is deterministic.
3. **Fit.** Every candidate runs on the fitting noises only: uniform steps, BOSS
   (``bellman``), OLSS, and a short refinement (:func:`bossflow.search.refine_schedule` from
   the uniform, BOSS and OLSS step times and their late-start copies at s_0 = 0.99,
   15 screening evaluations each and 30 for the best at the default ``effort``: enough to
   rank it), plus ``refined-ls``, that refinement's times refitted for a least-squares last
   step (``refine_schedule(last_step="lstsq")``, below). OLSS's step times are a start worth having: on the 2-D
   mixture at 4 NFE only they (with s_0 = 0.99) reach the basin of a slow multi-start
   oracle (search-set RMSE 0.0117, against 0.0204 or worse from the times of seven other searches).
   The late-start copies at s_0 = 0.9 that ``refine_schedule`` adds by default are left out
   (except at ``effort="thorough"``):
   in ``benchmarks/bench_auto.py``'s flows no selected schedule came from them, and without
   them every budget's choice and fresh-noise RMSE stayed the same while the whole call
   spent 16-24 % fewer model rows (gmm-2d 63 to 53 fine trajectories, gmm-64d 44 to 34,
   digits 48 to 37).
4. **Select.** Each candidate samples the held-out noises with the solver it was made for
   (:func:`bossflow.search.sample_with`); the lowest endpoint RMSE against the teacher wins,
   the earlier candidate on ties. Grid searches (:data:`GRID_SEARCHES`: uniform, BOSS, the
   global-error DP, ...) first compete among themselves on every search noise (their RMSE
   on the fitting noises and the held-out ones together), and only their winner goes on to
   the held-out comparison. They choose K of N grid times, too little freedom to flatter
   their own fitting noises, and four times the noises decide much better: a few samples
   that commit to the wrong component carry most of the 64-D mixture's error (3 of 64
   held-out noises, 59-97 % of it), so on the held-out noises alone the 64-D mixture and
   the digits teacher ranked uniform, BOSS and the global-error DP as fresh noises do in 5
   of 10 budgets, and on every search noise in 9 of 10 (the tenth within 0.6 %).
5. **Refit** (default): a winning grid search runs again on every noise (exactly the call that
   search makes on its own); a winning refinement continues from its selection-stage
   schedule on every noise for ``continue_steps`` L-BFGS evaluations. Continuing rather than
   restarting keeps the basin that won validation and costs about an eighth of a fresh
   refinement (80 against 650 evaluations). A winning ``refined-ls`` keeps its times and
   refits only its last step's coefficients on every noise (:func:`refit_last_step`).

Families. ``family="any"`` (default) may return OLSS-type schedules (a linear multistep update,
sampled with :func:`bossflow.search.olss.olss_solve`) and Euler schedules with evaluation
times. Straightening and bossflow's Euler sampler take Euler schedules with evaluation times
(``family="euler"``); diffusers' schedulers and flow_matching's ``ODESolver`` take step times
only (``family="times"``: the refinement then keeps ``s_k = t_k``). These two families also
fit the global-error DP (about 7 more fine trajectories): without OLSS it is the best peer
of step times only on the 64-D mixture and the digits teacher (``benchmarks/bench_auto.py``,
auto-times against the step-times peers), where ``family="any"`` picks OLSS instead.

``refined-ls``. Along an Euler schedule ``x_K = x_0 + sum_k h_k v_k``, so a last step
``x_K = a x_0 + sum_k b_k v_k`` with free coefficients contains Euler; fitting ``a, b`` by
least squares to the teacher's endpoints (OLSS's final fit) can only lower the error on the
fitting noises. Fitted after the refined times (:func:`refit_last_step`) it measured, on
fresh noises, 9 % below refinement alone at 2 NFE on the 64-D mixture, 19 % on the digits
teacher, and 0-5 % on the 2-D mixture. ``refined-ls`` goes further: starting from the
refined schedule it refits the step and evaluation times for the least-squares last step
(variable projection, :func:`bossflow.search.refine_schedule` with ``last_step="lstsq"``,
``lstsq_steps`` L-BFGS evaluations of :data:`EFFORTS` on the fitting noises), which at 2 NFE
halved the 2-D mixture's fresh-noise RMSE (0.087 to 0.040). Nearly collinear velocities (close
evaluation times) make plain least squares unstable out of sample (RMSE 0.45 instead of
0.002 at 10 NFE on the 2-D mixture), so the coefficients are pulled towards the Euler ones
by a ridge on the unit-scaled normal equations (:func:`bossflow.search.refine.last_step_coefficients`).
Its times are not continued on every noise: 80 more evaluations there overfitted at 8 NFE
(fresh RMSE 0.0022 to 0.0055). And they are refitted only where the refinement is in
contention (the refined fit's held-out RMSE at most :data:`CONTENTION` = 1.25 times the best
other candidate's); elsewhere ``refined-ls`` is the refined schedule with its last step
refitted, as before. The freedom of the least-squares last step lets the times flatter a
small held-out set: on the 64-D mixture at 10 NFE, where the refinement is 12 times behind
OLSS, refitted times reached a held-out RMSE of 0.0075 against OLSS's 0.0168 and were
picked, but measured 0.125 against 0.086 on fresh noises. In ``benchmarks/bench_auto.py``
the refined fit was within 0.97 of the best other candidate wherever a refined schedule
won, and 1.58 or more behind wherever it lost.

Cost, in model rows (one row = one sample through the model), for B search noises and a
base grid of N steps (one fine trajectory, what BOSS spends, is N B rows): the teacher
(adaptive, about 1.2-1.5 fine trajectories on the mixtures), BOSS and OLSS on the fitting
noises and the winner again on all (about 1 fine trajectory each per fit), the short
refinement (about ``120 K`` forward and ``120 K`` backward rows per fitting noise at budget
K), ``refined-ls``'s (about ``30 K`` of each), ``K`` rows per held-out noise and candidate
to score, and where ``refined`` won, ``continue_steps * K`` forward and backward rows per noise. Every schedule's meta records
the whole call's counts and ``fine_trajectories`` (forward rows / (N B)). The global-error
DP is not a candidate of ``family="any"``: it costs about 10 fine trajectories and never won
a budget there in ``benchmarks/bench_auto.py``.

Effort. The refinement is most of the cost and its budget is a trade-off, so ``effort``
picks one of three (:data:`EFFORTS`): L-BFGS evaluations per screened start + for the best
start on the fitting noises, late starts, evaluations to continue on every noise, and
``refined-ls``'s evaluations for the least-squares last step.

======== =============== ============ ========== ========= ===================================
effort   screen + best   late starts  continue   lstsq     fine trajectories, NFE 2-10 in one call
======== =============== ============ ========== ========= ===================================
fast     5 + 15          0.99         20         10        18.5 / 17.8 / 20.5 (gmm-2d / gmm-64d / digits)
standard 15 + 30         0.99         80         30        39.6 / 34.4 / 37.9
thorough 30 + 60         0.9, 0.99    300        60        92.1 / 81.6 / 83.7
======== =============== ============ ========== ========= ===================================

All three are never worse than the best peer within 1 % at NFE 2, 4, 6, 8, 10 on the three
flows of ``benchmarks/bench_auto.py`` (15 of 15 each). They differ only where a refinement
wins (the 2-D mixture; NFE 2 on the others), and not in order: fresh-noise RMSE on the 2-D
mixture at NFE 2, 4, 6, 8, 10 is 0.0544, 0.0133, 0.0063, 0.0032, 0.0023 for ``fast``,
0.0401, 0.0167, 0.0077, 0.0022, 0.0019 for standard and 0.0401, 0.0188, 0.0076, 0.0051,
0.0012 for ``thorough``: the least-squares last step's times have many basins of nearly the
same search-set error that generalise differently. Standard is the default: it is the best
of the three at NFE 2 (where ``fast`` is 36 % behind on the 2-D mixture and 6 % on the
digits teacher), and on the mixtures a call takes seconds (the digits teacher: 28 s fast,
57 s standard, 143 s thorough for 64 noises on one thread).

Issue 8 asked the default to cost "no more than a few fine trajectories"; that is met by
``fast`` (3.6-4.1 per budget), not by the default (6.9-7.9 per budget, still 30-150 times less
wall time than the OSS authors' search code's 20-100 s per budget on the mixtures; refitting
``refined-ls``'s times instead of continuing the Euler refinement on every noise took the 2-D
mixture's call from 53.6 to 39.6 fine trajectories). Every cheaper search measured before
lost the default's accuracy on the 2-D mixture: shorter screening,
successive halving of the starts, screening on 48-96 of the noises, Levenberg-Marquardt
instead of L-BFGS, prolongation of the next smaller budget's schedule as a start, a shorter
continuation (at 8 and 10 NFE the error falls until its 80th evaluation), and racing
(dropping the refinement at a budget where, after 5 screening evaluations, it is far behind
on the held-out noises: from that point to the end it gained up to 1.8 times on the best
other candidate on the 2-D mixture, so no safe threshold saved much on the digits
teacher). The teacher's tolerance stays 1e-6 on float32 models too: at 1e-5 the digits
teacher's endpoints are 2.6e-3 RMSE off a float64 1e-9 solution, against 3e-4 at 1e-6.

Processes. Under ``torch.distributed`` (``torchrun``; every rank passes the same arguments)
the refinements, most of the cost, split every evaluation's noise chunks over the ranks
(see :func:`bossflow.search.refine_schedule`), and the BOSS cost matrix splits its samples;
the teacher, OLSS, the selection and ``refined-ls`` run whole on every rank. Every rank
returns the same schedules: with a refinement ``batch_size`` given, those of one process
with that batch size (the refinement's sums bit for bit; the cost matrix's to float64
rounding). By default each process takes one chunk, so the chunks, and with them the
rounding, follow the number of processes, which at 8-10 NFE on the 2-D mixture can steer
L-BFGS to other step times of the same error. The counts in the meta are summed over the ranks.

What is simplified: one split rather than cross-validation, so a few hundred held-out
values decide; on flows with heavy-tailed errors (the 64-D mixture, where a few samples
commit to the wrong component) candidates within a few percent of each other are picked
almost at random. The selection-stage refinement is short, which could misrank refinement
against a candidate a few percent behind it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.bellman import check_budget
from ..core.distributed import all_reduce_sum_float64, world_size
from ..core.errors import BossflowError, ScheduleError
from ..core.metrics import endpoint_rmse
from ..core.noise import validate_noise
from ..core.schedules import Schedule, as_schedule, validate_times
from ..core.solvers import NFECounter, reference_solve, select_cond
from .olss import UPDATE, _check_coefficients, _gram, _model_rows
from .refine import euler_update, last_step_coefficients, refine_schedule
from .registry import SEARCHES
from .sampling import sample_with

FAMILIES = {
    "any": ("uniform", "bellman", "olss", "refined", "refined-ls"),
    "euler": ("uniform", "bellman", "global-dp", "refined"),
    "times": ("uniform", "bellman", "global-dp", "refined"),
}
"""Default candidates per schedule family (see the module docstring), in tie-break order."""
CANDIDATES = FAMILIES["any"]
GRID_SEARCHES = ("uniform", "edm", "shift", "bellman", "global-dp", "gits", "ays")
"""Searches that pick K times from a grid or a formula: ranked among themselves on every search noise."""
NOT_EULER = ("olss", "refined-ls")
SELECT_REFINE = {"screen_steps": 15, "steps": 30, "late_starts": (0.99,)}
"""The selection-stage refinement: L-BFGS evaluations per screened start and for the best one."""
CONTINUE_STEPS = 80
CONTENTION = 1.25
"""``refined-ls`` refits its times for the least-squares last step only at budgets where the refined
fit's held-out RMSE is at most this times the best other candidate's (see ``refined-ls`` in the
module docstring)."""
EFFORTS = {
    "fast": {"refine": {"screen_steps": 5, "steps": 15, "late_starts": (0.99,)}, "continue_steps": 20, "lstsq_steps": 10},
    "standard": {"refine": SELECT_REFINE, "continue_steps": CONTINUE_STEPS, "lstsq_steps": 30},
    "thorough": {"refine": {"screen_steps": 30, "steps": 60, "late_starts": (0.9, 0.99)}, "continue_steps": 300,
                 "lstsq_steps": 60},
}
"""The refinement's budget per ``effort`` (see "Effort" in the module docstring): the selection-stage
options, the continuation's L-BFGS evaluations, and ``refined-ls``'s evaluations on the fitting
noises; explicit ``refine`` and ``continue_steps`` override the first two."""


def _coefficients(schedule: Schedule) -> tuple[list[list[float]], list[list[float]]]:
    """Rows ``a``, ``b`` of the linear update a schedule is sampled with (Euler: ``a[k] = (1, 0..)``, ``b[k] = h_0..h_k``)."""
    if "olss" in schedule.meta:
        a, b = _check_coefficients(schedule)
        if any(c != 0.0 for row in a for c in row[1:]):
            raise ScheduleError("refit_last_step needs OLSS coefficients on x_0 and the velocities only (basis='initial').")
        return [list(map(float, row)) for row in a], [list(map(float, row)) for row in b]
    return euler_update(schedule.times)


def _check_refit(noise: Tensor, target: Tensor, ridge: Any) -> None:
    """Check :func:`refit_last_step`'s ``noise`` ``(B, *shape)``, ``target`` (shaped like it) and ``ridge``."""
    validate_noise(noise)
    if not isinstance(target, Tensor) or tuple(target.shape) != tuple(noise.shape):
        raise BossflowError(f"target must be a tensor shaped like noise {tuple(noise.shape)}.")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise BossflowError(f"ridge must be a finite number >= 0, got {ridge!r}.")


def _last_step_basis(
    model: Callable[..., Tensor],
    noise: Tensor,
    schedule: Schedule,
    a: list[list[float]],
    b: list[list[float]],
    cond: dict | None,
    batch_size: int | None,
) -> Tensor:
    """The last step's basis along the schedule's own update (rows ``a``, ``b``) from ``noise`` at ``t = 0``.

    Takes ``noise`` ``(B, *shape)``; returns a float64 ``(K + 1, B * prod(shape))`` tensor: ``x_0`` and the K
    velocities ``v(x_k, s_k)``, each flattened over the samples.
    """
    k = schedule.nfe
    rows = int(noise.shape[0]) if batch_size is None else int(batch_size)
    evals = schedule.evaluation_times
    x0 = noise.to(torch.float64)
    vels: list[Tensor] = []
    with torch.no_grad():
        x = x0
        for step in range(k):
            vels.append(_model_rows(model, x.to(noise.dtype), float(evals[step]), dict(cond or {}), rows).to(torch.float64))
            # The schedule's own update, through step `step`.
            x = a[step][0] * x0 + sum(b[step][m] * vels[m] for m in range(step + 1))
        return torch.stack([x0, *vels]).reshape(k + 1, -1)


def _fit_last_step(basis: Tensor, target: Tensor, c0: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """The last step's coefficients ``(K + 1,)`` on ``basis`` ``(K + 1, B * D)``, fitted to ``target`` ``(B, *shape)``
    by least squares with a ridge towards ``c0`` ``(K + 1,)``; returns them and the endpoint MSE per dimension
    they leave."""
    with torch.no_grad():
        gram = _gram(basis).cpu().numpy()
        rhs = (basis @ target.to(torch.float64).reshape(-1, 1)).cpu().numpy()[:, 0]
    coef = last_step_coefficients(gram, rhs, c0, ridge)
    weights = torch.tensor(coef, dtype=torch.float64, device=basis.device)
    end = (weights[:, None] * basis).sum(0)
    return coef, float((end - target.to(torch.float64).reshape(-1)).pow(2).mean())


def refit_last_step(
    model: Callable[..., Tensor],
    noise: Tensor,
    target: Tensor,
    schedule: Schedule | Any,
    *,
    ridge: float = 1e-4,
    cond: dict | None = None,
    batch_size: int | None = None,
) -> Schedule:
    """Refit a schedule's last step by least squares on the teacher's endpoints (OLSS's final fit, Duan et al. 2023).

    The schedule's own update (Euler, or OLSS with ``basis="initial"``) runs for K - 1 steps;
    the last step becomes ``x_K = a x_0 + sum_k b_k v(x_k, s_k)`` with ``a, b`` minimising
    ``|| x_K - target ||^2 + ridge sum_j |col_j|^2 (c_j - c0_j)^2`` over the noises, ``c0`` being
    the schedule's own last-step coefficients and ``col_j`` the basis columns (so the ridge
    is relative to each column's scale). The result is sampled with
    :func:`bossflow.search.olss.olss_solve` (``sample_with`` does so); same times, same
    evaluation times, same K NFE.

    Args:
        model: velocity model ``model(x, t, **cond)``; 0 = noise, 1 = data.
        noise: ``(B, *shape)`` fitting noises at ``t = 0``.
        target: ``(B, *shape)`` teacher endpoints of ``noise``.
        schedule: the schedule whose last step is refitted: a :class:`Schedule`, or K + 1 step
            times (tensor, array or list) for Euler steps.
        ridge: pull towards the schedule's own coefficients, ``>= 0``; 0 is plain least squares.
        cond: conditioning for every model call; per-sample tensors follow their samples.
        batch_size: samples per model call (default: all at once).

    Returns:
        :class:`Schedule` with the schedule's meta, updated: ``olss`` (coefficients ``a``, ``b``),
        ``method`` the schedule's method plus ``"-ls"``, ``base`` (the schedule's method), ``ridge``,
        ``samples`` and ``loss`` (endpoint MSE per dimension on ``noise`` after the refit).

    Raises:
        BossflowError: a bad noise, target or ridge.
        ScheduleError: OLSS coefficients on earlier states (``basis="states"``).

    Example:
        >>> import torch, bossflow as bf
        >>> model = bf.models.gmm_2d()
        >>> noise = bf.gaussian_noise(64, (2,), dtype=torch.float64)
        >>> target = bf.reference_solve(model, noise)
        >>> s = refit_last_step(model, noise, target, bf.uniform_schedule(3))
        >>> x1 = bf.search.sample_with(model, noise, s)
        >>> bool(bf.endpoint_rmse(x1, target) <= bf.endpoint_rmse(bf.euler(model, noise, bf.uniform_schedule(3)), target))
        True
    """
    _check_refit(noise, target, ridge)
    schedule = as_schedule(schedule)
    a, b = _coefficients(schedule)
    basis = _last_step_basis(model, noise, schedule, a, b, cond, batch_size)
    coef, loss = _fit_last_step(basis, target, np.array([a[-1][0], *b[-1]], dtype=np.float64), float(ridge))
    k = schedule.nfe
    a = [*a[:-1], [float(coef[0])] + [0.0] * (k - 1)]
    b = [*b[:-1], [float(c) for c in coef[1:]]]
    base = schedule.meta.get("method", "custom")
    found = {"method": f"{base}-ls", "base": base, "olss": {"a": a, "b": b, "update": UPDATE}, "ridge": float(ridge),
             "samples": int(noise.shape[0]), "loss": loss}
    return Schedule(schedule.times, schedule.eval_times, **{**schedule.meta, **found})


def _as_euler_start(schedule: Schedule) -> Schedule:
    """An Euler start for the refinement: OLSS schedules give their step times, without their coefficients."""
    if "olss" in schedule.meta:
        return Schedule(schedule.times, method="olss-times")
    return schedule


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value < 1.0):
        raise BossflowError(f"holdout must be a fraction strictly between 0 and 1, got {value!r}.")
    return float(value)


@dataclass
class _Plan:
    """The checked options of one :func:`auto_schedules` call, ``effort``'s defaults filled in (see its arguments).

    ``samples`` is B = ``n_fit + n_held``; ``conds`` the conditioning of the noise sets ``"fit"`` (the first
    ``n_fit`` noises), ``"held"`` (the last ``n_held``) and ``"all"``; ``lstsq_steps`` ``refined-ls``'s L-BFGS
    evaluations; ``eval_times`` whether the refinement moves evaluation times off the step times.
    """

    grid: np.ndarray
    budgets: list[int]
    family: str
    effort: str
    names: list[str]
    starts: Sequence[str]
    samples: int
    n_fit: int
    n_held: int
    select_opts: dict
    continue_steps: int
    lstsq_steps: int
    eval_times: bool
    olss_opts: dict
    conds: dict[str, dict]
    ridge: float
    refit: bool
    progress: bool
    provenance: dict | None


@dataclass
class _Run:
    """What the stages of one call share: its plan, the counted model, the progress bar, the noise sets and
    every fit made so far (each is made once; the ``refined-ls`` fit is ``None`` where not in contention)."""

    plan: _Plan
    counted: NFECounter
    bar: Any
    sets: dict[str, tuple[Tensor, Tensor, dict]]
    teacher_rows: int
    backward_rows: int = 0
    grid_fits: dict[tuple[str, str, tuple[int, ...]], dict[int, Schedule]] = field(default_factory=dict)
    refined_fit: dict[int, Schedule] = field(default_factory=dict)
    refined_all: dict[int, Schedule] = field(default_factory=dict)
    lstsq_fit: dict[int, Schedule | None] = field(default_factory=dict)
    fitted: dict[str, dict[int, Schedule]] = field(default_factory=dict)
    held: dict[tuple[str, int], float] = field(default_factory=dict)
    fit_rmse: dict[tuple[str, int], float] = field(default_factory=dict)
    refits: dict[str, dict[int, Schedule]] = field(default_factory=dict)
    journal: Callable[[], None] = lambda: None


def _check_options(noise: Tensor, grid: Any, nfes: list[int], *, cond: dict | None, provenance: dict | None,
                   family: str, candidates: Sequence[str] | None, holdout: float, refit: bool, starts: Sequence[str],
                   effort: str, refine: dict | None, continue_steps: int | None, olss: dict | None, ridge: float,
                   progress: bool) -> _Plan:
    """Check :func:`auto_schedules`'s arguments (``noise`` ``(B, *shape)``, ``grid`` ``(N + 1,)``, ...) and return the
    :class:`_Plan`: the sorted budgets, the candidates, the split of the B noises into the first ``n_fit`` to fit
    and the last ``n_held`` to hold out, the refinement's options and ``conds``, the conditioning of each set."""

    validate_noise(noise)
    grid = validate_times(grid, "base grid")
    if not isinstance(nfes, (list, tuple)) or not nfes:
        raise BossflowError("give at least one step budget (NFE) as a list, e.g. [2, 4].")
    budgets = sorted({check_budget(k, grid.size - 1) for k in nfes})
    if family not in FAMILIES:
        raise BossflowError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}.")
    names = list(FAMILIES[family] if candidates is None else candidates)
    allowed = [m for m in SEARCHES if m != "auto"] + ["refined-ls"]
    bad = [m for m in names if m not in allowed]
    if bad or not names or len(set(names)) != len(names):
        raise BossflowError(f"auto candidates must be distinct names among {', '.join(allowed)}; got {names}.")
    if family != "any" and any(m in NOT_EULER for m in names):
        raise BossflowError(f"candidates {', '.join(NOT_EULER)} are not Euler schedules; family {family!r} cannot take them.")
    bad_starts = [m for m in starts if m not in SEARCHES or m in ("refined", "auto")]
    if bad_starts or not starts:
        raise BossflowError(
            f"refinement starts must be Euler searches such as uniform, bellman, global-dp, or olss; got {list(starts)}."
        )
    holdout = _check_fraction(holdout)
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise BossflowError(f"effort must be one of {', '.join(EFFORTS)}, got {effort!r}.")
    if continue_steps is None:
        continue_steps = EFFORTS[effort]["continue_steps"]
    if isinstance(continue_steps, bool) or not isinstance(continue_steps, int) or continue_steps < 1:
        raise BossflowError(f"continue_steps must be an integer >= 1, got {continue_steps!r}.")
    n = int(noise.shape[0])
    if n < 2:
        raise BossflowError("auto needs at least 2 search noises (some to fit, some to validate).")
    n_held = min(max(1, round(holdout * n)), n - 1)
    n_fit = n - n_held
    select_opts = {**EFFORTS[effort]["refine"], **(refine or {})}
    if "eval_times" in select_opts:
        raise BossflowError("auto sets the refinement's eval_times from family; pass family='times' for step times only.")
    olss_opts = dict(olss or {})
    cond = dict(cond or {})
    fit_idx, held_idx = torch.arange(n_fit), torch.arange(n_fit, n)
    conds = {"fit": select_cond(cond, fit_idx, n) if cond else {},
             "held": select_cond(cond, held_idx, n) if cond else {}, "all": cond}
    return _Plan(
        grid=grid, budgets=budgets, family=family, effort=effort, names=names, starts=starts, samples=n, n_fit=n_fit,
        n_held=n_held, select_opts=select_opts, continue_steps=continue_steps,
        lstsq_steps=EFFORTS[effort]["lstsq_steps"], eval_times=family != "times", olss_opts=olss_opts, conds=conds,
        ridge=ridge, refit=refit, progress=progress, provenance=provenance,
    )


def _solve_teacher(model: Callable[..., Tensor], noise: Tensor, plan: _Plan, checkpoint: str | os.PathLike | None,
                   model_id: str | None) -> _Run:
    """Open the progress bar and solve the teacher: the dopri5 endpoints ``(B, *shape)`` at ``t = 1`` of ``noise``
    ``(B, *shape)`` at ``t = 0`` (read from the journal ``checkpoint`` when it holds them, with every stage's
    results). Returns the :class:`_Run` with the noise sets ``"fit"``, ``"held"`` and ``"all"``, each
    ``(noise, teacher endpoints, conditioning)``, saving to the journal after every stage."""
    from tqdm.auto import tqdm

    from ..core.cost import model_fingerprint
    from .auto_journal import call_fingerprint, load_journal, restore_journal, save_journal

    if checkpoint is not None and world_size() > 1:
        raise BossflowError("auto's checkpoint (--cache) works in one process; drop it under torchrun.")
    fingerprint = call_fingerprint(model_id or model_fingerprint(model), noise, plan) if checkpoint is not None else ""
    saved = load_journal(checkpoint, fingerprint) if checkpoint is not None else None
    bar = tqdm(total=2 + 2 * len(plan.names), desc="auto", unit="stage", disable=not plan.progress)
    counted = NFECounter(model)
    bar.set_postfix_str("teacher")
    if saved is None:
        target = reference_solve(counted, noise, cond=plan.conds["all"] or None)
    else:
        target = saved[0].to(device=noise.device, dtype=noise.dtype)
    n_fit = plan.n_fit
    sets = {"fit": (noise[:n_fit], target[:n_fit], plan.conds["fit"]),
            "held": (noise[n_fit:], target[n_fit:], plan.conds["held"]), "all": (noise, target, plan.conds["all"])}
    run = _Run(plan, counted, bar, sets, counted.samples)
    if saved is not None:
        restore_journal(run, saved[1])
    if checkpoint is not None:
        run.journal = lambda: save_journal(checkpoint, run, fingerprint)
        run.journal()
    return run


def _stage(run: _Run, text: str) -> None:
    """Advance the progress bar by one stage, labelled ``text``."""
    run.bar.set_postfix_str(text, refresh=False)
    run.bar.update(1)


def _grid_search(run: _Run, name: str, which: str, ks: list[int]) -> dict[int, Schedule]:
    """Search ``name`` on the noise set ``which``, once for all ``ks`` (the DPs get all budgets from one pass)."""

    key = (name, which, tuple(ks))
    if key not in run.grid_fits:
        x, _, kw = run.sets[which]
        options = run.plan.olss_opts if name == "olss" else {}
        run.grid_fits[key] = SEARCHES[name](run.counted, x, run.plan.grid, ks, cond=kw or None, **options)
    return run.grid_fits[key]


def _refine_fit(run: _Run, k: int) -> Schedule:
    """The selection-stage refinement for budget ``k`` on the fitting noises, from every start's schedule; once."""
    plan = run.plan
    if k not in run.refined_fit:
        x, y, kw = run.sets["fit"]
        begin = [_as_euler_start(_grid_search(run, s, "fit", plan.budgets)[k]) for s in plan.starts]
        found = refine_schedule(run.counted, x, begin, target=y, eval_times=plan.eval_times, cond=kw or None,
                                **{"progress": plan.progress, **plan.select_opts})
        run.backward_rows += int(found.meta["backward_rows"])
        run.refined_fit[k] = found
    return run.refined_fit[k]


def _continue_refinement(run: _Run, which: str, start: Schedule, steps: int, **options: Any) -> Schedule:
    """``steps`` more L-BFGS evaluations of the refinement from ``start`` on the noise set ``which``, no late starts."""
    plan = run.plan
    x, y, kw = run.sets[which]
    found = refine_schedule(
        run.counted, x, start, target=y, eval_times=plan.eval_times, steps=steps, late_starts=(), cond=kw or None,
        batch_size=plan.select_opts.get("batch_size"), lr=plan.select_opts.get("lr", 1.0), progress=plan.progress,
        **options,
    )
    run.backward_rows += int(found.meta["backward_rows"])
    return found


def _refine_all(run: _Run, k: int) -> Schedule:
    """The winning refinement for budget ``k`` continued on every noise from its selection-stage schedule; once."""
    if k not in run.refined_all:
        fitted = _refine_fit(run, k)
        found = _continue_refinement(run, "all", fitted, run.plan.continue_steps)
        run.refined_all[k] = found.with_meta(
            start=fitted.meta["start"], late_start=fitted.meta["late_start"], continued_from=found.meta["start_loss"],
            screen_steps=fitted.meta["screen_steps"], candidates=fitted.meta["candidates"],
            steps=fitted.meta["steps"] + run.plan.continue_steps,
            evaluations=fitted.meta["evaluations"] + found.meta["evaluations"],
        )
    return run.refined_all[k]


def _rmse(run: _Run, schedule: Schedule, which: str) -> float:
    """Endpoint RMSE of ``schedule``'s own sampler on the noise set ``which`` against the teacher endpoints (its
    sampler runs from ``t = 0`` to ``t = 1``); ``inf`` when it diverges."""

    x, y, kw = run.sets[which]
    x1 = sample_with(run.counted, x, schedule, cond=kw or None)
    value = endpoint_rmse(x1, y) if torch.isfinite(x1).all() else math.inf
    return value if math.isfinite(value) else math.inf


def _fit_rmse(run: _Run, name: str, k: int) -> float:
    """RMSE of candidate ``name`` fitted for budget ``k`` on the fitting noises themselves, once."""
    if (name, k) not in run.fit_rmse:
        run.fit_rmse[name, k] = _rmse(run, run.fitted[name][k], "fit")
    return run.fit_rmse[name, k]


def _held_rmse(run: _Run, name: str, k: int) -> float:
    """Held-out RMSE of candidate ``name`` fitted for budget ``k`` (``refined``: the refined fit), once."""
    if (name, k) not in run.held:
        schedule = _refine_fit(run, k) if name == "refined" else run.fitted[name][k]
        run.held[name, k] = _rmse(run, schedule, "held")
    return run.held[name, k]


def _contended(run: _Run, k: int) -> bool:
    """Whether the refined fit is within :data:`CONTENTION` of the best other candidate on the held-out noises."""
    others = [m for m in run.plan.names if m not in ("refined", "refined-ls")]
    if not others:
        return True
    return _held_rmse(run, "refined", k) <= CONTENTION * min(_held_rmse(run, m, k) for m in others)


def _refine_lstsq_times(run: _Run, k: int) -> Schedule:
    """The refined fit for budget ``k`` with its step and evaluation times refitted on the fitting noises for a
    least-squares last step (``refine_schedule(last_step="lstsq")``): an OLSS-type ``refined-ls`` schedule."""
    euler_fit = _refine_fit(run, k)
    found = _continue_refinement(run, "fit", euler_fit, run.plan.lstsq_steps, last_step="lstsq", ridge=run.plan.ridge)
    return found.with_meta(
        method="refined-ls", base="refined", start=euler_fit.meta["start"], late_start=euler_fit.meta["late_start"],
        screen_steps=euler_fit.meta["screen_steps"], candidates=euler_fit.meta["candidates"],
        steps=euler_fit.meta["steps"], lstsq_steps=found.meta["steps"], euler_loss=euler_fit.meta["loss"],
        evaluations=euler_fit.meta["evaluations"] + found.meta["evaluations"],
    )


def _refine_lstsq(run: _Run, k: int, which: str) -> Schedule:
    """``refined-ls`` for budget ``k`` on the noise set ``which`` (see the module docstring): where the refinement is
    in contention, the refined fit's times refitted for a least-squares last step, whose coefficients alone are
    refitted on every noise; elsewhere the refined schedule with its last step refitted."""
    x, y, kw = run.sets[which]
    options = {"ridge": run.plan.ridge, "cond": kw or None, "batch_size": run.plan.select_opts.get("batch_size")}
    if k not in run.lstsq_fit and not _contended(run, k):
        run.lstsq_fit[k] = None
    if k in run.lstsq_fit and run.lstsq_fit[k] is None:
        base = _refine_fit(run, k) if which == "fit" else _refine_all(run, k)
        return refit_last_step(run.counted, x, y, base, **options).with_meta(method="refined-ls", lstsq_steps=0)
    if which == "all":
        fitted_ls = run.lstsq_fit[k]
        # Refit from the Euler form, so the ridge pulls towards Euler's coefficients as in the fit.
        euler_form = Schedule(fitted_ls.times, fitted_ls.eval_times,
                              **{key: v for key, v in fitted_ls.meta.items() if key != "olss"})
        refitted = refit_last_step(run.counted, x, y, euler_form, **options)
        return refitted.with_meta(method="refined-ls", base="refined", fitted_loss=fitted_ls.meta["loss"])
    if k not in run.lstsq_fit:
        run.lstsq_fit[k] = _refine_lstsq_times(run, k)
    return run.lstsq_fit[k]


def _candidate(run: _Run, name: str, which: str, ks: list[int]) -> dict[int, Schedule]:
    """Candidate ``name`` fitted on the noise set ``which`` (``"fit"`` or ``"all"``) for budgets ``ks``:
    ``{k: Schedule}``."""
    if name == "refined":
        return {k: (_refine_fit(run, k) if which == "fit" else _refine_all(run, k)) for k in ks}
    if name == "refined-ls":
        return {k: _refine_lstsq(run, k, which) for k in ks}
    return {k: _grid_search(run, name, which, run.plan.budgets if which == "fit" else ks)[k] for k in ks}


def _fit_candidates(run: _Run) -> None:
    """Fit every candidate for every budget on the fitting noises, into ``run.fitted`` (``{name: {k: Schedule}}``)."""
    names = run.plan.names
    # refined-ls last: it reuses the refined fit and looks at the others' held-out errors.
    for name in [m for m in names if m != "refined-ls"] + [m for m in names if m == "refined-ls"]:
        _stage(run, f"fit {name}")
        if name not in run.fitted:  # (a resumed run has some already)
            run.fitted[name] = _candidate(run, name, "fit", run.plan.budgets)
            run.journal()
    _stage(run, "score")


def _select(run: _Run) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, float]], dict[int, str]]:
    """Score the fitted candidates on the held-out noises and pick each budget's winner (module docstring, "Select").

    Returns ``(scores, search_scores, selected)``: ``{k: {name: held-out RMSE}}``, ``{k: {grid search: RMSE on
    every search noise}}`` (empty with fewer than two grid searches) and ``{k: winning name}``.
    """
    plan = run.plan
    names = plan.names
    scores = {k: {name: _held_rmse(run, name, k) for name in names} for k in plan.budgets}
    grids = [m for m in names if m in GRID_SEARCHES]
    search_scores: dict[int, dict[str, float]] = {k: {} for k in plan.budgets}
    if len(grids) > 1:
        for name in grids:
            for k in plan.budgets:
                fit_rmse = _fit_rmse(run, name, k)
                mse = (plan.n_fit * fit_rmse ** 2 + plan.n_held * scores[k][name] ** 2) / plan.samples
                search_scores[k][name] = math.sqrt(mse)
    run.journal()
    selected = {}
    for k in plan.budgets:
        finalists = [m for m in names if m not in grids]
        if len(grids) == 1:
            finalists += grids
        elif grids:
            finalists.append(min(grids, key=lambda m: (search_scores[k][m], names.index(m))))
        selected[k] = min(finalists, key=lambda m: (scores[k][m], names.index(m)))
    return scores, search_scores, selected


def _refit_winners(run: _Run, selected: dict[int, str]) -> dict[int, Schedule]:
    """Each budget's winner refitted on every noise, one call per winning search (as fitted if not ``refit``), and
    the progress bar closed: ``{k: Schedule}``."""
    chosen: dict[int, Schedule] = {}
    for name in run.plan.names:
        _stage(run, f"refit {name}")
        ks = [k for k in run.plan.budgets if selected[k] == name]
        if ks and name not in run.refits:
            run.refits[name] = _candidate(run, name, "all", ks) if run.plan.refit else {k: run.fitted[name][k] for k in ks}
            run.journal()
        chosen.update(run.refits.get(name, {}))
    _stage(run, "done")
    run.bar.close()
    return chosen


def _with_call_meta(run: _Run, chosen: dict[int, Schedule], scores: dict[int, dict[str, float]],
                    search_scores: dict[int, dict[str, float]], selected: dict[int, str]) -> dict[int, Schedule]:
    """The returned ``{k: Schedule}``: each winner's times, with the selection and the whole call's cost as meta
    (see :func:`auto_schedules`'s Returns)."""
    plan = run.plan
    # Forward rows of every process (under torch.distributed each also solved the teacher).
    rows, teacher_rows = (int(v) for v in all_reduce_sum_float64([run.counted.samples, run.teacher_rows]))
    fine = rows / ((plan.grid.size - 1) * plan.samples)
    out = {}
    for k in plan.budgets:
        win = chosen[k]
        own = {key: value for key, value in win.meta.items() if key != "olss"}
        meta = {
            **(plan.provenance or {}),
            "method": "auto",
            "family": plan.family,
            "effort": plan.effort,
            "selected": selected[k],
            "holdout_rmse": {m: (v if math.isfinite(v) else None) for m, v in scores[k].items()},
            "search_rmse": {m: (v if math.isfinite(v) else None) for m, v in search_scores[k].items()},
            "refit": bool(plan.refit),
            "samples": plan.samples,
            "fit_samples": plan.n_fit,
            "holdout_samples": plan.n_held,
            "candidate_meta": own,
            "model_rows": rows,
            "backward_rows": run.backward_rows,
            "teacher_rows": teacher_rows,
            "fine_trajectories": fine,
        }
        if "olss" in win.meta:
            meta["olss"] = win.meta["olss"]
        out[k] = Schedule(win.times, win.eval_times, **meta)
    return out


def auto_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    family: str = "any",
    candidates: Sequence[str] | None = None,
    holdout: float = 0.25,
    refit: bool = True,
    starts: Sequence[str] = ("uniform", "bellman", "olss"),
    effort: str = "standard",
    refine: dict | None = None,
    continue_steps: int | None = None,
    olss: dict | None = None,
    ridge: float = 1e-4,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    model_id: str | None = None,
) -> dict[int, Schedule]:
    """Our default: the candidate searches' best schedule per budget, chosen on held-out noises.

    See the module docstring for the procedure, the families, ``refined-ls``, the cost and
    what is simplified. Deterministic: the split is by position and every candidate is
    deterministic.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`);
            refinement needs ``model`` differentiable in ``x`` and ``t``, and ``B >= 2`` noises.
        family: ``"any"``, ``"euler"`` (Euler steps with evaluation times: what straightening
            takes) or ``"times"`` (step times only: what diffusers and flow_matching take).
        candidates: names of :data:`bossflow.search.SEARCHES` (except ``auto``) and ``refined-ls``,
            in tie-break order; default :data:`FAMILIES` ``[family]``.
        holdout: fraction of the noises held out for selection.
        refit: refit the winner on every noise; ``False`` returns the winner fitted on the
            fitting noises (cheaper, noisier).
        starts: the refinement's start searches: Euler searches (uniform, bellman, global-dp, ...)
            and ``olss``, whose step times (without its coefficients) start an Euler schedule.
        effort: ``"fast"``, ``"standard"`` or ``"thorough"``: how much the refinement may spend
            (:data:`EFFORTS`; measured trade-off in the module docstring).
        refine: options for the selection-stage :func:`bossflow.search.refine_schedule`
            (``steps``, ``screen_steps``, ``late_starts``, ``batch_size``, ...), laid over
            ``effort``'s (standard: :data:`SELECT_REFINE`). ``eval_times`` follows ``family``.
        continue_steps: L-BFGS evaluations of a winning refinement on every noise, started from
            its selection-stage schedule; default ``effort``'s (standard: 80).
        olss: options for :func:`bossflow.search.olss_schedules`.
        ridge: ``refined-ls``'s pull towards the Euler coefficients (:func:`refit_last_step`).
        progress: show a tqdm bar over the stages (teacher, each candidate's fit, scoring, refits),
            and each refinement's evaluations beneath it.
        checkpoint: a journal file (:mod:`bossflow.search.auto_journal`), written after every stage:
            a later call with the same model, noises, grid, budgets and options resumes from it and
            returns what an uninterrupted call returns. One process only.
        model_id: identifies the model in the journal; default a hash of its weights.

    Returns:
        ``{nfe: Schedule}`` with ``method="auto"``; ``family``; ``effort``; ``selected`` (the winning
        candidate); ``holdout_rmse`` (every candidate's endpoint RMSE per dimension on the
        held-out noises against the teacher, fitted on the fitting noises; ``None`` if not
        finite); ``search_rmse`` (the grid searches' RMSE on every search noise, by which they
        are ranked among themselves; empty with fewer than two); ``refit``, ``fit_samples``, ``holdout_samples``, ``samples``;
        ``candidate_meta`` (the winner's own meta; its OLSS coefficients, if any, stay in
        ``olss``; a continued refinement's has ``continued_from``, its start's endpoint MSE on
        every noise, and ``loss``, its own); and for the whole call ``model_rows`` (forward rows, teacher included),
        ``backward_rows`` (rows back-propagated by the refinement), ``teacher_rows`` and
        ``fine_trajectories`` (``model_rows / (N B)``).

    Raises:
        BossflowError: bad noise, budgets, family, effort, candidates or options.

    Example:
        >>> import torch, bossflow as bf
        >>> noise = bf.gaussian_noise(32, (2,), dtype=torch.float64)
        >>> found = auto_schedules(bf.models.gmm_2d(), noise, bf.uniform_schedule(20).times, [2],
        ...                        refine={"steps": 10, "screen_steps": 5}, continue_steps=10)
        >>> s = found[2]
        >>> s.meta["method"], s.meta["holdout_rmse"][s.meta["selected"]] == min(s.meta["holdout_rmse"].values())
        ('auto', True)
    """
    plan = _check_options(noise, grid, nfes, cond=cond, provenance=provenance, family=family, candidates=candidates,
                          holdout=holdout, refit=refit, starts=starts, effort=effort, refine=refine,
                          continue_steps=continue_steps, olss=olss, ridge=ridge, progress=progress)
    run = _solve_teacher(model, noise, plan, checkpoint, model_id)
    _fit_candidates(run)
    scores, search_scores, selected = _select(run)
    chosen = _refit_winners(run, selected)
    return _with_call_meta(run, chosen, scores, search_scores, selected)


__all__ = ["CANDIDATES", "EFFORTS", "FAMILIES", "auto_schedules", "refit_last_step"]
