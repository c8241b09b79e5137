"""Declared conventions (time scale, direction, prediction) recover the exact velocity of the gmm-2d flow."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.adapters import wrap_velocity
from bossflow.adapters.conventions import ConventionVelocity
from bossflow.errors import BossflowError, ModelSpecError
from bossflow.models import gmm_2d

TEST_SEED = 1234


def foreign_model(flow, time_scale, direction, prediction):
    """The exact gmm-2d flow re-expressed in a foreign convention (on the linear path x_t = (1-t) x0 + t x1)."""

    def model(x, tau):
        s = tau / time_scale
        t = s if direction == "noise_to_data" else 1 - s
        v = flow(x, t)
        tb = t[:, None]
        if prediction == "velocity":  # dx/ds in the model's own time
            return v if direction == "noise_to_data" else -v
        if prediction == "noise":  # x0 = x_t - t v
            return x - tb * v
        return x + (1 - tb) * v  # data: x1 = x_t + (1 - t) v

    return model


def points(n=64):
    gen = torch.Generator().manual_seed(TEST_SEED)
    x = 3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(n, generator=gen, dtype=torch.float64)
    return x, t


@pytest.mark.parametrize("prediction", ["velocity", "noise", "data"])
@pytest.mark.parametrize("direction", ["noise_to_data", "data_to_noise"])
@pytest.mark.parametrize("time_scale", [1, 1000])
def test_every_convention_gives_the_native_velocity(time_scale, direction, prediction):
    flow = gmm_2d()
    wrapped = wrap_velocity(foreign_model(flow, time_scale, direction, prediction), time_scale, direction, prediction)
    x, t = points()
    torch.testing.assert_close(wrapped(x, t), flow(x, t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("direction", ["noise_to_data", "data_to_noise"])
def test_velocity_models_have_no_singular_point(direction):
    flow = gmm_2d()
    wrapped = wrap_velocity(foreign_model(flow, 1000, direction, "velocity"), 1000, direction, "velocity")
    x, _ = points(8)
    for value in (0.0, 1.0):
        t = torch.full((8,), value, dtype=torch.float64)
        torch.testing.assert_close(wrapped(x, t), flow(x, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("prediction", "singular", "safe"), [("noise", 0.0, 1e-3), ("data", 1.0, 1 - 1e-3)])
def test_singular_end_is_evaluated_at_the_nearest_safe_time(prediction, singular, safe):
    flow = gmm_2d()
    wrapped = wrap_velocity(foreign_model(flow, 1, "noise_to_data", prediction), prediction=prediction, t_eps=1e-3)
    x, _ = points(8)
    v = wrapped(x, torch.full((8,), singular, dtype=torch.float64))
    assert torch.isfinite(v).all()
    torch.testing.assert_close(v, flow(x, torch.full((8,), safe, dtype=torch.float64)), rtol=1e-10, atol=1e-10)


def test_euler_through_a_noise_prediction_model_stays_close_to_the_native_flow():
    flow = gmm_2d()
    wrapped = wrap_velocity(foreign_model(flow, 1000, "data_to_noise", "noise"), 1000, "data_to_noise", "noise", t_eps=1e-4)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(TEST_SEED), dtype=torch.float64)
    schedule = bf.uniform_schedule(8)
    # only the first step differs (evaluated at t_eps instead of 0): an O(t_eps) change
    assert (bf.euler(wrapped, x0, schedule) - bf.euler(flow, x0, schedule)).abs().max() < 1e-2


def test_cost_matrix_of_a_diffusers_style_model_equals_the_native_one():
    flow = gmm_2d()
    wrapped = wrap_velocity(foreign_model(flow, 1000, "data_to_noise", "velocity"), 1000, "data_to_noise", "velocity")
    noise = bf.gaussian_noise(16, (2,), seed=TEST_SEED, dtype=torch.float64)
    grid = bf.uniform_schedule(10).times
    np.testing.assert_allclose(bf.cost_matrix(wrapped, noise, grid), bf.cost_matrix(flow, noise, grid), rtol=1e-10, atol=1e-14)


def test_wrapper_is_a_module_that_keeps_sample_shape_and_parameters():
    net = bf.VelocityMLP(2, hidden=8, depth=1)
    net.sample_shape = (2,)
    wrapped = wrap_velocity(net)
    assert isinstance(wrapped, ConventionVelocity) and wrapped.sample_shape == (2,)
    assert sum(p.numel() for p in wrapped.parameters()) == sum(p.numel() for p in net.parameters())
    assert wrapped.double()(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).dtype == torch.float64
    assert wrap_velocity(lambda x, t: x, sample_shape=[4]).sample_shape == (4,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "forward"},
        {"prediction": "eps"},
        {"time_scale": 0},
        {"time_scale": float("nan")},
        {"t_eps": 0.0},
    ],
)
def test_unknown_conventions_are_refused(kwargs):
    with pytest.raises(ModelSpecError):
        wrap_velocity(lambda x, t: x, **kwargs)


def test_missing_libraries_raise_a_bossflow_error_naming_the_extra(monkeypatch):
    from bossflow.adapters import diffusers, flow_matching

    for name in ("flow_matching", "flow_matching.solver", "diffusers"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BossflowError, match=r"pip install bossflow\[adapters\]"):
        flow_matching.solve(lambda x, t: x, torch.zeros(2, 2), bf.uniform_schedule(2))
    with pytest.raises(BossflowError, match=r"pip install bossflow\[adapters\]"):
        diffusers.configure_scheduler(object())


def test_adapters_import_without_the_optional_libraries():
    code = (
        "import sys\n"
        "for name in ('flow_matching', 'torchcfm', 'diffusers', 'torchdyn'):\n"
        "    sys.modules[name] = None\n"
        "import bossflow, bossflow.adapters as a\n"
        "from bossflow.adapters import flow_matching, torchcfm, diffusers, conventions\n"
        "import torch\n"
        "f = bossflow.models.gmm_2d()\n"
        "x = torch.zeros(2, 2, dtype=torch.float64)\n"
        "t = torch.full((2,), 0.5, dtype=torch.float64)\n"
        "assert torch.equal(torchcfm.wrap(torchcfm.to_torchcfm(f))(x, t), f(x, t))\n"
        "assert torch.equal(flow_matching.wrap(flow_matching.to_flow_matching(f))(x, t), f(x, t))\n"
        "print(diffusers.schedule_to_sigmas(bossflow.uniform_schedule(2)))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 0.5]"
