import pytest
import torch

import bossflow as bf
from bossflow.errors import BossflowError, ScheduleError
from bossflow.models import gmm_2d, gmm_64d


class ConstantVelocity(torch.nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x, t):
        return self.v.expand_as(x)


class TimeVelocity(torch.nn.Module):
    """v = 3 t^2 (so x(1) = x(0) + 1); Euler/Heun errors are known in closed form."""

    def forward(self, x, t):
        return (3 * t**2)[:, None].expand_as(x)


def test_constant_velocity_is_exact():
    model = ConstantVelocity(torch.tensor([1.0, -2.0], dtype=torch.float64))
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    for solver in (bf.euler, bf.heun):
        torch.testing.assert_close(solver(model, x0, bf.edm_schedule(3)), x0 + model.v)


def test_known_errors_on_time_dependent_velocity():
    model = TimeVelocity()
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    times = [0.0, 0.5, 1.0]
    # Euler: 0.5 * (0 + 3 * 0.25) = 0.375; Heun: trapezoid = 0.25 * (0 + .75) + 0.25 * (.75 + 3) = 1.125
    assert bf.euler(model, x0, times).item() == pytest.approx(0.375)
    assert bf.heun(model, x0, times).item() == pytest.approx(1.125)
    assert bf.reference_solve(model, x0).item() == pytest.approx(1.0, abs=1e-6)
    assert bf.reference_solve(model, x0, method="rk4", steps=3).item() == pytest.approx(1.0, abs=1e-12)


def test_nfe_counts_are_exact():
    model = bf.NFECounter(gmm_2d())
    x0 = bf.gaussian_noise(5, (2,), dtype=torch.float64)
    bf.euler(model, x0, bf.uniform_schedule(7))
    assert (model.nfe, model.samples) == (7, 35)
    model.reset()
    bf.heun(model, x0, bf.uniform_schedule(7))
    assert model.nfe == 14
    model.reset()
    bf.reference_solve(model, x0, method="rk4", steps=10)
    assert model.nfe == 40
    model.reset()
    bf.fine_trajectory(model, x0, bf.uniform_schedule(10).times, substeps=3)
    assert model.nfe == 30
    model.reset()
    bf.fine_trajectory(model, x0, bf.uniform_schedule(10).times, substeps=2, method="heun")
    assert model.nfe == 40
    model.reset()
    bf.reference_solve(model, x0)
    assert model.nfe > 0


def test_euler_on_base_grid_reproduces_fine_trajectory():
    model = gmm_64d()
    x0 = bf.gaussian_noise(6, (64,), seed=2, dtype=torch.float64)
    grid = bf.uniform_schedule(50).times
    traj = bf.fine_trajectory(model, x0, grid)
    assert traj.xs.shape == (51, 6, 64) and traj.vs.shape == (50, 6, 64)
    assert torch.equal(bf.euler(model, x0, grid), traj.xs[-1])
    seen = []
    bf.euler(model, x0, grid, callback=lambda info: seen.append(info["x"]))
    assert all(torch.equal(a, b) for a, b in zip(seen, traj.xs[1:]))
    torch.testing.assert_close(traj.vs[10], model(traj.xs[10], torch.full((6,), grid[10], dtype=torch.float64)))


def test_finer_reference_converges():
    model = gmm_2d()
    x0 = bf.gaussian_noise(64, (2,), seed=0, dtype=torch.float64)
    exact = bf.reference_solve(model, x0, rtol=1e-9, atol=1e-9)
    grid = bf.uniform_schedule(20).times
    errors = [bf.endpoint_rmse(bf.fine_trajectory(model, x0, grid, substeps=s).xs[-1], exact) for s in (1, 4, 16)]
    assert errors[0] > errors[1] > errors[2]
    heun_error = bf.endpoint_rmse(bf.fine_trajectory(model, x0, grid, substeps=4, method="heun").xs[-1], exact)
    assert heun_error < errors[2]


def test_evaluation_times():
    model = TimeVelocity()
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    s = bf.Schedule([0.0, 0.5, 1.0], eval_times=[0.25, 0.75])
    # midpoint rule: 0.5 * 3 * (0.0625 + 0.5625) = 0.9375
    assert bf.euler(model, x0, s).item() == pytest.approx(0.9375)
    assert bf.euler(model, x0, [0.0, 0.5, 1.0], eval_times=[0.25, 0.75]).item() == pytest.approx(0.9375)
    with pytest.raises(ScheduleError, match="Heun cannot honour"):
        bf.heun(model, x0, s)
    # evaluation times equal to the step starts are no evaluation times at all
    assert bf.heun(model, x0, bf.Schedule([0.0, 0.5, 1.0], eval_times=[0.0, 0.5])).item() == pytest.approx(1.125)


def test_enable_grad_and_dtype():
    model = gmm_2d()
    x0 = bf.gaussian_noise(3, (2,)).requires_grad_(True)
    out = bf.euler(model, x0, bf.uniform_schedule(2), enable_grad=True)
    out.sum().backward()
    assert x0.grad is not None and out.dtype == torch.float32
    assert not bf.euler(model, x0, bf.uniform_schedule(2)).requires_grad


def test_bad_solver_arguments():
    model = gmm_2d()
    x0 = torch.zeros(2, 2)
    with pytest.raises(ScheduleError):
        bf.euler(model, x0, [0.0, 0.6, 0.5, 1.0])
    with pytest.raises(BossflowError):
        bf.reference_solve(model, x0, method="rk45")
    with pytest.raises(BossflowError):
        bf.reference_solve(model, x0, method="rk4", steps=0)
    with pytest.raises(BossflowError):
        bf.fine_trajectory(model, x0, [0.0, 1.0], substeps=0)
    with pytest.raises(BossflowError):
        bf.fine_trajectory(model, x0, [0.0, 1.0], method="rk4")


def test_noise_is_batch_independent_and_seeded():
    a = bf.gaussian_noise(10, (3,), seed=5)
    b = torch.cat([bf.gaussian_noise(4, (3,), seed=5), bf.gaussian_noise(6, (3,), seed=5, start=4)])
    assert torch.equal(a, b)
    assert not torch.equal(a, bf.gaussian_noise(10, (3,), seed=6))
    assert torch.equal(bf.gaussian_noise(2, (3,), seed=5, dtype=torch.float64).float(), a[:2])
    with pytest.raises(BossflowError):
        bf.gaussian_noise(0, (3,))
    with pytest.raises(BossflowError):
        bf.gaussian_noise(2, (3,), seed=-1)
