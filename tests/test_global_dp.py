"""Tests of the state-carrying (global-error) DP, :mod:`bossflow.search.global_dp`.

The oracle is brute force: every K-step path of a small grid, run with the same solver
from the same noises and scored by the same endpoint error against the teacher.
"""

import itertools

import numpy as np
import pytest
import torch

import bossflow as bf
import bossflow.search as search
from bossflow.models import gmm_2d, gmm_64d
from bossflow.search import global_error_paths, global_error_schedules

SOLVE = {"euler": bf.euler, "heun": bf.heun}


def endpoint_mse(model, noise, grid, indices, target, solver="euler"):
    x = SOLVE[solver](model, noise, grid[np.asarray(indices)])
    return float((x.double() - target.double()).pow(2).mean())


def brute_force(model, noise, grid, nfe, target, solver="euler"):
    """Least endpoint MSE over every ``nfe``-step path ``0 -> N`` of the grid.

    All paths run at once: rows of path p carry that path's own times, one model call per
    step (an independent re-implementation of the solver step, not the code under test).
    """
    n = grid.size - 1
    paths = np.array([(0, *inner, n) for inner in itertools.combinations(range(1, n), nfe - 1)])
    count, batch = len(paths), noise.shape[0]
    x = noise.repeat(count, 1)
    for step in range(nfe):
        t_cur = torch.tensor(grid[paths[:, step]]).repeat_interleave(batch)
        t_next = torch.tensor(grid[paths[:, step + 1]]).repeat_interleave(batch)
        h = (t_next - t_cur)[:, None]
        v = model(x, t_cur)
        if solver == "heun":
            x = x + 0.5 * h * (v + model(x + h * v, t_next))
        else:
            x = x + h * v
    err = (x - target.repeat(count, 1)).pow(2).reshape(count, -1).mean(dim=1)
    return float(err.min())


def make_case(flow, n, samples, seed=0):
    model = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}[flow]()
    noise = bf.gaussian_noise(samples, (model.dim,), seed=seed, dtype=torch.float64)
    grid = bf.uniform_schedule(n).times
    teacher = bf.fine_trajectory(model, noise, grid).xs
    return model, noise, grid, teacher


@pytest.mark.parametrize("flow, n, samples", [("gmm-2d", 10, 64), ("gmm-2d", 8, 32), ("gmm-64d", 9, 32)])
def test_between_brute_force_and_uniform_or_boss(flow, n, samples):
    model, noise, grid, teacher = make_case(flow, n, samples)
    paths = global_error_paths(model, noise, grid, 4)
    cost = bf.cost_matrix(model, noise, grid)
    for nfe in (2, 3, 4):
        idx, ours = paths[nfe]
        # Its cost is the endpoint error of its own path, run again from the noise.
        assert ours == pytest.approx(endpoint_mse(model, noise, grid, idx, teacher[n]), rel=1e-12, abs=1e-15)
        oracle = brute_force(model, noise, grid, nfe, teacher[n])
        peers = [endpoint_mse(model, noise, grid, bf.bellman_path(cost, nfe)[0], teacher[n])]
        if n % nfe == 0:
            peers.append(endpoint_mse(model, noise, grid, np.arange(0, n + 1, n // nfe), teacher[n]))
        assert oracle <= ours + 1e-12
        assert ours <= min(peers) + 1e-12
        if nfe == 2:  # one candidate per node in layer 1, and the last choice is by endpoint error: exact
            assert ours == pytest.approx(oracle, rel=1e-12)


def test_heun_two_steps_is_exact_and_matches_its_path():
    model, noise, grid, teacher = make_case("gmm-2d", 8, 32)
    paths = global_error_paths(model, noise, grid, 3, solver="heun")
    for nfe in (1, 2, 3):
        idx, ours = paths[nfe]
        assert ours == pytest.approx(endpoint_mse(model, noise, grid, idx, teacher[-1], "heun"), rel=1e-12)
        oracle = brute_force(model, noise, grid, nfe, teacher[-1], "heun")
        assert oracle <= ours + 1e-12
        if nfe <= 2:
            assert ours == pytest.approx(oracle, rel=1e-12)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_every_budget_gives_a_valid_path(solver):
    model, noise, grid, _ = make_case("gmm-2d", 10, 16)
    paths = global_error_paths(model, noise, grid, 10, solver=solver)
    assert sorted(paths) == list(range(1, 11))
    for nfe, (idx, cost) in paths.items():
        assert idx.dtype == np.int64 and idx.shape == (nfe + 1,)
        assert idx[0] == 0 and idx[-1] == 10 and np.all(np.diff(idx) > 0)
        assert np.isfinite(cost) and cost >= 0
    assert paths[1][0].tolist() == [0, 10]
    assert paths[10][0].tolist() == list(range(11))
    if solver == "euler":  # the N-step path is the teacher itself
        assert paths[10][1] == 0.0


def test_deterministic_and_independent_of_batch_size():
    model, noise, grid, _ = make_case("gmm-64d", 10, 24, seed=3)
    first = global_error_paths(model, noise, grid, 6)
    again = global_error_paths(model, noise, grid, 6)
    chunked = global_error_paths(model, noise, grid, 6, batch_size=7)
    grouped = global_error_paths(model, noise, grid, 6, batch_size=1000, chunk_bytes=1)
    for nfe in first:
        assert first[nfe][0].tolist() == again[nfe][0].tolist() and first[nfe][1] == again[nfe][1]
        for other in (chunked, grouped):
            assert other[nfe][0].tolist() == first[nfe][0].tolist()
            assert other[nfe][1] == pytest.approx(first[nfe][1], rel=1e-12)


def test_ties_go_to_the_smallest_index():
    # Zero velocity: every candidate equals the noise and the teacher, all errors are 0.
    def still(x, t):
        return torch.zeros_like(x)

    noise = bf.gaussian_noise(4, (3,), dtype=torch.float64)
    paths = global_error_paths(still, noise, bf.uniform_schedule(6).times, 4)
    assert paths[3][0].tolist() == [0, 1, 2, 6]
    assert paths[4][0].tolist() == [0, 1, 2, 3, 6]


def euler_rows(n, k, b):
    return b * (n + 1 + sum(n - j + 1 for j in range(2, k + 1)))


def heun_rows(n, k, b):
    rows = n + 1  # teacher, first evaluation of layer 1
    rows += 1 if k == 1 else n  # second evaluations of layer 1
    for j in range(2, k + 1):
        preds = n - j + 1
        rows += preds + (preds if j == k else preds * (preds + 1) // 2)
    return b * rows


@pytest.mark.parametrize("solver, rows", [("euler", euler_rows), ("heun", heun_rows)])
@pytest.mark.parametrize("max_nfe", [1, 3, 8])
def test_model_evaluations_are_counted(solver, rows, max_nfe):
    model, noise, grid, _ = make_case("gmm-2d", 8, 5)
    counted = bf.NFECounter(model)
    global_error_paths(counted, noise, grid, max_nfe, solver=solver)
    assert counted.samples == rows(8, max_nfe, 5)
    assert counted.nfe == counted.samples // 5  # default: one call per B rows


def test_per_sample_conditioning_follows_its_samples():
    base = gmm_2d()
    scale = torch.linspace(0.5, 1.5, 12, dtype=torch.float64)

    def conditioned(x, t, scale):
        return base(x, t) * scale[:, None]

    def baked(x, t):
        return base(x, t) * scale[:, None]

    noise = bf.gaussian_noise(12, (2,), dtype=torch.float64)
    grid = bf.uniform_schedule(8).times
    want = global_error_paths(baked, noise, grid, 4, solver="heun")
    for batch_size in (5, 40):
        got = global_error_paths(conditioned, noise, grid, 4, solver="heun", cond={"scale": scale}, batch_size=batch_size)
        for nfe in want:
            assert got[nfe][0].tolist() == want[nfe][0].tolist()
            assert got[nfe][1] == pytest.approx(want[nfe][1], rel=1e-12)


def test_schedules_carry_path_and_provenance():
    model, noise, grid, _ = make_case("gmm-2d", 10, 16)
    scheds = global_error_schedules(model, noise, grid, [4, 2], provenance={"seed": 0, "model": "gmm-2d"})
    paths = global_error_paths(model, noise, grid, 4)
    assert sorted(scheds) == [2, 4]
    for nfe, sched in scheds.items():
        assert isinstance(sched, bf.Schedule) and sched.nfe == nfe
        assert sched.meta["method"] == "global-dp" and sched.meta["seed"] == 0 and sched.meta["model"] == "gmm-2d"
        assert sched.meta["indices"] == paths[nfe][0].tolist()
        assert sched.meta["cost"] == paths[nfe][1]
        np.testing.assert_array_equal(sched.times, grid[paths[nfe][0]])


@pytest.mark.parametrize("budget", [0, -1, 11, 2.0, True, None])
def test_bad_budgets_are_refused(budget):
    model, noise, grid, _ = make_case("gmm-2d", 10, 4)
    with pytest.raises(bf.CostMatrixError):
        global_error_paths(model, noise, grid, budget)
    with pytest.raises(bf.CostMatrixError):
        global_error_schedules(model, noise, grid, [2, budget])


def test_bad_options_are_refused():
    model, noise, grid, _ = make_case("gmm-2d", 10, 4)
    with pytest.raises(bf.BossflowError, match="solver"):
        global_error_paths(model, noise, grid, 2, solver="rk4")
    with pytest.raises(bf.BossflowError, match="batch_size"):
        global_error_paths(model, noise, grid, 2, batch_size=0)
    with pytest.raises(bf.BossflowError, match="noise"):
        global_error_paths(model, noise[0], grid, 2)
    with pytest.raises(bf.ScheduleError):
        global_error_paths(model, noise, [0.0, 0.7, 0.5, 1.0], 2)
    with pytest.raises(bf.CostMatrixError, match="at least one"):
        global_error_schedules(model, noise, grid, [])


def test_non_finite_model_is_reported():
    def broken(x, t):
        return torch.full_like(x, float("nan"))

    noise = bf.gaussian_noise(4, (2,), dtype=torch.float64)
    with pytest.raises(bf.CostMatrixError, match="NaN"):
        global_error_paths(broken, noise, bf.uniform_schedule(4).times, 2)


def test_public_names_import():
    for name in search.__all__:
        assert getattr(search, name) is not None
    assert all(callable(fn) for fn in search.SEARCHES.values())
