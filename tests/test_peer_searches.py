"""Tests of the peers' searches: GITS-style DP (:mod:`bossflow.search.gits`) and AYS-style refinement (:mod:`bossflow.search.ays`).

Oracles: per-pair loops for the cost matrices, brute-force enumeration of every path for
the DP, and the coordinate-descent invariants (no sweep increases the objective, the result
is no worse than its start and no single coordinate move improves it).
"""

import itertools
import math

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.errors import BossflowError
from bossflow.models import gmm_2d, gmm_64d
from bossflow.search.ays import (
    ays_interval_costs,
    ays_refine,
    ays_schedules,
    interpolate_times,
    path_cost,
    snap_to_grid,
)
from bossflow.search.gits import gits_cost_matrix, gits_paths, gits_schedules

FLOWS = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}

METHODS = {
    "gits": (gits_schedules, {}),
    "gits-dev": (gits_schedules, {"metric": "dev", "coeff": 1.15}),
    "ays": (ays_schedules, {}),
    "ays-euler": (ays_schedules, {"objective": "euler", "base_nfe": 4}),
}


def make_case(flow, n, samples, seed=0):
    model = FLOWS[flow]()
    noise = bf.gaussian_noise(samples, (model.dim,), seed=seed, dtype=torch.float64)
    return model, noise, bf.uniform_schedule(n).times


def teacher(model, noise, grid, reference="heun"):
    traj = bf.fine_trajectory(model, noise, grid, method=reference)
    return traj.xs, traj.vs


def deviation(y, start, end):
    """Distance of ``y`` from the line through ``start`` and ``end`` (one sample, plain vectors)."""
    u = (end - start) / torch.linalg.norm(end - start)
    w = end - y
    return float(torch.linalg.norm(w - torch.dot(w, u) * u))


def reference_gits_cost(xs, vs, grid, metric):
    """GITS cost, one pair and one sample at a time (an independent re-implementation)."""
    n, batch, dim = grid.size - 1, xs.shape[1], xs.shape[2]
    cost = np.full((n + 1, n + 1), np.inf)
    for i in range(n):
        for j in range(i + 1, n + 1):
            total = 0.0
            for b in range(batch):
                est = xs[i, b] + (grid[j] - grid[i]) * vs[i, b]
                if metric == "l2":
                    total += float(torch.linalg.norm(est - xs[j, b])) / math.sqrt(dim)
                elif metric == "l1":
                    total += float((est - xs[j, b]).abs().sum()) / dim
                else:
                    dev_tea = 0.0 if j == n else deviation(xs[j, b], xs[0, b], xs[n, b])
                    total += (deviation(est, xs[0, b], xs[n, b]) - dev_tea) / math.sqrt(dim)
            cost[i, j] = total / batch
    return cost


def brute_force_gits(cost, nfe, coeff):
    """Least discounted cost over every ``nfe``-step path 0 -> N."""
    n = cost.shape[0] - 1
    best = math.inf
    for inner in itertools.combinations(range(1, n), nfe - 1):
        path = (0, *inner, n)
        total = sum(coeff**k * cost[a, b] for k, (a, b) in enumerate(zip(path[:-1], path[1:])))
        best = min(best, total)
    return best


# --- every method ----------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_valid_schedule_for_every_budget_and_deterministic(method):
    fn, options = METHODS[method]
    model, noise, grid = make_case("gmm-2d", 20, 24)
    nfes = list(range(1, 11))
    first = fn(model, noise, grid, nfes, provenance={"model": "gmm-2d", "method": "overwritten"}, **options)
    again = fn(model, noise, grid, nfes, provenance={"model": "gmm-2d"}, **options)
    assert sorted(first) == nfes
    for nfe in nfes:
        s = first[nfe]
        assert isinstance(s, bf.Schedule) and s.nfe == nfe
        assert s.times[0] == 0.0 and s.times[-1] == 1.0 and np.all(np.diff(s.times) > 0)
        assert s.meta["method"] == method.split("-")[0] and s.meta["model"] == "gmm-2d"
        assert s.meta["samples"] == 24
        assert np.array_equal(grid[np.asarray(s.meta["indices"])], s.times)
        assert np.array_equal(s.times, again[nfe].times) and s.meta == again[nfe].meta


@pytest.mark.parametrize("method", sorted(METHODS))
def test_conditioning_follows_the_samples(method):
    fn, options = METHODS[method]
    base, noise, grid = make_case("gmm-64d", 12, 10)

    def scaled(x, t, scale):
        return base(x, t) * scale

    plain = fn(base, noise, grid, [2, 3, 5], batch_size=4, **options)
    with_cond = fn(scaled, noise, grid, [2, 3, 5], cond={"scale": torch.ones(10, 1, dtype=torch.float64)},
                   batch_size=4, **options)
    for nfe in plain:
        assert plain[nfe].meta["indices"] == with_cond[nfe].meta["indices"]
        assert plain[nfe].meta["cost"] == pytest.approx(with_cond[nfe].meta["cost"], rel=1e-12, abs=1e-15)


# --- GITS ------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("metric", ["l2", "l1", "dev"])
def test_gits_cost_matches_per_pair_reference(flow, metric):
    model, noise, grid = make_case(flow, 7, 6, seed=2)
    xs, vs = teacher(model, noise, grid)
    ours = gits_cost_matrix(model, noise, grid, metric=metric, batch_size=4)  # two batches
    ref = reference_gits_cost(xs, vs, grid, metric)
    iu = np.triu_indices(grid.size, 1)
    assert np.all(np.isinf(ours[np.tril_indices(grid.size)]))
    np.testing.assert_allclose(ours[iu], ref[iu], rtol=0, atol=1e-10)
    if metric != "dev":
        assert np.all(ours[iu] > 0)  # the Heun teacher: every jump has a real error


def test_gits_euler_teacher_is_the_boss_trajectory():
    model, noise, grid = make_case("gmm-2d", 6, 5)
    xs, vs = teacher(model, noise, grid, reference="euler")
    ours = gits_cost_matrix(model, noise, grid, reference="euler")
    iu = np.triu_indices(grid.size, 1)
    np.testing.assert_allclose(ours[iu], reference_gits_cost(xs, vs, grid, "l2")[iu], rtol=0, atol=1e-10)
    assert np.allclose(np.diag(ours, 1), 0.0, atol=1e-12)  # C[j, j + 1] = 0, as in BOSS


@pytest.mark.parametrize("coeff", [1.0, 1.15, 0.8])
@pytest.mark.parametrize("signed", [False, True])
def test_gits_dp_equals_brute_force_on_random_matrices(coeff, signed):
    rng = np.random.default_rng(7)
    n = 8
    for _ in range(5):
        cost = np.full((n + 1, n + 1), np.inf)
        iu = np.triu_indices(n + 1, 1)
        cost[iu] = rng.random(iu[0].size) - (0.5 if signed else 0.0)  # GITS's dev costs can be negative
        paths = gits_paths(cost, n, coeff)
        assert sorted(paths) == list(range(1, n + 1))
        for nfe, (idx, total) in paths.items():
            assert idx[0] == 0 and idx[-1] == n and idx.size == nfe + 1 and np.all(np.diff(idx) > 0)
            weights = coeff ** np.arange(nfe)
            assert total == pytest.approx(float(np.sum(weights * cost[idx[:-1], idx[1:]])), rel=1e-12, abs=1e-12)
            assert total == pytest.approx(brute_force_gits(cost, nfe, coeff), rel=1e-12, abs=1e-12)


def test_gits_dp_with_coeff_one_is_the_bellman_dp(rng):
    n = 12
    cost = np.full((n + 1, n + 1), np.inf)
    iu = np.triu_indices(n + 1, 1)
    cost[iu] = rng.random(iu[0].size)
    ours, bellman = gits_paths(cost, n, 1.0), bf.bellman_paths(cost, n)
    for nfe in ours:
        assert ours[nfe][0].tolist() == bellman[nfe][0].tolist()
        assert ours[nfe][1] == pytest.approx(bellman[nfe][1], rel=1e-12)


@pytest.mark.parametrize("metric, coeff", [("l2", 1.0), ("dev", 1.15)])
def test_gits_schedules_are_brute_force_optimal_on_the_real_cost(metric, coeff):
    model, noise, grid = make_case("gmm-64d", 9, 12)
    cost = gits_cost_matrix(model, noise, grid, metric=metric)
    schedules = gits_schedules(model, noise, grid, [1, 2, 3, 4, 5], metric=metric, coeff=coeff)
    for nfe, s in schedules.items():
        assert s.meta["cost"] == pytest.approx(brute_force_gits(cost, nfe, coeff), rel=1e-12, abs=1e-14)
        assert s.meta["metric"] == metric and s.meta["coeff"] == coeff


# --- AYS -------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["euler", "heun"])
def test_ays_costs_match_per_pair_reference(reference):
    model, noise, grid = make_case("gmm-64d", 6, 5, seed=4)
    grid = np.array([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0])  # non-uniform on purpose
    xs, vs = teacher(model, noise, grid, reference=reference)
    v_end = model(xs[-1], torch.ones(noise.shape[0], dtype=torch.float64))
    v_all = torch.cat([vs, v_end[None]])
    n, dim = grid.size - 1, model.dim
    klub = ays_interval_costs(model, noise, grid, reference=reference, batch_size=2)
    euler = ays_interval_costs(model, noise, grid, objective="euler", reference=reference, batch_size=3)
    for i in range(n):
        for j in range(i + 1, n + 1):
            mismatch = [float((v_all[m] - v_all[i]).pow(2).sum(dim=1).mean()) / dim for m in range(n + 1)]
            ref = sum(0.5 * (grid[m + 1] - grid[m]) * (mismatch[m] + mismatch[m + 1]) for m in range(i, j))
            assert klub[i, j] == pytest.approx(ref, rel=1e-10, abs=1e-12)
            est = xs[i] + (grid[j] - grid[i]) * vs[i]
            assert euler[i, j] == pytest.approx(float((est - xs[j]).pow(2).mean()), rel=1e-10, abs=1e-12)
    assert np.all(np.isinf(klub[np.tril_indices(n + 1)]))


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("objective", ["klub", "euler"])
def test_ays_sweeps_never_increase_the_objective(flow, objective):
    model, noise, grid = make_case(flow, 30, 16)
    cost = ays_interval_costs(model, noise, grid, objective=objective)
    for nfe in (2, 3, 5, 6, 10):
        start = snap_to_grid(bf.uniform_schedule(nfe).times, grid)
        idx, history = ays_refine(cost, start)
        assert history[0] == pytest.approx(path_cost(cost, start), rel=1e-15)
        assert all(b <= a * (1 + 1e-12) for a, b in zip(history[:-1], history[1:]))
        assert history[-1] <= history[0] and history[-1] == pytest.approx(path_cost(cost, idx), rel=1e-15)
        # A fixed point: no single coordinate move improves it.
        for k in range(1, nfe):
            a, b = idx[k - 1], idx[k + 1]
            here = cost[a, idx[k]] + cost[idx[k], b]
            assert all(cost[a, c] + cost[c, b] >= here for c in range(a + 1, b))


def test_ays_result_is_no_worse_than_the_uniform_start():
    model, noise, grid = make_case("gmm-64d", 40, 16)
    for base in (3, 4, 8):
        s = ays_schedules(model, noise, grid, [base], base_nfe=base)[base]
        cost = ays_interval_costs(model, noise, grid)
        uniform = path_cost(cost, snap_to_grid(bf.uniform_schedule(base).times, grid))
        assert s.meta["start"] == "uniform" and s.meta["start_cost"] == pytest.approx(uniform, rel=1e-15)
        assert s.meta["cost"] <= uniform
        assert s.meta["cost"] == pytest.approx(path_cost(cost, np.asarray(s.meta["indices"])), rel=1e-15)


def test_ays_subdivides_the_base_and_interpolates_other_budgets():
    model, noise, grid = make_case("gmm-2d", 40, 16)
    out = ays_schedules(model, noise, grid, [2, 3, 4, 8, 12], base_nfe=3)
    assert out[3].meta["start"] == "uniform"
    assert out[12].meta["start"] == "subdivided" and out[2].meta["start"] == "interpolated"
    assert out[4].meta["start"] == "interpolated" and out[8].meta["start"] == "interpolated"
    assert all(s.meta["base_nfe"] == 3 for s in out.values())
    assert all(s.meta["cost"] <= s.meta["start_cost"] for s in out.values())


def test_interpolation_keeps_old_times_and_inserts_log_noise_midpoints():
    times = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    doubled = interpolate_times(times, 8)
    assert doubled.tolist()[::2] == times.tolist()
    assert doubled[1] == pytest.approx(0.1) and doubled[7] == pytest.approx(0.95)  # end intervals: linear in t
    # Interior intervals: the midpoint of log((1 - t) / t), i.e. sqrt of the product of the (1 - t) / t.
    sigma = lambda t: (1 - t) / t  # noqa: E731
    assert sigma(doubled[3]) == pytest.approx(math.sqrt(sigma(0.2) * sigma(0.5)))
    assert sigma(doubled[5]) == pytest.approx(math.sqrt(sigma(0.5) * sigma(0.9)))
    assert interpolate_times(times, 4).tolist() == times.tolist()
    assert interpolate_times(np.array([0.0, 1.0]), 4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_snap_to_grid_gives_distinct_increasing_indices():
    grid = bf.uniform_schedule(6).times
    assert snap_to_grid(np.array([0.0, 0.01, 0.02, 0.03, 1.0]), grid).tolist() == [0, 1, 2, 3, 6]
    assert snap_to_grid(np.array([0.0, 0.97, 0.98, 0.99, 1.0]), grid).tolist() == [0, 3, 4, 5, 6]
    assert snap_to_grid(bf.uniform_schedule(6).times, grid).tolist() == list(range(7))
    quarters = bf.uniform_schedule(4).times
    assert snap_to_grid(np.array([0.0, 0.375, 1.0]), quarters).tolist() == [0, 1, 4]  # a tie goes to the smaller index


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, nfes, options",
    [
        (gits_schedules, [], {}),
        (gits_schedules, [0], {}),
        (gits_schedules, [11], {}),
        (gits_schedules, [2.5], {}),
        (gits_schedules, [2], {"metric": "l3"}),
        (gits_schedules, [2], {"coeff": 0.0}),
        (gits_schedules, [2], {"coeff": float("nan")}),
        (gits_schedules, [2], {"coeff": True}),
        (gits_schedules, [2], {"reference": "rk4"}),
        (gits_schedules, [2], {"substeps": 0}),
        (gits_schedules, [2], {"batch_size": 0}),
        (ays_schedules, [], {}),
        (ays_schedules, [11], {}),
        (ays_schedules, [2], {"objective": "kl"}),
        (ays_schedules, [2], {"base_nfe": 0}),
        (ays_schedules, [2], {"base_nfe": 11}),
        (ays_schedules, [2], {"init": "cosine"}),
        (ays_schedules, [2], {"max_sweeps": 0}),
        (ays_schedules, [2], {"reference": "rk4"}),
        (ays_schedules, [2], {"batch_size": -1}),
    ],
)
def test_bad_budgets_and_options_raise_bossflow_error(fn, nfes, options):
    model, noise, grid = make_case("gmm-2d", 10, 4)
    with pytest.raises(BossflowError):
        fn(model, noise, grid, nfes, **options)


@pytest.mark.parametrize("fn", [gits_schedules, ays_schedules])
def test_bad_noise_and_grid_raise_bossflow_error(fn):
    model, noise, grid = make_case("gmm-2d", 10, 4)
    with pytest.raises(BossflowError):
        fn(model, noise.long(), grid, [2])
    with pytest.raises(BossflowError):
        fn(model, noise, [0.0, 0.5, 0.4, 1.0], [2])


def test_bad_matrices_and_paths_raise_bossflow_error():
    cost = np.full((4, 4), np.inf)
    cost[np.triu_indices(4, 1)] = 1.0
    with pytest.raises(BossflowError):
        gits_paths(np.ones(3), 1)
    with pytest.raises(BossflowError):
        gits_paths(np.where(np.isinf(cost), np.inf, np.nan), 1)
    with pytest.raises(BossflowError):
        gits_paths(cost, 4)
    with pytest.raises(BossflowError):
        ays_refine(cost, [0, 2, 1, 3])
    with pytest.raises(BossflowError):
        ays_refine(cost, [1, 3])
    with pytest.raises(BossflowError):
        ays_refine(cost, [0, 1, 3], max_sweeps=0)
