"""Error-propagation-aware step search: a DP whose state is the student's own position.

After the OSS idea (Pei, Hu, Gu, "Optimal Stepsize for Diffusion Sampling", arXiv
2503.21774, 2025). BOSS (:mod:`bossflow.bellman`) adds up one-step errors that start from
the *teacher's* states, so it cannot see that an early error moves every later step off
the teacher's trajectory. Here every node of the DP carries the state the few-step
*student* actually reached, and nodes are scored against the teacher where they land.

Setting (time convention of bossflow: ``t = 0`` noise, ``t = 1`` data). Base grid
``g_0 = 0 < ... < g_N = 1``; teacher ``xs[j]`` = the fine Euler trajectory of the noise
on that grid (one Euler step per interval, :func:`bossflow.fine_trajectory`). The DP keeps

    z[k][j]   (B, *shape)  the student state reached at g_j after k solver steps,
    e[k][j]   = mean_{b,d} (z[k][j] - xs[j])^2   (float64, per dimension and sample),

with ``z[0][0]`` = the noise. Layer k is built from layer k - 1: for every target j, each
predecessor i < j with a state in layer k - 1 proposes one solver step
``step(z[k-1][i], g_i -> g_j)``; the candidate closest to ``xs[j]`` (least MSE) becomes
``z[k][j]``, and i is stored as its backpointer. The budget-K schedule is the backtracked
path of ``z[K][N]`` and its cost ``e[K][N]`` is the endpoint MSE of that path, the same
number one gets by running the solver along the path from the noise.

What is simplified, and what it means:

* One state per node. The true objective (endpoint error of a K-step path) does not
  decompose over nodes: the best way to reach ``(k, j)`` is not always the prefix of the
  best K-step path, because a slightly worse intermediate state can be a better starting
  point for the rest. So this is a heuristic: it may miss the optimum, and it is not
  guaranteed to beat a given path (uniform, BOSS) either. For K = 1 and K = 2 it is exact
  (layer 1 has one candidate per node, and the last choice is by endpoint error).
* The teacher is the Euler trajectory on the grid itself (as in BOSS and the OSS code), so
  the N-step path has zero cost by construction.
* Intermediate nodes are scored by the distance to the teacher at that node only (the OSS
  choice); OSS's per-sample search with median aggregation is replaced by one search on the
  mean error over the batch, and its optional amplitude calibration is left out.

Cost, in model rows (one row = one sample through the model), for B noises and budget K:

* teacher: ``N B``;
* Euler: ``B (1 + sum_{k=2..K} (N - k + 1))``, about ``K N B``: each predecessor state is
  evaluated once per layer, and one velocity gives the candidates for every target;
* Heun: the same first evaluations plus one second evaluation per (predecessor, target)
  pair: ``B (N + sum_{k=2..K-1} (N-k+1)(N-k+2)/2 + (N - K + 1))`` for K >= 2, about
  ``K N^2 B / 2``.

Peak memory: about ``3 (N + 1) B D`` values in the dtype of the noise (teacher, two DP
layers) plus one block of candidates of at most ``chunk_bytes`` float64 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..core.bellman import check_budget, check_budgets
from ..core.errors import BossflowError, CostMatrixError
from ..core.noise import validate_noise
from ..core.schedules import Schedule, validate_times
from ..core.solvers import batched_trajectory, select_cond

SOLVERS = ("euler", "heun")


def _check_inputs(noise: Any, grid: Any, solver: Any, batch_size: Any) -> np.ndarray:
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    if solver not in SOLVERS:
        raise BossflowError(f"the global-error search supports solver 'euler' or 'heun', got {solver!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise BossflowError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    return grid


def _velocities(
    model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: dict, n_samples: int, rows: int
) -> Tensor:
    """``model(x, t)`` for stacked rows ``(M, *shape)`` (row r belongs to sample ``r % n_samples``), ``rows`` per call."""
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        if cond:
            index = torch.arange(start, stop) % n_samples
            part_cond = select_cond(cond, index, n_samples)
        else:
            part_cond = {}
        out[start:stop] = model(x[start:stop], t[start:stop], **part_cond)
    return out


def _squared_error(cand: Tensor, target: Tensor) -> Tensor:
    """``(M,)`` float64 mean squared error per row of two ``(M, B, *shape)`` blocks."""
    diff = cand.to(torch.float64) - target.to(torch.float64)
    return diff.pow(2).flatten(1).mean(dim=1)


@dataclass(frozen=True)
class _Search:
    """The fixed parts of one DP search: the model, grid and solver, and how rows are batched.

    Attributes:
        per_call: ``(B, *shape)`` blocks per model call: predecessor states of a layer, or
            (predecessor, target) pairs of Heun's second evaluation.
        targets_per_chunk: targets whose float64 candidates ``(B, *shape)`` fit in ``chunk_bytes``.
    """

    model: Callable[..., Tensor]
    grid: np.ndarray
    solver: str
    cond: dict
    n_samples: int
    rows: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    per_call: int
    targets_per_chunk: int

    def tensor(self, values: np.ndarray) -> Tensor:
        """``values`` in the dtype and on the device of the noise."""
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    def per_block(self, values: Tensor) -> Tensor:
        """``(M,)`` values reshaped to ``(M, 1, ...)`` so that they scale ``(M, B, *shape)`` blocks."""
        return values.reshape(-1, *([1] * (1 + len(self.shape))))


def _search_setup(
    model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray, solver: str, cond: dict | None,
    batch_size: int | None, chunk_bytes: int,
) -> _Search:
    """The :class:`_Search` for ``noise`` ``(B, *shape)`` at ``t = 0`` (default ``B`` rows per call)."""
    n_samples = int(noise.shape[0])
    rows = int(batch_size) if batch_size is not None else n_samples
    per_target_bytes = 8 * noise.numel()  # one candidate (B, *shape) in float64
    return _Search(
        model=model, grid=grid, solver=solver, cond=dict(cond or {}), n_samples=n_samples, rows=rows,
        shape=tuple(noise.shape[1:]), dtype=noise.dtype, device=noise.device, per_call=max(1, rows // n_samples),
        targets_per_chunk=max(1, chunk_bytes // per_target_bytes),
    )


def _block_velocities(search: _Search, blocks: Tensor, times: np.ndarray) -> Tensor:
    """Velocities of ``(M, B, *shape)`` stacked states at their ``(M,)`` grid times, ``search.rows`` rows per call."""
    count = blocks.shape[0]
    x = blocks.reshape(count * search.n_samples, *search.shape)
    t = search.tensor(np.repeat(times, search.n_samples))
    v = _velocities(search.model, x, t, search.cond, search.n_samples, search.rows)
    return v.reshape(count, search.n_samples, *search.shape)


def _step_candidates(search: _Search, z_i: Tensor, v_i: Tensor, i: int, js: np.ndarray) -> Tensor:
    """One solver step from ``z_i`` ``(B, *shape)`` at ``g_i`` (velocity ``v_i``) to each ``g_j``, ``j`` in ``js``.

    Returns:
        ``(len(js), B, *shape)`` candidate states, in the dtype of the noise.
    """
    grid = search.grid
    h = search.tensor(grid[js] - grid[i])
    pred = z_i[None] + search.per_block(h) * v_i[None]  # Euler step, (len(js), B, *shape)
    if search.solver != "heun":
        return pred
    # Apply 2nd order correction: second evaluation at (pred, g_j), batched over js.
    v_next = torch.empty_like(pred)
    for p0 in range(0, js.size, search.per_call):
        sub = slice(p0, min(p0 + search.per_call, js.size))
        v_next[sub] = _block_velocities(search, pred[sub], grid[js[sub]])
    half = search.tensor(0.5 * (grid[js] - grid[i]))
    return z_i[None] + search.per_block(half) * (v_i[None] + v_next)


def _dp_layer(
    search: _Search, xs: Tensor, prev: Tensor, prev_ok: np.ndarray, back_k: np.ndarray, last_layer: bool, bar: Any
) -> tuple[Tensor, np.ndarray]:
    """Layer k of the DP from layer k - 1: the state closest to the teacher at each node.

    Args:
        search: the model, grid and batching.
        xs: ``(N + 1, B, *shape)`` teacher states.
        prev: ``(N + 1, B, *shape)`` states of layer k - 1, meaningful where ``prev_ok``.
        prev_ok: ``(N + 1,)`` bool, the nodes layer k - 1 reached with a finite state.
        back_k: ``(N + 1,)`` int64 backpointers of layer k, written in place.
        last_layer: only the end ``g_N`` is a target (the states short of it are not needed).
        bar: progress bar, advanced by one per predecessor state.

    Returns:
        ``(cur, best)``: the ``(N + 1, B, *shape)`` states of layer k and their ``(N + 1,)``
        float64 MSE against the teacher (``inf`` where no step landed).
    """
    n = search.grid.size - 1
    cur = torch.zeros_like(xs)
    best = np.full(n + 1, np.inf)
    preds = [i for i in np.flatnonzero(prev_ok) if i < n]
    # Predecessors go through the model together, several per call when batch_size allows.
    for g0 in range(0, len(preds), search.per_call):
        members = preds[g0 : g0 + search.per_call]
        v_all = _block_velocities(search, prev[members], search.grid[members])
        for m, i in enumerate(members):
            targets = np.array([n]) if last_layer else np.arange(i + 1, n + 1)
            for c0 in range(0, targets.size, search.targets_per_chunk):
                js = targets[c0 : c0 + search.targets_per_chunk]
                cand = _step_candidates(search, prev[i], v_all[m], i, js)
                err = _squared_error(cand, xs[js]).cpu().numpy()
                better = err < best[js]  # strict: the smallest predecessor index wins ties
                if better.any():
                    won = js[better]
                    best[won] = err[better]
                    back_k[won] = i
                    cur[won] = cand[torch.from_numpy(np.flatnonzero(better)).to(search.device)]
        bar.update(len(members))
    return cur, best


def _dp_layers(
    search: _Search, noise: Tensor, xs: Tensor, max_nfe: int, bar: Any
) -> tuple[np.ndarray, dict[int, float]]:
    """Layers 1..``max_nfe`` of the DP, from ``z[0][0]`` = the noise ``(B, *shape)`` at ``t = 0``.

    Returns:
        ``(back, finals)``: ``(max_nfe + 1, N + 1)`` int64 backpointers (row k: the predecessor
        of each node of layer k, -1 where none) and ``{k: e[k][N]}``, the endpoint MSE per budget.

    Raises:
        CostMatrixError: no k-step path reached the end with a finite state.
    """
    n = search.grid.size - 1
    prev = torch.zeros_like(xs)
    prev[0] = noise
    prev_ok = np.zeros(n + 1, dtype=bool)
    prev_ok[0] = True
    back = np.full((max_nfe + 1, n + 1), -1, dtype=np.int64)
    finals: dict[int, float] = {}
    for k in range(1, max_nfe + 1):
        bar.set_postfix_str(f"step {k} of {max_nfe}", refresh=False)
        cur, best = _dp_layer(search, xs, prev, prev_ok, back[k], k == max_nfe, bar)
        if not np.isfinite(best[n]):
            raise CostMatrixError(
                f"no {k}-step path reached the end with a finite state; the model produced NaN or inf."
            )
        finals[k] = float(best[n])
        prev, prev_ok = cur, np.isfinite(best)
    return back, finals


def _backtrack_paths(back: np.ndarray, finals: dict[int, float]) -> dict[int, tuple[np.ndarray, float]]:
    """``{k: (indices, cost)}``: the path to node ``(k, N)`` followed back through ``back`` ``(K + 1, N + 1)``."""
    n = back.shape[1] - 1
    out: dict[int, tuple[np.ndarray, float]] = {}
    for k in finals:
        path = [n]
        for step in range(k, 0, -1):
            path.append(int(back[step, path[-1]]))
        out[k] = (np.array(path[::-1], dtype=np.int64), finals[k])
    return out


def global_error_paths(
    model: Callable[..., Tensor],
    noise: Tensor,
    grid: Any,
    max_nfe: int,
    *,
    solver: Literal["euler", "heun"] = "euler",
    cond: dict | None = None,
    batch_size: int | None = None,
    substeps: int = 1,
    chunk_bytes: int = 2**27,
    progress: bool = False,
) -> dict[int, tuple[np.ndarray, float]]:
    """State-carrying DP over a base grid for every budget 1..``max_nfe`` (OSS, Pei et al. 2025).

    See the module docstring for the recursion, what is simplified and the cost in model
    evaluations. Predecessors are visited in increasing order and replaced only on a
    strictly smaller error, so ties go to the smallest index and the result is deterministic.

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape ``(rows,)``; 0 = noise, 1 = data.
        noise: ``(B, *shape)`` search noises at ``t = 0``; states keep their dtype and device,
            errors are accumulated in float64.
        grid: ``(N + 1,)`` base grid times from 0 to 1.
        max_nfe: largest step budget, ``1 <= max_nfe <= N``.
        solver: ``"euler"`` (one evaluation per step) or ``"heun"`` (two per step; a budget
            counts steps, so Heun's NFE is twice the budget).
        cond: conditioning for every model call; tensors whose first dimension is B are
            per-sample and follow their samples, other values are passed unchanged.
        batch_size: rows per model call (default B: one predecessor state, or one
            predecessor/target pair for Heun's second evaluation, per call). The result
            does not depend on it beyond floating-point rounding inside the model.
        substeps: Euler sub-steps per grid interval for the teacher trajectory. 1 (the OSS
            and BOSS choice) makes the N-step path exact by construction; more gives a teacher
            closer to the true ODE, at ``substeps`` times the teacher's cost.
        chunk_bytes: bound on the float64 block of candidate states scored at once.
        progress: show a tqdm bar over the DP's predecessor states (each one model call per
            noise, two for Heun), layer by layer.

    Returns:
        ``{nfe: (indices, cost)}``: ``indices`` an ``(nfe + 1,)`` int64 array of grid indices
        ``0, ..., N`` (strictly increasing), ``cost`` the endpoint MSE per dimension, averaged
        over samples, of the solver run along that path against the teacher's ``xs[N]``.

    Raises:
        CostMatrixError: an impossible budget, or a model that produced no finite state.
        BossflowError: a bad noise tensor, solver name or batch size.

    Example:
        >>> import torch, bossflow as bf
        >>> model = bf.GaussianMixtureFlow(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), std=0.3)
        >>> noise = bf.gaussian_noise(16, (2,), seed=0, dtype=torch.float64)
        >>> paths = global_error_paths(model, noise, bf.uniform_schedule(6).times, 3)
        >>> paths[1][0].tolist(), len(paths[3][0])
        ([0, 6], 4)
    """
    grid = _check_inputs(noise, grid, solver, batch_size)
    n = grid.size - 1
    max_nfe = check_budget(max_nfe, n)
    search = _search_setup(model, noise, grid, solver, cond, batch_size, chunk_bytes)

    from tqdm.auto import tqdm

    # Layer 1's predecessor is node 0; layer k's, the nodes k - 1 steps reach short of the end: k - 1 .. N - 1.
    states = 1 + sum(n - k + 1 for k in range(2, max_nfe + 1))
    bar = tqdm(total=states, desc="global-dp", unit="state", disable=not progress)
    with torch.no_grad(), bar:
        bar.set_postfix_str("teacher", refresh=False)
        xs = batched_trajectory(model, noise, grid, batch_size=search.rows, substeps=substeps, cond=search.cond).xs
        back, finals = _dp_layers(search, noise, xs, max_nfe, bar)
    return _backtrack_paths(back, finals)


def global_error_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    solver: Literal["euler", "heun"] = "euler",
    batch_size: int | None = None,
    substeps: int = 1,
    progress: bool = False,
) -> dict[int, Schedule]:
    """Global-error DP :class:`Schedule` for each budget in ``nfes``, from one search. See :func:`global_error_paths`.

    Args:
        model, noise, grid, nfes, cond, provenance: as for every search (:mod:`bossflow.search`).
        solver: ``"euler"`` or ``"heun"``; the schedule is meant for that solver.
        batch_size: rows per model call.
        substeps: teacher sub-steps per grid interval.
        progress: show a tqdm bar over the DP (see :func:`global_error_paths`).

    Returns:
        ``{nfe: Schedule}`` with ``method="global-dp"``, the grid ``indices``, the endpoint
        ``cost`` (MSE per dimension on the search noises), ``solver`` and ``samples``.
    """
    grid = _check_inputs(noise, grid, solver, batch_size)
    budgets = check_budgets(nfes, grid.size - 1)
    paths = global_error_paths(
        model, noise, grid, budgets[-1], solver=solver, cond=cond, batch_size=batch_size, substeps=substeps,
        progress=progress,
    )
    out = {}
    for k in budgets:
        idx, total = paths[k]
        found = {"method": "global-dp", "indices": idx.tolist(), "cost": total, "solver": solver,
                 "samples": int(noise.shape[0]), "substeps": substeps}
        out[k] = Schedule(grid[idx], **{**(provenance or {}), **found})
    return out
