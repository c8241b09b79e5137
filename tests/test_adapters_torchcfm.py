"""torchcfm: a model trained with ConditionalFlowMatcher, wrapped both ways, samples identically."""

import numpy as np
import pytest
import torch
import torchdiffeq

import bossflow as bf
from bossflow.adapters import torchcfm as cfm_adapter
from bossflow.adapters.torchcfm import TorchCFMVelocity
from bossflow.errors import ModelSpecError
from bossflow.models import gmm_2d

torchcfm = pytest.importorskip("torchcfm")
from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
from torchcfm.models import MLP

TEST_SEED = 1234


class torch_wrapper(torch.nn.Module):  # the code of torchcfm.utils.torch_wrapper (that module needs torchdyn)
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, t, x, *args, **kwargs):
        return self.model(torch.cat([x, t.repeat(x.shape[0])[:, None]], 1))


@pytest.fixture(scope="module")
def trained():
    """torchcfm's MLP trained with ConditionalFlowMatcher on the 8-Gaussians data (300 steps), as in its 2-D example."""
    torch.set_num_threads(1)
    torch.manual_seed(TEST_SEED)
    gen = torch.Generator().manual_seed(TEST_SEED)
    data = gmm_2d()
    model = MLP(dim=2, time_varying=True, w=64)
    matcher = ConditionalFlowMatcher(sigma=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        x0 = torch.randn(256, 2, generator=gen)
        x1 = data.sample(256, generator=gen, dtype=torch.float32)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = (model(torch.cat([xt, t[:, None]], dim=-1)) - ut).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.85 * np.mean(losses[:20])  # it learned something
    return model.eval()


def test_round_trip_with_a_trained_torchcfm_model(trained):
    velocity = cfm_adapter.wrap(trained, sample_shape=(2,))
    assert isinstance(velocity, TorchCFMVelocity) and velocity.call == "concat"  # detected
    noise = bf.gaussian_noise(128, (2,), seed=TEST_SEED)
    grid = bf.uniform_schedule(40).times
    indices, total = bf.bellman_path(bf.cost_matrix(velocity, noise, grid), 4)
    schedule = bf.Schedule(grid[indices], method="bellman", cost=float(total))

    x0 = bf.gaussian_noise(64, (2,), seed=TEST_SEED + 1)
    ours = bf.euler(velocity, x0, schedule)
    # torchcfm's own way of sampling: torch_wrapper + an ODE solver on our times (Euler: one step per interval)
    counted = bf.NFECounter(lambda x, t: x)  # counts calls of the (t, x) module below
    native = torch_wrapper(trained)

    def vector_field(t, x):
        counted(x, t)
        return native(t, x)

    t_span = torch.tensor(schedule.times, dtype=torch.float32)
    theirs = torchdiffeq.odeint(vector_field, x0, t_span, method="euler")[-1]
    assert counted.nfe == schedule.nfe
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # and back: the bossflow model as a torchcfm (t, x) vector field gives the same samples
    back = torchdiffeq.odeint(cfm_adapter.to_torchcfm(velocity), x0, t_span, method="euler")[-1]
    torch.testing.assert_close(back, theirs, rtol=1e-5, atol=1e-5)


def test_call_conventions_agree_on_the_trained_model(trained):
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(TEST_SEED))
    t = torch.rand(32, generator=torch.Generator().manual_seed(TEST_SEED + 1))
    expected = trained(torch.cat([x, t[:, None]], 1))
    torch.testing.assert_close(cfm_adapter.wrap(trained)(x, t), expected)
    # a torchdyn-style (t, x) module with a 0-dim time: one call per distinct time
    tx = cfm_adapter.wrap(torch_wrapper(trained), call="tx", scalar_time=True)
    torch.testing.assert_close(tx(x, t), expected)
    torch.testing.assert_close(tx(x, torch.full((32,), 0.25)), trained(torch.cat([x, torch.full((32, 1), 0.25)], 1)))


def test_tx_module_gets_a_batch_time_and_keyword_conditioning():
    seen = []

    class UNetLike(torch.nn.Module):  # torchcfm's UNetModel.forward(t, x, y=None)
        def forward(self, t, x, y=None):
            seen.append((tuple(t.shape), y))
            return -x

    velocity = cfm_adapter.wrap(UNetLike())
    out = velocity(torch.ones(3, 1, 4, 4), 0.5, y=torch.tensor([1, 2, 3]))
    assert torch.equal(out, -torch.ones(3, 1, 4, 4))
    assert seen[0][0] == (3,) and seen[0][1].tolist() == [1, 2, 3]


def test_exact_flow_round_trips_through_the_tx_convention():
    flow = gmm_2d()
    field = cfm_adapter.to_torchcfm(flow)
    x0 = bf.gaussian_noise(32, (2,), seed=TEST_SEED, dtype=torch.float64)
    schedule = bf.edm_schedule(5)
    theirs = torchdiffeq.odeint(field, x0, torch.tensor(schedule.times), method="euler")[-1]
    torch.testing.assert_close(theirs, bf.euler(flow, x0, schedule), rtol=1e-12, atol=1e-12)
    assert cfm_adapter.wrap(field) is flow
    # torchdyn passes args=...; it is ignored, as by torchcfm's torch_wrapper
    t = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(field(t, x0, args={}), flow(x0, t))


def test_torchdyn_neural_ode_on_our_times_equals_bossflow_euler():
    torchdyn_core = pytest.importorskip("torchdyn.core")
    flow = gmm_2d()
    x0 = bf.gaussian_noise(16, (2,), seed=TEST_SEED, dtype=torch.float64)
    schedule = bf.shifted_schedule(4)
    node = torchdyn_core.NeuralODE(cfm_adapter.to_torchcfm(flow), solver="euler")
    _, traj = node(x0, t_span=torch.tensor(schedule.times))
    torch.testing.assert_close(traj[-1], bf.euler(flow, x0, schedule), rtol=1e-12, atol=1e-12)


def test_bad_options_are_refused():
    with pytest.raises(ModelSpecError):
        cfm_adapter.wrap(lambda t, x: x, call="xt")
    with pytest.raises(ModelSpecError):
        cfm_adapter.wrap(lambda z: z, call="concat", scalar_time=True)
    with pytest.raises(ModelSpecError):
        cfm_adapter.wrap(3)
