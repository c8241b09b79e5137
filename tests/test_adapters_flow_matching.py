"""Meta's flow_matching: a model trained with the library gets a Bellman schedule and samples identically in ODESolver."""

import numpy as np
import pytest
import torch
from torch import nn

import bossflow as bf
from bossflow.adapters import flow_matching as fm_adapter
from bossflow.errors import ScheduleError
from bossflow.models import gmm_2d

flow_matching = pytest.importorskip("flow_matching")
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper

TEST_SEED = 1234


class MLP(nn.Module):
    """The velocity network of flow_matching's 2-D example: forward(x, t), t of shape (B,) or 0-dim."""

    def __init__(self, dim=2, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x, t):
        t = t.reshape(-1, 1).expand(x.shape[0], 1).to(x.dtype)
        return self.net(torch.cat([x, t], dim=1))


class Wrapped(ModelWrapper):
    """flow_matching's own wrapper, counting the calls ODESolver makes."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def forward(self, x, t, **extras):
        self.calls.append(float(t.reshape(-1)[0]))
        return self.model(x, t)


@pytest.fixture(scope="module")
def trained():
    """A small model trained with flow_matching's CondOT path on the 8-Gaussians data (300 steps)."""
    torch.set_num_threads(1)
    torch.manual_seed(TEST_SEED)
    gen = torch.Generator().manual_seed(TEST_SEED)
    data = gmm_2d()
    model = MLP()
    path = AffineProbPath(scheduler=CondOTScheduler())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        x1 = data.sample(256, generator=gen, dtype=torch.float32)
        x0 = torch.randn(256, 2, generator=gen)
        t = torch.rand(256, generator=gen)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        loss = (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.85 * np.mean(losses[:20])  # it learned something
    return Wrapped(model.eval())


@pytest.fixture(scope="module")
def bellman_schedule(trained):
    velocity = fm_adapter.wrap(trained, sample_shape=(2,))
    noise = bf.gaussian_noise(128, (2,), seed=TEST_SEED)
    grid = bf.uniform_schedule(40).times
    indices, total = bf.bellman_path(bf.cost_matrix(velocity, noise, grid), 4)
    return bf.Schedule(grid[indices], method="bellman", cost=float(total))


def test_odesolver_on_our_grid_equals_bossflow_euler(trained, bellman_schedule):
    assert bellman_schedule.nfe == 4
    x0 = bf.gaussian_noise(64, (2,), seed=TEST_SEED + 1)
    trained.calls.clear()
    theirs = fm_adapter.solve(trained, x0, bellman_schedule)
    # exactly K model evaluations, at the schedule's step starts
    np.testing.assert_allclose(trained.calls, bellman_schedule.times[:-1], atol=1e-7)
    ours = bf.euler(fm_adapter.wrap(trained), x0, bellman_schedule)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # the plain ODESolver call with time_grid() is the same thing
    direct = ODESolver(velocity_model=trained).sample(
        x_init=x0, step_size=None, method="euler", time_grid=fm_adapter.time_grid(bellman_schedule)
    )
    torch.testing.assert_close(direct, theirs, rtol=0, atol=0)


def test_float64_runs_agree_to_rounding(trained, bellman_schedule):
    model64 = Wrapped(MLP().double())
    model64.model.load_state_dict({k: v.double() for k, v in trained.model.state_dict().items()})
    x0 = bf.gaussian_noise(16, (2,), seed=TEST_SEED + 2, dtype=torch.float64)
    intermediates = fm_adapter.solve(model64, x0, bellman_schedule, return_intermediates=True)
    assert intermediates.shape == (bellman_schedule.nfe + 1, 16, 2)
    torch.testing.assert_close(intermediates[-1], bf.euler(fm_adapter.wrap(model64), x0, bellman_schedule),
                               rtol=1e-12, atol=1e-12)


def test_bossflow_model_in_odesolver_equals_bossflow_euler():
    flow = gmm_2d()
    schedule = bf.shifted_schedule(6)
    x0 = bf.gaussian_noise(32, (2,), seed=TEST_SEED, dtype=torch.float64)
    theirs = ODESolver(velocity_model=fm_adapter.to_flow_matching(flow)).sample(
        x_init=x0, step_size=None, method="euler", time_grid=fm_adapter.time_grid(schedule)
    )
    torch.testing.assert_close(theirs, bf.euler(flow, x0, schedule), rtol=1e-12, atol=1e-12)
    assert fm_adapter.wrap(fm_adapter.to_flow_matching(flow)) is flow


def test_extras_are_passed_and_per_call_conditioning_overrides_them():
    seen = []

    def model(x, t, label=None):
        seen.append((t.shape, label))
        return torch.zeros_like(x)

    velocity = fm_adapter.wrap(model, extras={"label": 3})
    velocity(torch.zeros(5, 2), 0.5)
    velocity(torch.zeros(5, 2), torch.full((5,), 0.5), label=7)
    assert seen == [(torch.Size([5]), 3), (torch.Size([5]), 7)]


def test_schedule_with_eval_times_is_refused():
    schedule = bf.Schedule([0.0, 0.5, 1.0], eval_times=[0.1, 0.6])
    with pytest.raises(ScheduleError, match="eval_times"):
        fm_adapter.time_grid(schedule)
    with pytest.raises(ScheduleError, match="eval_times"):
        fm_adapter.solve(lambda x, t: x, torch.zeros(2, 2), schedule)
    with pytest.raises(ScheduleError):
        fm_adapter.time_grid([0.0, 0.7, 0.5, 1.0])


def test_olss_schedules_are_refused():
    olss = bf.Schedule([0.0, 0.5, 1.0], method="olss", olss={"coefficients": []})
    with pytest.raises(ScheduleError, match="OLSS"):
        fm_adapter.time_grid(olss)
