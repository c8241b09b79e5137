"""Tests of the AutoDiffusion-style evolutionary search and the OLSS-style steps.

Both run on the exact mixture flows, so every error is measured against a known teacher
(the fine Euler trajectory on the grid) or the true ODE solution (dopri5).
"""

import itertools

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.errors import BossflowError, ScheduleError
from bossflow.models import gmm_2d, gmm_64d
from bossflow.search.evolution import evolution_schedules, snap_to_grid
from bossflow.search.olss import olss_schedules, olss_solve

FLOWS = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}


def make_case(flow, n, samples, seed=0):
    model = FLOWS[flow]()
    noise = bf.gaussian_noise(samples, (model.dim,), seed=seed, dtype=torch.float64)
    return model, noise, bf.uniform_schedule(n).times


def endpoint_mse(x, target):
    return float((x.double() - target.double()).pow(2).mean())


def assert_valid(schedules, grid, nfes, method):
    assert sorted(schedules) == list(nfes)
    for k, s in schedules.items():
        assert isinstance(s, bf.Schedule) and s.nfe == k
        assert s.meta["method"] == method
        idx = np.asarray(s.meta["indices"])
        assert idx[0] == 0 and idx[-1] == grid.size - 1 and np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(s.times, grid[idx])


def same_schedules(a, b):
    return a.keys() == b.keys() and all(
        np.array_equal(a[k].times, b[k].times) and a[k].meta == b[k].meta for k in a
    )


# --- evolution ---------------------------------------------------------------------------


def test_evolution_valid_for_every_nfe_and_deterministic():
    model, noise, grid = make_case("gmm-2d", 20, 32)
    nfes = list(range(1, 11))
    first = evolution_schedules(model, noise, grid, nfes, seed=0, provenance={"model": "gmm-2d", "method": "x"})
    assert_valid(first, grid, nfes, "evolution")
    assert first[3].meta["model"] == "gmm-2d"  # provenance kept, the search's own method wins
    assert same_schedules(first, evolution_schedules(model, noise, grid, nfes, seed=0, provenance={"model": "gmm-2d", "method": "x"}))
    other = evolution_schedules(model, noise, grid, nfes, seed=1)
    assert_valid(other, grid, nfes, "evolution")
    # Small spaces are enumerated, so every seed finds the same exact optimum there.
    for k in (1, 2, 3):
        assert first[k].meta["exhaustive"] and other[k].meta["indices"] == first[k].meta["indices"]
    assert not first[8].meta["exhaustive"]


@pytest.mark.parametrize("flow", ["gmm-2d", "gmm-64d"])
def test_evolution_never_worse_than_its_seeds(flow):
    model, noise, grid = make_case(flow, 24, 48)
    teacher = bf.fine_trajectory(model, noise, grid).xs[-1]
    found = evolution_schedules(model, noise, grid, [2, 4, 6, 8], population=12, generations=8)
    for k, s in found.items():
        ours = endpoint_mse(bf.euler(model, noise, s.times), teacher)
        assert s.meta["cost"] == pytest.approx(ours, rel=1e-12)
        uniform = endpoint_mse(bf.euler(model, noise, bf.uniform_schedule(k)), teacher)  # 24 % k == 0: on the grid
        assert s.meta["uniform_cost"] == pytest.approx(uniform, rel=1e-12)
        assert ours <= uniform + 1e-15
        for family in (bf.edm_schedule(k), bf.shifted_schedule(k)):
            seeded = grid[snap_to_grid(grid, family.times)]
            assert ours <= endpoint_mse(bf.euler(model, noise, seeded), teacher) + 1e-15


def test_evolution_finds_the_optimum_of_a_small_grid():
    model, noise, grid = make_case("gmm-64d", 10, 16)
    teacher = bf.fine_trajectory(model, noise, grid).xs[-1]
    found = evolution_schedules(model, noise, grid, [3], population=4, generations=3, samples=None)[3]
    assert not found.meta["exhaustive"]  # C(9, 2) = 36 > 4 * 4 evaluations
    best = min(
        endpoint_mse(bf.euler(model, noise, grid[[0, i, j, 10]]), teacher)
        for i, j in itertools.combinations(range(1, 10), 2)
    )
    assert found.meta["cost"] >= best - 1e-15
    exact = evolution_schedules(model, noise, grid, [3], population=4, generations=10, samples=None)[3]
    assert exact.meta["exhaustive"] and exact.meta["cost"] == pytest.approx(best, rel=1e-12)


def test_evolution_rows_match_a_counter():
    model, noise, grid = make_case("gmm-2d", 20, 100)
    counted = bf.NFECounter(model)
    found = evolution_schedules(counted, noise, grid, [1, 3, 5], population=8, generations=4, samples=40, substeps=2)
    metas = [s.meta for s in found.values()]
    assert all(m["samples"] == 40 for m in metas)
    assert metas[0]["teacher_rows"] == 20 * 2 * 40 and metas[0]["teacher_calls"] == 20 * 2
    assert counted.samples == metas[0]["teacher_rows"] + sum(m["search_rows"] for m in metas)
    assert counted.nfe == metas[0]["teacher_calls"] + sum(m["search_calls"] for m in metas)
    for k, m in zip((1, 3, 5), metas):
        assert m["search_rows"] == m["evaluations"] * k * 40
        assert m["evaluations"] <= 8 * (4 + 1)


def test_evolution_does_not_depend_on_batch_size():
    model, noise, grid = make_case("gmm-2d", 20, 32)
    a = evolution_schedules(model, noise, grid, [5], population=8, generations=4)[5]
    b = evolution_schedules(model, noise, grid, [5], population=8, generations=4, batch_size=50)[5]
    assert a.meta["indices"] == b.meta["indices"]
    assert a.meta["cost"] == pytest.approx(b.meta["cost"], rel=1e-12)
    assert b.meta["search_calls"] > a.meta["search_calls"]


# --- OLSS --------------------------------------------------------------------------------


def test_olss_valid_for_every_nfe_and_deterministic():
    model, noise, grid = make_case("gmm-2d", 20, 64)
    nfes = list(range(1, 11))
    first = olss_schedules(model, noise, grid, nfes, provenance={"model": "gmm-2d"})
    assert_valid(first, grid, nfes, "olss")
    assert same_schedules(first, olss_schedules(model, noise, grid, nfes, provenance={"model": "gmm-2d"}))
    for k, s in first.items():
        coef = s.meta["olss"]
        assert [len(r) for r in coef["a"]] == [len(r) for r in coef["b"]] == list(range(1, k + 1))
        assert all(c == 0.0 for row in coef["a"] for c in row[1:])  # OLSS's basis: x_0 and the velocities
    for options in ({"selection": "uniform"}, {"fit": "teacher"}, {"basis": "states"}):
        assert_valid(olss_schedules(model, noise, grid, nfes, **options), grid, nfes, "olss")


@pytest.mark.parametrize("flow", ["gmm-2d", "gmm-64d"])
def test_olss_reproduces_the_teacher_better_than_euler(flow):
    model, noise, grid = make_case(flow, 20, 128)
    teacher = bf.fine_trajectory(model, noise, grid).xs[-1]
    found = olss_schedules(model, noise, grid, [2, 3, 4, 6, 8])
    for s in found.values():
        ours = endpoint_mse(olss_solve(model, noise, s), teacher)
        assert s.meta["cost"] == pytest.approx(ours, rel=1e-9)
        # Measured OLSS/Euler MSE ratios: 2-D 0.30, 0.44, 0.42, 0.07, 0.001 (K = 2, 3, 4, 6, 8);
        # 64-D 0.84, 0.51, 0.18, 0.14, 0.015.
        euler = endpoint_mse(bf.euler(model, noise, s.times), teacher)
        assert ours < (0.95 if s.nfe < 4 else 0.6) * euler


def test_olss_beats_euler_on_fresh_noises_64d():
    model, noise, grid = make_case("gmm-64d", 20, 128)
    found = olss_schedules(model, noise, grid, [3, 4, 6, 8])
    z = bf.gaussian_noise(256, (model.dim,), seed=1, dtype=torch.float64)
    reference = bf.reference_solve(model, z, rtol=1e-7, atol=1e-7)
    for s in found.values():
        ours = bf.endpoint_rmse(olss_solve(model, z, s), reference)
        euler = bf.endpoint_rmse(bf.euler(model, z, s.times), reference)
        # Measured OLSS/Euler RMSE ratios: 0.77, 0.63, 0.68, 0.72 (K = 3, 4, 6, 8).
        assert ours < 0.85 * euler


def test_olss_solve_calls_the_model_k_times_and_rows_match_a_counter():
    model, noise, grid = make_case("gmm-2d", 20, 50)
    counted = bf.NFECounter(model)
    found = olss_schedules(counted, noise, grid, [1, 4, 7])
    metas = [s.meta for s in found.values()]
    assert metas[0]["teacher_rows"] == 20 * 50 and metas[0]["teacher_calls"] == 20
    for k, m in zip((1, 4, 7), metas):
        assert m["search_rows"] == (k - 1) * 50 and m["search_calls"] == k - 1
    assert counted.samples == 20 * 50 + sum(m["search_rows"] for m in metas)
    assert counted.nfe == 20 + sum(m["search_calls"] for m in metas)
    for k, s in found.items():
        counted.reset()
        x = olss_solve(counted, noise[:7], s)
        assert counted.nfe == k and counted.samples == 7 * k and x.shape == (7, 2)


def test_olss_schedule_survives_save_and_load(tmp_path):
    model, noise, grid = make_case("gmm-64d", 20, 32)
    found = olss_schedules(model, noise, grid, [2, 5])
    z = bf.gaussian_noise(16, (model.dim,), seed=3, dtype=torch.float64)
    path = tmp_path / "olss.json"
    for k, s in found.items():
        s.save(path)
        loaded = bf.Schedule.load(path)
        assert loaded.meta["olss"] == s.meta["olss"]
        assert torch.equal(olss_solve(model, z, loaded), olss_solve(model, z, s))
    bf.save_schedules(path, found.values())
    assert all(torch.equal(olss_solve(model, z, s), olss_solve(model, z, found[k])) for k, s in bf.load_schedules(path).items())


def test_olss_solve_keeps_the_noise_dtype():
    model, noise, grid = make_case("gmm-2d", 20, 32)
    s = olss_schedules(model, noise, grid, [3])[3]
    x64 = olss_solve(model, noise, s)
    x32 = olss_solve(model, noise.float(), s)
    assert x32.dtype == torch.float32
    assert torch.allclose(x32.double(), x64, atol=1e-4)


class ShiftedFlow:
    """A conditional model: the mixture's velocity plus a per-sample constant ``shift`` ``(B, D)``."""

    def __init__(self):
        self.flow = gmm_2d()

    def __call__(self, x, t, shift):
        return self.flow(x, t) + shift


def test_per_sample_conditioning_follows_its_samples():
    model, noise, grid = ShiftedFlow(), make_case("gmm-2d", 20, 48)[1], bf.uniform_schedule(20).times
    shift = 0.3 * bf.gaussian_noise(48, (2,), seed=5, dtype=torch.float64)
    cond = {"shift": shift}
    teacher = bf.fine_trajectory(model, noise, grid, cond=cond).xs[-1]
    evo = evolution_schedules(model, noise, grid, [4], cond=cond, population=8, generations=3, batch_size=40)[4]
    assert evo.meta["cost"] == pytest.approx(endpoint_mse(bf.euler(model, noise, evo.times, cond=cond), teacher), rel=1e-12)
    sub = evolution_schedules(model, noise, grid, [4], cond=cond, population=8, generations=3, samples=20)[4]
    part = bf.fine_trajectory(model, noise[:20], grid, cond={"shift": shift[:20]}).xs[-1]
    assert sub.meta["cost"] == pytest.approx(
        endpoint_mse(bf.euler(model, noise[:20], sub.times, cond={"shift": shift[:20]}), part), rel=1e-12
    )
    ols = olss_schedules(model, noise, grid, [4], cond=cond, batch_size=20)[4]
    assert ols.meta["cost"] == pytest.approx(endpoint_mse(olss_solve(model, noise, ols, cond=cond), teacher), rel=1e-9)


# --- bad input ---------------------------------------------------------------------------


def test_olss_solve_refuses_schedules_without_coefficients():
    model, noise, grid = make_case("gmm-2d", 20, 16)
    with pytest.raises(ScheduleError, match="no OLSS coefficients"):
        olss_solve(model, noise, bf.uniform_schedule(3))
    with pytest.raises(ScheduleError, match="needs a Schedule"):
        olss_solve(model, noise, [0.0, 0.5, 1.0])
    s = olss_schedules(model, noise, grid, [3])[3]
    damaged = s.with_meta(olss={**s.meta["olss"], "b": s.meta["olss"]["b"][:2]})
    with pytest.raises(ScheduleError, match="coefficients 'b'"):
        olss_solve(model, noise, damaged)
    nan = s.with_meta(olss={**s.meta["olss"], "a": [[float("nan")], *s.meta["olss"]["a"][1:]]})
    with pytest.raises(ScheduleError):
        olss_solve(model, noise, nan)


@pytest.mark.parametrize(
    "options",
    [
        {"nfes": [0]},
        {"nfes": [21]},
        {"nfes": []},
        {"nfes": [2.5]},
        {"grid": [0.0, 0.7, 0.5, 1.0]},
        {"noise": [[0.0, 1.0]]},
        {"population": 1},
        {"generations": -1},
        {"parents": 1},
        {"parents": 40},
        {"mutation_prob": 0.0},
        {"samples": 0},
        {"seed": -1},
        {"families": ["karras"]},
        {"batch_size": 0},
        {"substeps": 0},
    ],
)
def test_evolution_bad_inputs(options):
    _assert_refused(evolution_schedules, options)


@pytest.mark.parametrize(
    "options",
    [
        {"nfes": [0]},
        {"nfes": [21]},
        {"nfes": []},
        {"grid": [0.0, 1.5]},
        {"noise": torch.zeros(4, 2, dtype=torch.int64)},
        {"selection": "dp"},
        {"fit": "both"},
        {"basis": "latents"},
        {"ridge": -1.0},
        {"ridge": float("nan")},
        {"substeps": 0},
        {"batch_size": 0},
    ],
)
def test_olss_bad_inputs(options):
    _assert_refused(olss_schedules, options)


def _assert_refused(search, options):
    """``search`` on a small gmm-2d case, with ``options`` overriding noise, grid, nfes or options, raises."""
    model, noise, grid = make_case("gmm-2d", 20, 8)
    args = {"noise": noise, "grid": grid, "nfes": [2], **options}
    with pytest.raises(BossflowError):
        search(model, args.pop("noise"), args.pop("grid"), args.pop("nfes"), **args)
