"""The default search ``auto``: held-out selection among the other searches, then a refit on every noise."""

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.cli import main
from bossflow.errors import BossflowError, ScheduleError
from bossflow.search import SEARCHES, sample_with
from bossflow.search.auto import CANDIDATES, auto_schedules, refit_last_step

TEST_SEED = 0
FAST = {"steps": 20, "screen_steps": 5}


@pytest.fixture(scope="module")
def case():
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test thread setting
    model = bf.models.gmm_2d()
    noise = bf.gaussian_noise(32, (2,), seed=TEST_SEED, dtype=torch.float64)
    grid = bf.uniform_schedule(20).times
    return model, noise, grid


@pytest.fixture(scope="module")
def found(case):
    model, noise, grid = case
    return auto_schedules(model, noise, grid, [1, 2, 3, 4], refine=FAST, provenance={"model": "gmm-2d"})


def test_valid_and_deterministic(case, found):
    model, noise, grid = case
    again = auto_schedules(model, noise, grid, [1, 2, 3, 4], refine=FAST, provenance={"model": "gmm-2d"})
    assert sorted(found) == [1, 2, 3, 4]
    for k, s in found.items():
        assert s.nfe == k and s.times[0] == 0.0 and s.times[-1] == 1.0 and np.all(np.diff(s.times) > 0)
        assert s.meta["method"] == "auto" and s.meta["model"] == "gmm-2d"
        assert s.meta["fit_samples"] == 24 and s.meta["holdout_samples"] == 8 and s.meta["refit"] is True
        assert s.meta["model_rows"] > s.meta["teacher_rows"] > 0
        np.testing.assert_array_equal(s.times, again[k].times)
        assert s.meta == again[k].meta
        counter = bf.NFECounter(model)
        x = sample_with(counter, noise, s)
        assert counter.nfe == k and torch.isfinite(x).all()


def test_selected_is_the_held_out_minimum(found):
    for s in found.values():
        scores = s.meta["holdout_rmse"]
        assert set(scores) == set(CANDIDATES)
        assert scores[s.meta["selected"]] == min(scores.values())
        assert s.meta["candidate_meta"]["method"] == s.meta["selected"]


def test_refit_is_the_winning_search_itself(case, found):
    """With refit, the schedule is exactly what the winning search returns on all the noises."""
    model, noise, grid = case
    winners = {s.meta["selected"] for s in found.values()}
    assert winners & {"refined", "refined-ls"}
    refined = SEARCHES["refined"](model, noise, grid, [1, 2, 3, 4], **FAST)
    target = bf.reference_solve(model, noise)
    for k, s in found.items():
        if s.meta["selected"] == "refined":
            np.testing.assert_array_equal(s.eval_times, refined[k].eval_times)
        if s.meta["selected"] == "refined-ls":
            expect = refit_last_step(model, noise, target, refined[k])
            assert s.meta["olss"] == expect.meta["olss"]
        if s.meta["selected"] in ("refined", "refined-ls"):
            np.testing.assert_array_equal(s.times, refined[k].times)


def test_auto_not_worse_than_refined_or_olss_held_out():
    """A fixed small case: auto's schedules against refined's and OLSS's, fitted on the same noises, on fresh noises."""
    model = bf.models.gmm_2d()
    noise = bf.gaussian_noise(64, (2,), seed=TEST_SEED, dtype=torch.float64)
    z = bf.gaussian_noise(256, (2,), seed=TEST_SEED + 1, dtype=torch.float64)
    reference = bf.reference_solve(model, z)
    grid = bf.uniform_schedule(20).times
    nfes = [2, 4]
    auto = auto_schedules(model, noise, grid, nfes, refine=FAST)
    peers = {
        "refined": SEARCHES["refined"](model, noise, grid, nfes, **FAST),
        "olss": SEARCHES["olss"](model, noise, grid, nfes),
    }
    for k in nfes:
        ours = bf.endpoint_rmse(sample_with(model, z, auto[k]), reference)
        best = min(bf.endpoint_rmse(sample_with(model, z, p[k]), reference) for p in peers.values())
        assert ours <= best * 1.01, (k, ours, best, auto[k].meta["selected"])


def test_refit_last_step_contains_euler(case):
    """The least-squares last step can only lower the fitting error; ridge -> inf gives Euler back."""
    model, noise, _ = case
    target = bf.reference_solve(model, noise)
    base = bf.Schedule([0.0, 0.3, 0.7, 1.0], [0.1, 0.3, 0.8], method="custom")
    euler_mse = float((bf.euler(model, noise, base) - target).pow(2).mean())
    fitted = refit_last_step(model, noise, target, base, ridge=0.0)
    assert fitted.meta["method"] == "custom-ls" and fitted.meta["loss"] <= euler_mse
    x = sample_with(model, noise, fitted)
    assert float((x - target).pow(2).mean()) == pytest.approx(fitted.meta["loss"], rel=1e-9)
    np.testing.assert_array_equal(fitted.eval_times, base.eval_times)
    stiff = refit_last_step(model, noise, target, base, ridge=1e12)
    np.testing.assert_allclose(sample_with(model, noise, stiff), bf.euler(model, noise, base), atol=1e-9)


def test_refit_last_step_of_an_olss_schedule(case):
    model, noise, grid = case
    target = bf.reference_solve(model, noise)
    olss = SEARCHES["olss"](model, noise, grid, [3])[3]
    before = float((sample_with(model, noise, olss) - target).pow(2).mean())
    after = refit_last_step(model, noise, target, olss, ridge=0.0)
    assert after.meta["loss"] <= before and after.meta["base"] == "olss"
    states = olss.with_meta(olss={**olss.meta["olss"], "a": [[1.0], [0.0, 1.0], [0.0, 0.0, 1.0]]})
    with pytest.raises(ScheduleError, match="basis"):
        refit_last_step(model, noise, target, states)


def test_without_refit_and_with_a_subset(case):
    model, noise, grid = case
    found = auto_schedules(model, noise, grid, [2], candidates=("uniform", "olss"), refit=False, holdout=0.5)
    s = found[2]
    assert set(s.meta["holdout_rmse"]) == {"uniform", "olss"} and s.meta["refit"] is False
    assert s.meta["fit_samples"] == 16 and s.meta["backward_rows"] == 0
    if s.meta["selected"] == "olss":
        fitted = SEARCHES["olss"](model, noise[:16], grid, [2])[2]
        assert s.meta["olss"] == fitted.meta["olss"]


def test_options_reach_their_searches(case):
    model, noise, grid = case
    olss = auto_schedules(model, noise, grid, [3], candidates=("olss",), olss={"selection": "uniform"})[3]
    assert olss.meta["selected"] == "olss" and olss.meta["candidate_meta"]["selection"] == "uniform"
    options = {"candidates": ("refined-ls",), "starts": ("bellman",), "ridge": 0.5,
               "refine": {"steps": 7, "screen_steps": 3}, "select_refine": {"steps": 4, "screen_steps": 2, "late_starts": ()}}
    fitted = auto_schedules(model, noise, grid, [3], refit=False, **options)[3].meta["candidate_meta"]
    assert (fitted["start"], fitted["ridge"], fitted["steps"], fitted["candidates"]) == ("bellman", 0.5, 4, 1)
    refitted = auto_schedules(model, noise, grid, [3], **options)[3].meta["candidate_meta"]
    assert (refitted["steps"], refitted["screen_steps"], refitted["candidates"], refitted["samples"]) == (7, 3, 2, 32)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"candidates": ("nope",)}, "candidates"),
        ({"candidates": ("auto",)}, "candidates"),
        ({"candidates": ()}, "candidates"),
        ({"holdout": 1.0}, "holdout"),
        ({"holdout": True}, "holdout"),
        ({"starts": ("olss",)}, "starts"),
        ({"starts": ()}, "starts"),
    ],
)
def test_bad_options(case, options, match):
    model, noise, grid = case
    with pytest.raises(BossflowError, match=match):
        auto_schedules(model, noise, grid, [2], **options)


def test_bad_inputs(case):
    model, noise, grid = case
    with pytest.raises(BossflowError, match="at least 2"):
        auto_schedules(model, noise[:1], grid, [2], candidates=("uniform",))
    with pytest.raises(BossflowError):
        auto_schedules(model, noise, grid, [])
    with pytest.raises(BossflowError, match="target"):
        refit_last_step(model, noise, noise[:3], bf.uniform_schedule(2))
    with pytest.raises(BossflowError, match="ridge"):
        refit_last_step(model, noise, noise, bf.uniform_schedule(2), ridge=-1.0)


def test_cli_end_to_end(capsys, tmp_path):
    out = tmp_path / "auto.json"
    code = main(["schedule", "--model", "gmm-2d", "--method", "auto", "--nfe", "2,3", "--samples", "16",
                 "--grid-steps", "12", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and "wrote 2 schedule(s)" in text
    loaded = bf.load_schedules(out)
    for s in loaded.values():
        assert s.meta["method"] == "auto" and s.meta["model"] == "gmm-2d"
        assert s.meta["selected"] in CANDIDATES and s.meta["holdout_samples"] == 4
        model = bf.models.gmm_2d()
        x = sample_with(model, bf.gaussian_noise(8, (2,), seed=3), s)
        assert x.shape == (8, 2) and torch.isfinite(x).all()
