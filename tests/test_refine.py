"""Tests of the continuous schedule refinement, :mod:`bossflow.search.refine`.

The flows are the exact Gaussian mixtures in float64, so every error is measured against
the truth; the check of each result is an independent run of :func:`bossflow.euler`.
"""

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.models import VelocityMLP, gmm_2d, gmm_64d
from bossflow.search import sample_with
from bossflow.search.auto import refit_last_step
from bossflow.search.refine import _Problem, params_from_schedule, refine_schedule, schedule_from_params

FLOWS = {"gmm-2d": gmm_2d, "gmm-64d": gmm_64d}


def endpoint_mse(model, noise, schedule, target):
    return float((bf.euler(model, noise, schedule) - target).pow(2).mean())


@pytest.fixture(scope="module")
def case_2d():
    model = gmm_2d()
    noise = bf.gaussian_noise(64, (2,), seed=0, dtype=torch.float64)
    return model, noise, bf.reference_solve(model, noise)


def test_parametrisation_round_trip():
    times = np.array([0.0, 0.1, 0.35, 0.8, 1.0])
    evals = np.array([0.6, 0.0, 0.35, 1.0])
    logits, offsets = params_from_schedule(times, evals)
    t, s = schedule_from_params(logits, offsets)
    assert t[0].item() == 0.0 and t[-1].item() == 1.0
    np.testing.assert_allclose(t.numpy(), times, atol=1e-15)
    np.testing.assert_allclose(s.numpy(), evals, atol=1e-10)
    # Without offsets the model is evaluated at the step starts.
    t2, s2 = schedule_from_params(logits, None)
    assert torch.equal(s2, t2[:-1])


@pytest.mark.parametrize("nfe", [1, 2, 3, 4, 5, 6])
def test_valid_schedule_for_every_budget(case_2d, nfe):
    model, noise, target = case_2d
    s = refine_schedule(model, noise, bf.uniform_schedule(nfe), target=target, steps=20, screen_steps=5)
    assert s.nfe == nfe
    assert s.times[0] == 0.0 and s.times[-1] == 1.0
    assert np.all(np.diff(s.times) > 0)
    assert s.eval_times is not None and s.eval_times.shape == (nfe,)
    assert np.all((s.eval_times >= 0) & (s.eval_times <= 1))
    assert s.meta["method"] == "refined" and s.meta["start"] == "uniform"
    assert s.meta["loss"] <= s.meta["start_loss"]
    assert s.meta["teacher_rows"] == 0  # the target was given
    assert s.meta["backward_rows"] == s.meta["evaluations"] * nfe * noise.shape[0]
    # Reload through the file format: a valid, self-contained schedule.
    again = bf.Schedule.from_dict(s.to_dict())
    assert np.array_equal(again.times, s.times) and np.array_equal(again.eval_times, s.eval_times)


@pytest.mark.parametrize("eval_times", [True, False])
@pytest.mark.parametrize("start_kind", ["uniform", "bellman"])
def test_never_worse_than_the_start(case_2d, start_kind, eval_times):
    model, noise, target = case_2d
    for nfe in (2, 4):
        if start_kind == "uniform":
            start = bf.uniform_schedule(nfe)
        else:
            grid = bf.uniform_schedule(20).times
            start = bf.bellman_schedules(bf.cost_matrix(model, noise, grid), grid, [nfe])[nfe]
        s = refine_schedule(model, noise, start, target=target, eval_times=eval_times, steps=30, screen_steps=10)
        before = endpoint_mse(model, noise, start, target)
        after = endpoint_mse(model, noise, s, target)
        assert after <= before
        assert after == pytest.approx(s.meta["loss"], rel=1e-12)
        assert s.meta["start_loss"] == pytest.approx(before, rel=1e-12)
        assert (s.eval_times is not None) == eval_times
        if eval_times:
            assert after < 0.5 * before  # free evaluation times help a lot on this flow


def test_returns_the_start_when_nothing_is_better():
    # Constant velocity: Euler is exact on every schedule, so the start's loss (0) cannot be beaten.
    shift = torch.tensor([1.5, -0.5], dtype=torch.float64)

    def constant(x, t):
        return shift.expand_as(x) + 0 * t[:, None] * x

    noise = bf.gaussian_noise(16, (2,), seed=0, dtype=torch.float64)
    start = bf.Schedule([0.0, 0.3, 1.0], method="manual")
    s = refine_schedule(constant, noise, start, target=noise + shift, steps=5, screen_steps=3)
    assert s.meta["improved"] is False and s.meta["start"] == "manual"
    assert np.array_equal(s.times, start.times)
    assert np.array_equal(s.eval_times, start.times[:-1])


@pytest.mark.parametrize(
    "flow, nfe, factor",
    # measured ratios refined / uniform (128 search noises): 0.12, 0.25, 0.28, 0.45
    [("gmm-2d", 2, 0.3), ("gmm-2d", 4, 0.5), ("gmm-64d", 2, 0.5), ("gmm-64d", 4, 0.7)],
)
def test_generalises_to_fresh_noises(flow, nfe, factor):
    model = FLOWS[flow]()
    noise = bf.gaussian_noise(128, (model.dim,), seed=0, dtype=torch.float64)
    s = refine_schedule(model, noise, bf.uniform_schedule(nfe))
    assert s.meta["teacher_rows"] > 0  # the default teacher ran
    fresh = bf.gaussian_noise(500, (model.dim,), seed=1, dtype=torch.float64)
    reference = bf.reference_solve(model, fresh)
    uniform = bf.endpoint_rmse(bf.euler(model, fresh, bf.uniform_schedule(nfe)), reference)
    refined = bf.endpoint_rmse(bf.euler(model, fresh, s), reference)
    assert refined < factor * uniform


def test_deterministic_and_default_target(case_2d):
    model, noise, target = case_2d
    starts = [bf.uniform_schedule(3), bf.edm_schedule(3)]
    a = refine_schedule(model, noise, starts, steps=25, screen_steps=5)
    b = refine_schedule(model, noise, starts, steps=25, screen_steps=5)
    c = refine_schedule(model, noise, starts, target=target, steps=25, screen_steps=5)
    assert a.meta["candidates"] == 6  # two starts, each with two late-start copies
    for other in (b, c):  # the default target is reference_solve(model, noise)
        assert np.array_equal(a.times, other.times)
        assert np.array_equal(a.eval_times, other.eval_times)
    assert a.meta["loss"] <= min(endpoint_mse(model, noise, s, target) for s in starts)


def test_batch_size_and_cond_follow_their_samples(case_2d):
    model, noise, target = case_2d
    scale = torch.linspace(0.5, 1.5, noise.shape[0], dtype=torch.float64)

    def scaled(x, t, gain):
        return model(x, t) * gain[:, None]

    target_scaled = bf.reference_solve(scaled, noise, cond={"gain": scale})
    whole = refine_schedule(scaled, noise, bf.uniform_schedule(2), target=target_scaled, cond={"gain": scale},
                            steps=15, screen_steps=5)
    chunked = refine_schedule(scaled, noise, bf.uniform_schedule(2), target=target_scaled, cond={"gain": scale},
                              steps=15, screen_steps=5, batch_size=24)
    assert chunked.meta["loss"] == pytest.approx(whole.meta["loss"], rel=1e-6)
    np.testing.assert_allclose(chunked.times, whole.times, atol=1e-6)


def test_network_weights_are_left_alone():
    torch.manual_seed(0)
    net = VelocityMLP(2, hidden=16, depth=2, time_dim=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    noise = bf.gaussian_noise(32, (2,), seed=0)  # float32: rollout in float32, schedule in float64
    target = bf.euler(net, noise, bf.uniform_schedule(50))
    s = refine_schedule(net, noise, bf.uniform_schedule(3), target=target, steps=10, screen_steps=3)
    assert s.times.dtype == np.float64 and s.meta["loss"] <= s.meta["start_loss"]
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_inputs_raise_clear_errors(case_2d):
    model, noise, target = case_2d
    u2 = bf.uniform_schedule(2)
    bad = [
        (dict(steps=0), bf.BossflowError, "steps"),
        (dict(steps=2.5), bf.BossflowError, "steps"),
        (dict(screen_steps=0), bf.BossflowError, "screen_steps"),
        (dict(lr=0.0), bf.BossflowError, "lr"),
        (dict(lr=float("nan")), bf.BossflowError, "lr"),
        (dict(late_starts=(1.5,)), bf.BossflowError, "late_starts"),
        (dict(batch_size=0), bf.BossflowError, "batch_size"),
        (dict(target=target[:10]), bf.BossflowError, "target"),
        (dict(target=target.numpy()), bf.BossflowError, "target"),
    ]
    for kwargs, error, word in bad:
        with pytest.raises(error, match=word):
            refine_schedule(model, noise, u2, **kwargs)
    with pytest.raises(bf.BossflowError, match="noise"):
        refine_schedule(model, noise[0], u2, target=target)
    with pytest.raises(bf.ScheduleError):
        refine_schedule(model, noise, [0.0, 0.6, 0.4, 1.0], target=target)
    with pytest.raises(bf.ScheduleError, match="same number of steps"):
        refine_schedule(model, noise, [u2, bf.uniform_schedule(3)], target=target)
    with pytest.raises(bf.ScheduleError, match="eval_times=False"):
        refine_schedule(model, noise, bf.Schedule([0.0, 0.5, 1.0], [0.2, 0.5]), target=target, eval_times=False)

    def frozen(x, t):
        return model(x, t).detach()

    with pytest.raises(bf.BossflowError, match="differentiate"):
        refine_schedule(frozen, noise, u2, target=target, steps=2)


def test_screening_on_a_subset_of_the_noises(case_2d):
    """screen_samples ranks the candidates on the first noises only; the result is still checked on all of them."""
    model, noise, target = case_2d
    starts = [bf.uniform_schedule(3), bf.Schedule([0.0, 0.2, 0.5, 1.0], method="custom")]
    full = refine_schedule(model, noise, starts, target=target, steps=10, screen_steps=4)
    sub = refine_schedule(model, noise, starts, target=target, steps=10, screen_steps=4, screen_samples=16)
    assert full.meta["screen_samples"] == 64 and sub.meta["screen_samples"] == 16
    assert sub.meta["backward_rows"] < full.meta["backward_rows"]
    assert sub.meta["loss"] == pytest.approx(endpoint_mse(model, noise, sub, target), rel=1e-12)
    assert sub.meta["loss"] <= sub.meta["start_loss"]
    with pytest.raises(bf.errors.BossflowError, match="screen_samples"):
        refine_schedule(model, noise, starts, target=target, screen_samples=0)


def _lstsq_problem(case, rows=None, ridge=1e-4):
    model, noise, target = case
    return _Problem(bf.NFECounter(model), noise, target, {}, rows, last_step="lstsq", ridge=ridge)


@pytest.mark.parametrize("rows", [None, 24])
def test_least_squares_last_step_gradient_matches_finite_differences(case_2d, rows):
    """Variable projection: the gradient at the optimal coefficients is the gradient of the minimum."""
    problem = _lstsq_problem(case_2d, rows)
    times, evals = np.array([0.0, 0.3, 0.55, 1.0]), np.array([0.4, 0.25, 0.7])
    params = [p.clone().requires_grad_(True) for p in params_from_schedule(times, evals)]
    value, grads = problem.loss_and_grad(params, True)
    flat = torch.cat([g.reshape(-1) for g in grads]).numpy()
    step = 1e-6
    for i in range(6):
        moved = []
        for sign in (1, -1):
            p = [q.detach().clone() for q in params]
            p[i // 3][i % 3] += sign * step
            p = [q.requires_grad_(True) for q in p]
            moved.append(problem.loss_and_grad(p, True)[0])
        numeric = (moved[0] - moved[1]) / (2 * step)
        assert numeric == pytest.approx(flat[i], rel=1e-4, abs=1e-9)
    # The value is the ridge objective at the coefficients the schedule would be sampled with.
    assert value == pytest.approx(problem.lstsq_fit(bf.Schedule(times, evals))[0], rel=1e-9)


def test_least_squares_last_step_refinement(case_2d):
    model, noise, target = case_2d
    euler_fit = refine_schedule(model, noise, bf.uniform_schedule(3), target=target, steps=30, screen_steps=5)
    found = refine_schedule(model, noise, euler_fit, target=target, steps=30, late_starts=(), last_step="lstsq")
    again = refine_schedule(model, noise, euler_fit, target=target, steps=30, late_starts=(), last_step="lstsq",
                            batch_size=20)  # several chunks: the two-pass gradient
    assert found.meta["last_step"] == "lstsq" and found.meta["loss"] <= found.meta["start_loss"]
    np.testing.assert_allclose(again.times, found.times, atol=1e-8)
    # It carries its coefficients: sampled with them, the endpoint error on the search noises is the
    # objective less the (non-negative) ridge term, and below the Euler fit's with its last step refitted.
    mse = float((sample_with(model, noise, found) - target).pow(2).mean())
    assert "olss" in found.meta and mse <= found.meta["loss"] + 1e-15
    assert mse < refit_last_step(model, noise, target, euler_fit).meta["loss"]
    # Through the file format, the same sampler.
    loaded = bf.Schedule.from_dict(found.to_dict())
    assert torch.equal(sample_with(model, noise, loaded), sample_with(model, noise, found))
    with pytest.raises(bf.BossflowError, match="last_step"):
        refine_schedule(model, noise, euler_fit, target=target, last_step="heun")
    with pytest.raises(bf.BossflowError, match="ridge"):
        refine_schedule(model, noise, euler_fit, target=target, last_step="lstsq", ridge=-1.0)
