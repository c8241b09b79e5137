"""Tests of the stages the long searches are made of (global DP, evolution, OLSS, cost matrix).

Each stage is checked on its own contract, on inputs small enough to work out by hand.
"""

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.core import cost
from bossflow.errors import CostMatrixError
from bossflow.models import gmm_2d
from bossflow.search import evolution, global_dp


class Bar:
    """Stands in for a tqdm bar: counts the updates."""

    def __init__(self):
        self.n = 0

    def update(self, k=1):
        self.n += k

    def set_postfix_str(self, *args, **kwargs):
        pass


def test_first_dp_layer_holds_the_euler_step_from_the_noise_to_every_node():
    model, grid = gmm_2d(), bf.uniform_schedule(4).times
    noise = bf.gaussian_noise(6, (2,), seed=1, dtype=torch.float64)
    search = global_dp._search_setup(model, noise, grid, "euler", None, None, 2**27)
    xs = bf.fine_trajectory(model, noise, grid).xs
    prev = torch.zeros_like(xs)
    prev[0] = noise
    ok = np.array([True, False, False, False, False])
    back, bar = np.full(5, -1), Bar()
    cur, best = global_dp._dp_layer(search, xs, prev, ok, back, False, bar)
    v0 = model(noise, torch.zeros(6, dtype=torch.float64))
    for j in range(1, 5):
        assert torch.allclose(cur[j], noise + grid[j] * v0, rtol=1e-12, atol=1e-14)
        assert best[j] == pytest.approx(float((cur[j] - xs[j]).pow(2).mean()), rel=1e-12)
    assert back.tolist() == [-1, 0, 0, 0, 0] and best[0] == np.inf and bar.n == 1


def test_backtracking_follows_the_pointers_from_the_end():
    back = np.array([[-1, -1, -1, -1], [-1, 0, 0, 0], [-1, -1, 1, 1], [-1, -1, -1, 2]])
    paths = global_dp._backtrack_paths(back, {1: 0.5, 2: 0.25, 3: 0.0})
    assert {k: (p.tolist(), c) for k, (p, c) in paths.items()} == {
        1: ([0, 3], 0.5), 2: ([0, 1, 3], 0.25), 3: ([0, 1, 2, 3], 0.0)
    }


def test_fresh_candidates_give_up_after_ten_tries_each():
    evaluate = evolution._Evaluator(None, torch.zeros(1, 2), torch.zeros(1, 2), np.linspace(0, 1, 5), 2, {}, 1)
    evaluate.seen[(2,)] = 1.0
    calls = []

    def make():
        calls.append(1)
        return (2,) if len(calls) > 1 else (1,)

    taken = set()
    assert evolution._fresh(evaluate, make, 3, taken) == [(1,)] and taken == {(1,)} and len(calls) == 30


def test_grid_and_budgets_are_checked_and_sorted():
    noise = torch.zeros(2, 2)
    grid, budgets = evolution._check_grid_and_budgets(noise, bf.uniform_schedule(6).times, [4, 2, 4])
    assert grid.shape == (7,) and budgets == [2, 4]


def test_cost_batches_stream_only_the_samples_not_done():
    shards = []

    def shard_sums(lo, hi):
        shards.append((lo, hi))
        return np.full((3, 3), float(hi - lo))

    sums = np.ones((3, 3))
    cost._stream_batches(shard_sums, sums, 4, batch_size=4, path=None, meta={"n_samples": 10}, progress=False)
    assert shards == [(4, 8), (8, 10)] and np.array_equal(sums, np.full((3, 3), 7.0))


def test_cost_resume_state_starts_fresh_and_refuses_other_runs(tmp_path):
    meta = {"format": cost.COST_FORMAT, "n_samples": 4, "model": "m"}
    sums, done, complete = cost._resume_state(None, meta, 3)
    assert np.array_equal(sums, np.zeros((3, 3))) and done == 0 and not complete
    path = tmp_path / "c.npz"
    cost._save_state(path, np.full((3, 3), 2.0), 2, {**meta, "complete": False})
    sums, done, complete = cost._resume_state(path, meta, 3)
    assert sums[0, 0] == 2.0 and done == 2 and not complete
    with pytest.raises(CostMatrixError, match="different model"):
        cost._resume_state(path, {**meta, "model": "other"}, 3)
