"""Bellman-optimal step schedules: least-cost K-step paths through a cost matrix.

Given a BOSS cost matrix ``C`` ``(N + 1, N + 1)`` over a base grid (0 = noise, N = data),
the schedule with budget K is the path ``0 = i_0 < i_1 < ... < i_K = N`` minimising
``sum_k C[i_k, i_{k+1}]`` (Nguyen et al., ICLR 2024, Sec. 3.2). One forward pass of the
dynamic program

    D_1[j] = C[0, j],        D_k[j] = min_{i < j} D_{k-1}[i] + C[i, j],

gives every budget at once: ``D_k[N]`` is the best K = k cost, and the stored argmin table
rebuilds each path. The inner minimum is one vectorised torch reduction per k, so the
cost is ``O(max_nfe * N^2)`` arithmetic without Python loops over pairs.

Ties are broken towards the smallest predecessor index, so results
are deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import CostMatrixError
from .schedules import Schedule, validate_times


def square_matrix(cost: Any) -> np.ndarray:
    """``cost`` as a float64 ``(N + 1, N + 1)`` array with ``N >= 1``, its values not yet checked.

    Raises:
        CostMatrixError: not numeric, or not square of at least 2 x 2.
    """
    try:
        arr = np.asarray(cost, dtype=np.float64)
    except (TypeError, ValueError):
        raise CostMatrixError(f"the cost matrix must be a numeric 2-D array, got {type(cost).__name__}.") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise CostMatrixError(f"the cost matrix must be square, (N + 1, N + 1) with N >= 1, got shape {arr.shape}.")
    return arr


def validate_cost_matrix(cost: Any) -> np.ndarray:
    """Check a cost matrix and return it as float64.

    Requires a square 2-D matrix of at least 2 x 2 with no NaN and no ``-inf``, and
    non-negative entries above the diagonal (``+inf`` forbids a jump). Entries on and
    below the diagonal are ignored.

    Raises:
        CostMatrixError: naming the problem.
    """
    arr = square_matrix(cost)
    if np.isnan(arr).any():
        i, j = np.argwhere(np.isnan(arr))[0]
        raise CostMatrixError(f"the cost matrix has NaN at [{i}, {j}]; recompute it (did the model diverge?).")
    upper = arr[np.triu_indices(arr.shape[0], k=1)]
    if (upper < 0).any():
        raise CostMatrixError("the cost matrix has negative entries above the diagonal; costs must be >= 0.")
    return arr


def check_budget(nfe: Any, n: int) -> int:
    """Check that a step budget is an integer in ``1..n`` for an ``n``-interval grid."""
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)):
        raise CostMatrixError(f"the step budget (NFE) must be an integer, got {nfe!r}.")
    if nfe < 1:
        raise CostMatrixError(f"the step budget (NFE) must be at least 1, got {nfe}.")
    if nfe > n:
        raise CostMatrixError(f"a {n}-interval base grid allows at most {n} steps, got NFE {nfe}; use a finer grid.")
    return int(nfe)


def check_budgets(nfes: Any, n: int) -> list[int]:
    """The distinct step budgets of ``nfes``, sorted, each checked by :func:`check_budget`.

    Raises:
        CostMatrixError: no budget, or one that is not an integer in ``1..n``.
    """
    if not nfes:
        raise CostMatrixError("give at least one step budget (NFE).")
    return sorted({check_budget(k, n) for k in nfes})


def least_cost_paths(
    cost: np.ndarray, max_nfe: int, step_weights: Any = None
) -> dict[int, tuple[np.ndarray, float]]:
    """The DP itself, on a checked square float64 matrix: least ``sum_k w_k C[i_{k-1}, i_k]`` for every budget.

    Entries on and below the diagonal are ignored; entries above it may be any finite
    number or ``+inf`` (GITS's deviation costs can be negative). With ``step_weights``
    ``(w_1, ..., w_max_nfe)`` the k-th step from the noise end is weighted by ``w_k``
    (GITS's discount ``coeff^(k-1)``); the default weights every step by 1.

    Returns:
        ``{nfe: (indices, total)}`` for the budgets that have a finite-cost path.
    """
    n = cost.shape[0] - 1
    weights = np.ones(max_nfe) if step_weights is None else np.asarray(step_weights, dtype=np.float64)
    upper = np.triu(np.ones_like(cost, dtype=bool), k=1)
    # c_t[j, i] = C[i, j]: rows contiguous for the reduction over predecessors i.
    c_t = torch.from_numpy(np.where(upper, cost, np.inf).T.copy())
    best = float(weights[0]) * c_t[:, 0]  # D_1[j] = w_1 C[0, j]
    preds = torch.zeros((max_nfe + 1, n + 1), dtype=torch.int64)
    totals = {1: float(best[n])}
    for k in range(2, max_nfe + 1):
        # Reaching j in k steps needs j >= k and a predecessor i >= k - 1. torch.min returns
        # the first index among equal minima, as numpy's argmin does, and runs multi-threaded.
        step = c_t[k:, k - 1 :] if weights[k - 1] == 1.0 else float(weights[k - 1]) * c_t[k:, k - 1 :]
        values, arg = torch.min(step + best[None, k - 1 :], dim=1)
        best = torch.full((n + 1,), torch.inf, dtype=torch.float64)
        best[k:] = values
        preds[k, k:] = arg + (k - 1)
        totals[k] = float(best[n])
    preds = preds.numpy()
    out: dict[int, tuple[np.ndarray, float]] = {}
    for k in range(1, max_nfe + 1):
        if not np.isfinite(totals[k]):
            continue
        path = [n]
        for step_k in range(k, 1, -1):
            path.append(int(preds[step_k, path[-1]]))
        path.append(0)
        out[k] = (np.array(path[::-1], dtype=np.int64), totals[k])
    return out


def bellman_paths(cost: Any, max_nfe: int) -> dict[int, tuple[np.ndarray, float]]:
    """Least-cost paths from grid index 0 to N for every budget 1..``max_nfe``, from one DP.

    Args:
        cost: ``(N + 1, N + 1)`` cost matrix; ``cost[i, j]`` for ``i < j`` is the cost of one step.
        max_nfe: largest budget, ``1 <= max_nfe <= N``.

    Returns:
        ``{nfe: (indices, total)}`` with ``indices`` an ``(nfe + 1,)`` int64 array
        ``0, ..., N`` and ``total`` the summed cost. Budgets with no finite-cost path
        (possible only when ``+inf`` entries forbid jumps) are left out.

    Raises:
        CostMatrixError: malformed matrix, impossible budget, or no finite path.

    Example:
        >>> import numpy as np
        >>> C = np.full((4, 4), np.inf)
        >>> C[np.triu_indices(4, 1)] = 1.0
        >>> C[0, 3] = 5.0
        >>> {k: (p.tolist(), c) for k, (p, c) in bellman_paths(C, 3).items()}
        {1: ([0, 3], 5.0), 2: ([0, 1, 3], 2.0), 3: ([0, 1, 2, 3], 3.0)}
    """
    c = validate_cost_matrix(cost)
    max_nfe = check_budget(max_nfe, c.shape[0] - 1)
    out = least_cost_paths(c, max_nfe)
    if not out:
        raise CostMatrixError(f"no path with at most {max_nfe} steps has finite cost; the matrix forbids too many jumps.")
    return out


def bellman_path(cost: Any, nfe: int) -> tuple[np.ndarray, float]:
    """Least-cost path with exactly ``nfe`` steps: ``(indices (nfe + 1,), total)``. See :func:`bellman_paths`."""
    c = validate_cost_matrix(cost)
    nfe = check_budget(nfe, c.shape[0] - 1)
    paths = bellman_paths(c, nfe)
    if nfe not in paths:
        raise CostMatrixError(f"no path with {nfe} steps has finite cost; the matrix forbids too many jumps.")
    return paths[nfe]


def bellman_schedules(cost: Any, grid: Any, nfes: list[int], **meta: Any) -> dict[int, Schedule]:
    """Bellman-optimal :class:`Schedule` for each budget in ``nfes`` on ``grid``.

    Args:
        cost: ``(N + 1, N + 1)`` cost matrix over ``grid``.
        grid: ``(N + 1,)`` base grid times, 0 (noise) to 1 (data): a :class:`Schedule`, tensor, array or list.
        nfes: budgets, each in ``1..N``.
        meta: provenance stored in every schedule (model, samples, seed, ...).

    Returns:
        ``{nfe: Schedule}`` with ``method="bellman"``, the grid ``indices`` and the path ``cost``.
    """
    grid = validate_times(grid, "base grid")
    c = validate_cost_matrix(cost)
    if grid.shape != (c.shape[0],):
        raise CostMatrixError(f"the grid has {grid.size} times but the cost matrix is {c.shape[0]} x {c.shape[0]}.")
    budgets = check_budgets(nfes, c.shape[0] - 1)
    paths = bellman_paths(c, budgets[-1])
    out = {}
    for k in budgets:
        if k not in paths:
            raise CostMatrixError(f"no path with {k} steps has finite cost; the matrix forbids too many jumps.")
        idx, total = paths[k]
        out[k] = Schedule(grid[idx], **{**meta, "method": "bellman", "indices": idx.tolist(), "cost": total})
    return out
