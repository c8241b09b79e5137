import itertools

import numpy as np
import pytest

import bossflow as bf
from bossflow.errors import CostMatrixError

from conftest import random_cost_matrix


def brute_force(cost: np.ndarray, nfe: int) -> tuple[tuple[int, ...], float]:
    n = cost.shape[0] - 1
    best_path, best = None, np.inf
    for mids in itertools.combinations(range(1, n), nfe - 1):
        path = (0, *mids, n)
        total = sum(cost[a, b] for a, b in zip(path[:-1], path[1:]))
        if total < best:
            best_path, best = path, total
    return best_path, best


@pytest.mark.parametrize("n", [1, 2, 5, 9, 12])
def test_dp_equals_brute_force_for_every_budget(rng, n):
    for _ in range(3):
        cost = random_cost_matrix(rng, n)
        paths = bf.bellman_paths(cost, n)
        assert sorted(paths) == list(range(1, n + 1))
        for nfe, (indices, total) in paths.items():
            want_path, want_total = brute_force(cost, nfe)
            assert tuple(indices.tolist()) == want_path
            assert total == pytest.approx(want_total, rel=1e-12, abs=0)
            assert indices.dtype == np.int64 and indices[0] == 0 and indices[-1] == n
            assert np.all(np.diff(indices) > 0)


def test_single_budget_matches_all_budgets(rng):
    cost = random_cost_matrix(rng, 30)
    paths = bf.bellman_paths(cost, 10)
    for nfe in (1, 4, 10):
        idx, total = bf.bellman_path(cost, nfe)
        assert np.array_equal(idx, paths[nfe][0]) and total == paths[nfe][1]


def test_ties_break_towards_smallest_index():
    n = 6
    cost = np.full((n + 1, n + 1), np.inf)
    cost[np.triu_indices(n + 1, 1)] = 1.0
    # every 2-step path costs 2: the first predecessor of N, index 1, must be chosen
    idx, total = bf.bellman_path(cost, 2)
    assert idx.tolist() == [0, 1, n] and total == 2.0
    assert bf.bellman_path(cost.copy(), 2)[0].tolist() == [0, 1, n]


def test_infinite_entries_forbid_jumps(rng):
    cost = random_cost_matrix(rng, 5)
    cost[0, 5] = np.inf
    with pytest.raises(CostMatrixError, match="no path with (at most )?1 steps"):
        bf.bellman_path(cost, 1)
    assert sorted(bf.bellman_paths(cost, 2)) == [2]  # the impossible budget is left out
    with pytest.raises(CostMatrixError, match="no path with at most 1 steps"):
        bf.bellman_paths(cost, 1)
    cost[0, 2:] = np.inf
    assert bf.bellman_path(cost, 2)[0][1] == 1


def test_lower_triangle_is_ignored(rng):
    cost = random_cost_matrix(rng, 8)
    other = cost.copy()
    other[np.tril_indices(9)] = 0.0  # zeros on/below the diagonal must not create shortcuts
    for nfe in range(1, 9):
        assert np.array_equal(bf.bellman_path(cost, nfe)[0], bf.bellman_path(other, nfe)[0])


@pytest.mark.parametrize("nfe", [0, -1, 9, 2.5, True, "3"])
def test_impossible_budgets(rng, nfe):
    cost = random_cost_matrix(rng, 8)
    with pytest.raises(CostMatrixError):
        bf.bellman_path(cost, nfe)
    with pytest.raises(CostMatrixError):
        bf.bellman_paths(cost, nfe)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 4)),
        np.zeros((1, 1)),
        np.zeros(5),
        "not a matrix",
    ],
)
def test_malformed_shapes(bad):
    with pytest.raises(CostMatrixError):
        bf.bellman_paths(bad, 1)


def test_nan_and_negative_entries(rng):
    cost = random_cost_matrix(rng, 4)
    with_nan = cost.copy()
    with_nan[1, 3] = np.nan
    with pytest.raises(CostMatrixError, match=r"NaN at \[1, 3\]"):
        bf.bellman_paths(with_nan, 2)
    negative = cost.copy()
    negative[0, 2] = -1.0
    with pytest.raises(CostMatrixError, match="negative"):
        bf.bellman_paths(negative, 2)


def test_bellman_schedules_on_grid(rng):
    n = 10
    cost = random_cost_matrix(rng, n)
    grid = bf.uniform_schedule(n).times
    scheds = bf.bellman_schedules(cost, grid, [3, 1], model="m")
    assert list(scheds) == [1, 3]
    idx, total = bf.bellman_path(cost, 3)
    assert np.array_equal(scheds[3].times, grid[idx])
    assert scheds[3].meta["cost"] == total and scheds[3].meta["indices"] == idx.tolist()
    assert scheds[3].meta["model"] == "m" and scheds[3].meta["method"] == "bellman"
    with pytest.raises(CostMatrixError, match="grid has"):
        bf.bellman_schedules(cost, bf.uniform_schedule(n - 1), [2])
    with pytest.raises(CostMatrixError):
        bf.bellman_schedules(cost, grid, [])
