"""The default search ``auto``: held-out selection among the other searches, then a refit on every noise."""

import math

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.cli import main
from bossflow.errors import BossflowError, ScheduleError
from bossflow.search import SEARCHES, sample_with
from bossflow.search.auto import CANDIDATES, EFFORTS, GRID_SEARCHES, auto_schedules, refit_last_step

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
    return auto_schedules(model, noise, grid, [1, 2, 3, 4], refine=FAST, continue_steps=10, provenance={"model": "gmm-2d"})


def test_valid_and_deterministic(case, found):
    model, noise, grid = case
    again = auto_schedules(model, noise, grid, [1, 2, 3, 4], refine=FAST, continue_steps=10, provenance={"model": "gmm-2d"})
    assert sorted(found) == [1, 2, 3, 4]
    for k, s in found.items():
        assert s.nfe == k and s.times[0] == 0.0 and s.times[-1] == 1.0 and np.all(np.diff(s.times) > 0)
        assert s.meta["method"] == "auto" and s.meta["model"] == "gmm-2d"
        assert s.meta["fit_samples"] == 24 and s.meta["holdout_samples"] == 8 and s.meta["refit"] is True
        assert s.meta["model_rows"] > s.meta["teacher_rows"] > 0
        assert s.meta["fine_trajectories"] == pytest.approx(s.meta["model_rows"] / (20 * 32))
        np.testing.assert_array_equal(s.times, again[k].times)
        assert s.meta == again[k].meta
        counter = bf.NFECounter(model)
        x = sample_with(counter, noise, s)
        assert counter.nfe == k and torch.isfinite(x).all()


def test_selected_is_the_held_out_minimum_of_the_best_grid_search_and_the_rest(found):
    for s in found.values():
        scores, grid_scores = s.meta["holdout_rmse"], s.meta["search_rmse"]
        assert set(scores) == set(CANDIDATES)
        grids = [m for m in CANDIDATES if m in GRID_SEARCHES]
        assert set(grid_scores) == set(grids) and len(grids) > 1
        best_grid = min(grids, key=grid_scores.get)
        finalists = [m for m in CANDIDATES if m not in grids] + [best_grid]
        assert scores[s.meta["selected"]] == min(scores[m] for m in finalists)
        assert s.meta["candidate_meta"]["method"] == s.meta["selected"]


def test_grid_searches_are_ranked_on_every_search_noise(case):
    """A grid search that loses on every search noise cannot win on the held-out noises alone."""
    model, noise, grid = case
    found = auto_schedules(model, noise, grid, [2, 3, 4], candidates=("uniform", "bellman", "global-dp"))
    target = bf.reference_solve(model, noise)
    fit = 24  # 3/4 of the 32 noises
    for k, s in found.items():
        mine = {}
        for name in ("uniform", "bellman", "global-dp"):
            fitted = SEARCHES[name](model, noise[:fit], grid, [k])[k]
            mine[name] = bf.endpoint_rmse(sample_with(model, noise, fitted), target)
            assert s.meta["search_rmse"][name] == pytest.approx(mine[name], rel=1e-9)
        assert s.meta["selected"] == min(mine, key=mine.get)


def test_per_sample_conditioning_follows_its_noises(case):
    """Fitting, held-out scoring and the grid ranking on every noise all pass each noise its own condition."""
    model, noise, grid = case
    gain = torch.linspace(0.5, 1.5, noise.shape[0], dtype=torch.float64)

    def scaled(x, t, gain):
        return model(x, t) * gain[:, None]

    cond = {"gain": gain}
    found = auto_schedules(scaled, noise, grid, [2, 3], cond=cond, candidates=("uniform", "bellman", "refined"),
                           refine=FAST, continue_steps=5)
    target = bf.reference_solve(scaled, noise, cond=cond)
    fit = 24
    for k, s in found.items():
        for name in ("uniform", "bellman"):
            fitted = SEARCHES[name](scaled, noise[:fit], grid, [k], cond={"gain": gain[:fit]})[k]
            whole = bf.endpoint_rmse(sample_with(scaled, noise, fitted, cond=cond), target)
            held = bf.endpoint_rmse(sample_with(scaled, noise[fit:], fitted, cond={"gain": gain[fit:]}), target[fit:])
            assert s.meta["search_rmse"][name] == pytest.approx(whole, rel=1e-9)
            assert s.meta["holdout_rmse"][name] == pytest.approx(held, rel=1e-9)


def test_refit_continues_the_winning_refinement(case, found):
    """A winning refinement continues on every noise from its selection-stage schedule: never worse there."""
    model, noise, grid = case
    winners = {s.meta["selected"] for s in found.values()}
    assert winners & {"refined", "refined-ls"}
    fitted = auto_schedules(model, noise, grid, [1, 2, 3, 4], refine=FAST, continue_steps=10, refit=False)
    target = bf.reference_solve(model, noise)

    def mse(schedule):
        return float((sample_with(model, noise, schedule) - target).pow(2).mean())

    for k, s in found.items():
        own = s.meta["candidate_meta"]
        if s.meta["selected"] == "refined":
            assert own["samples"] == 32 and own["loss"] <= own["continued_from"] * (1 + 1e-12)
            assert mse(s) <= mse(fitted[k]) * (1 + 1e-9)
        if s.meta["selected"] == "refined-ls":
            assert own["base"] == "refined" and own["samples"] == 32
        if s.meta["selected"] in ("uniform", "bellman", "olss"):
            again = SEARCHES[s.meta["selected"]](model, noise, grid, [k])[k]
            np.testing.assert_array_equal(s.times, again.times)


def test_families_give_what_their_consumers_take(case):
    """family='euler' never returns OLSS-type schedules; family='times' returns step times only."""
    model, noise, grid = case
    euler = auto_schedules(model, noise, grid, [2, 3], family="euler", refine=FAST, continue_steps=5)
    times = auto_schedules(model, noise, grid, [2, 3], family="times", refine=FAST, continue_steps=5)
    for k in (2, 3):
        assert "olss" not in euler[k].meta and set(euler[k].meta["holdout_rmse"]) == {"uniform", "bellman", "global-dp", "refined"}
        assert euler[k].meta["family"] == "euler"
        bf.schedules.check_euler_schedule(euler[k], "straightening")
        assert "olss" not in times[k].meta and not times[k].has_eval_times
    with pytest.raises(BossflowError, match="not Euler"):
        auto_schedules(model, noise, grid, [2], family="euler", candidates=("olss",))
    with pytest.raises(BossflowError, match="family"):
        auto_schedules(model, noise, grid, [2], family="nope")


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
               "refine": {"steps": 4, "screen_steps": 2, "late_starts": ()}, "continue_steps": 3}
    fitted = auto_schedules(model, noise, grid, [3], refit=False, **options)[3].meta["candidate_meta"]
    assert (fitted["start"], fitted["ridge"], fitted["steps"], fitted["candidates"]) == ("bellman", 0.5, 4, 1)
    assert fitted["samples"] == 24
    assert fitted["last_step"] == "lstsq" and fitted["lstsq_steps"] == EFFORTS["standard"]["lstsq_steps"]
    refitted = auto_schedules(model, noise, grid, [3], **options)[3]
    own = refitted.meta["candidate_meta"]
    # refined-ls keeps the fitted times and refits only its last step on every noise.
    assert (own["steps"], own["candidates"], own["samples"], own["base"]) == (4, 1, 32, "refined")
    fitted_times = auto_schedules(model, noise, grid, [3], refit=False, **options)[3].times
    np.testing.assert_array_equal(refitted.times, fitted_times)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"candidates": ("nope",)}, "candidates"),
        ({"candidates": ("auto",)}, "candidates"),
        ({"candidates": ()}, "candidates"),
        ({"holdout": 1.0}, "holdout"),
        ({"holdout": True}, "holdout"),
        ({"starts": ("refined",)}, "starts"),
        ({"starts": ()}, "starts"),
        ({"continue_steps": 0}, "continue_steps"),
        ({"effort": "max"}, "effort"),
        ({"effort": None}, "effort"),
        ({"refine": {"eval_times": False}}, "family"),
    ],
)
def test_bad_options(case, options, match):
    model, noise, grid = case
    with pytest.raises(BossflowError, match=match):
        auto_schedules(model, noise, grid, [2], **options)


def test_least_squares_times_only_where_the_refinement_is_in_contention(case, monkeypatch):
    """refined-ls refits its times for the least-squares last step only where the refined fit is close
    to the best other candidate on the held-out noises; elsewhere it refits the last step alone."""
    import bossflow.search.auto as auto_module

    model, noise, grid = case
    options = {"candidates": ("uniform", "refined-ls"), "refine": FAST, "refit": False}
    target = bf.reference_solve(model, noise)
    spent = {}
    for contention, lstsq_steps in ((0.0, 0), (math.inf, EFFORTS["standard"]["lstsq_steps"])):
        monkeypatch.setattr(auto_module, "CONTENTION", contention)
        s = auto_schedules(model, noise, grid, [3], **options)[3]
        own = s.meta["candidate_meta"]
        assert own["lstsq_steps"] == lstsq_steps and (own.get("last_step") == "lstsq") == (lstsq_steps > 0)
        spent[contention] = s.meta["backward_rows"]
        if lstsq_steps == 0:  # exactly the refined fit with its last step refitted
            euler_fit = auto_schedules(model, noise, grid, [3], candidates=("refined",), refine=FAST, refit=False)[3]
            plain = refit_last_step(model, noise[:24], target[:24], euler_fit, ridge=1e-4)
            assert s.meta["olss"] == plain.meta["olss"]
    assert spent[0.0] < spent[math.inf]


def test_effort_sets_the_refinement_budget(case):
    """fast spends fewer model rows than standard, thorough more; explicit options are laid over the preset."""
    model, noise, grid = case
    spent = {}
    for effort, preset in EFFORTS.items():
        s = auto_schedules(model, noise, grid, [3], effort=effort, candidates=("uniform", "refined"))[3]
        assert s.meta["effort"] == effort and s.meta["selected"] == "refined"
        refined = s.meta["candidate_meta"]
        assert refined["screen_steps"] == preset["refine"]["screen_steps"]
        assert refined["steps"] == preset["refine"]["steps"] + preset["continue_steps"]
        spent[effort] = s.meta["model_rows"]
    assert spent["fast"] < spent["standard"] < spent["thorough"]
    # Explicit options win; the preset's late starts (0.9 and 0.99 for thorough) stay.
    s = auto_schedules(model, noise, grid, [3], effort="thorough", candidates=("uniform", "refined"),
                       refine={"screen_steps": 2, "steps": 3}, continue_steps=4)[3]
    refined = s.meta["candidate_meta"]
    assert (refined["screen_steps"], refined["steps"]) == (2, 3 + 4)
    assert refined["candidates"] == 3 * (1 + len(EFFORTS["thorough"]["refine"]["late_starts"]))  # 3 starts


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
    """auto is the default of `bossflow schedule`; it says what it chose and what it spent."""
    out = tmp_path / "auto.json"
    code = main(["schedule", "--model", "gmm-2d", "--nfe", "2,3", "--samples", "16",
                 "--grid-steps", "12", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and "wrote 2 schedule(s)" in text and "auto spent" in text and "fine trajectories" in text
    loaded = bf.load_schedules(out)
    for s in loaded.values():
        assert s.meta["method"] == "auto" and s.meta["model"] == "gmm-2d" and s.meta["family"] == "any"
        assert s.meta["selected"] in CANDIDATES and s.meta["holdout_samples"] == 4
        assert f"[{s.meta['selected']}]" in text
        model = bf.models.gmm_2d()
        x = sample_with(model, bf.gaussian_noise(8, (2,), seed=3), s)
        assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_cli_family(capsys, tmp_path):
    out = tmp_path / "times.json"
    code = main(["schedule", "--model", "gmm-2d", "--nfe", "2", "--samples", "16", "--grid-steps", "12",
                 "--family", "times", "--out", str(out), "--quiet"])
    assert code == 0
    s = bf.Schedule.load(out, nfe=2)
    assert s.meta["family"] == "times" and not s.has_eval_times and "olss" not in s.meta
    capsys.readouterr()
    bellman = tmp_path / "bellman-times.json"
    code = main(["schedule", "--model", "gmm-2d", "--nfe", "2", "--samples", "16", "--grid-steps", "12",
                 "--method", "bellman", "--family", "times", "--out", str(bellman), "--quiet"])
    assert code == 0 and not bf.Schedule.load(bellman, nfe=2).has_eval_times
    capsys.readouterr()
    for method, family, makes in [("olss", "times", "OLSS steps (a linear multistep update)"), ("refined", "times", "evaluation times"),
                                  ("olss", "euler", "OLSS steps (a linear multistep update)")]:
        code = main(["schedule", "--model", "gmm-2d", "--nfe", "2", "--method", method, "--family", family, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and f"--method {method} makes {makes}, not --family {family}" in err


def test_method_families_match_what_each_search_returns():
    """The CLI's table of which --method suits which --family, checked against the searches themselves."""
    from bossflow.cli._choices import METHOD_FAMILIES
    from bossflow.search import SEARCHES

    noise, grid = bf.gaussian_noise(16, (2,), dtype=torch.float64), bf.uniform_schedule(12).times
    for name, method in SEARCHES.items():
        options = {"family": "euler"} if name == "auto" else {}
        schedule = method(bf.models.gmm_2d(), noise, grid, [2], **options)[2]
        is_olss, has_eval = "olss" in schedule.meta, schedule.has_eval_times
        assert (name in METHOD_FAMILIES["times"]) == (name == "auto" or not (is_olss or has_eval)), name
        assert (name in METHOD_FAMILIES["euler"]) == (name == "auto" or not is_olss), name


def test_cli_effort(capsys, tmp_path):
    out = tmp_path / "fast.json"
    code = main(["schedule", "--model", "gmm-2d", "--nfe", "2", "--samples", "16", "--grid-steps", "12",
                 "--effort", "fast", "--out", str(out), "--quiet"])
    assert code == 0
    assert bf.Schedule.load(out, nfe=2).meta["effort"] == "fast"
    capsys.readouterr()
    code = main(["schedule", "--model", "gmm-2d", "--nfe", "2", "--method", "bellman", "--effort", "fast", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--effort applies to --method auto only" in err


def test_auto_journal_resumes_after_interruptions_to_the_uninterrupted_result(tmp_path):
    from bossflow.models import gmm_2d
    from conftest import Interrupting

    noise = bf.gaussian_noise(32, (2,), dtype=torch.float64)
    grid = bf.uniform_schedule(20).times
    options = dict(refine={"steps": 10, "screen_steps": 5}, continue_steps=10)
    whole = auto_schedules(gmm_2d(), noise, grid, [2, 4], **options)
    path = tmp_path / "auto.safetensors"
    for limit in (50, 400):  # stopped in the teacher's solve, then in a candidate's fit
        with pytest.raises(KeyboardInterrupt):
            auto_schedules(Interrupting(limit).double(), noise, grid, [2, 4], checkpoint=path, model_id="gmm-2d", **options)
    resumed = auto_schedules(gmm_2d(), noise, grid, [2, 4], checkpoint=path, model_id="gmm-2d", **options)
    for k in (2, 4):
        # To float rounding: some CPUs round the resumed fits' batches differently in the last bits.
        np.testing.assert_allclose(resumed[k].times, whole[k].times, rtol=0, atol=1e-9)
        assert whole[k].meta["selected"] == resumed[k].meta["selected"]
        assert whole[k].meta["model_rows"] == resumed[k].meta["model_rows"]
    with pytest.raises(BossflowError, match="made by another search"):
        auto_schedules(gmm_2d(), noise, grid, [2], checkpoint=path, model_id="gmm-2d", **options)
