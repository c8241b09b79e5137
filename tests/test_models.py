import math

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.errors import ModelSpecError
from bossflow.models import TinyUNet, VelocityMLP, gmm_2d, gmm_64d


def test_presets():
    m2 = gmm_2d()
    assert m2.sample_shape == (2,) and m2.means.shape == (8, 2) and m2.std == 0.2
    np.testing.assert_allclose(m2.means.norm(dim=1).numpy(), 4.0, rtol=1e-12)
    m64 = gmm_64d()
    assert m64.sample_shape == (64,) and m64.means.shape == (20, 64) and m64.std == 0.1
    assert torch.equal(m64.means, gmm_64d().means)  # fixed seed


def test_velocity_matches_conditional_expectation_monte_carlo():
    """v(x, t) = E[x1 - x0 | x_t = x]: regress the interpolant's derivative on x_t near a point."""
    model = bf.GaussianMixtureFlow(torch.tensor([[2.0, 0.0], [-1.0, 1.5]]), std=0.3, weights=[0.7, 0.3])
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    x1 = model.sample(n, generator=gen)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    for t, point in ((0.2, [0.1, 0.06]), (0.5, [0.3, 0.4]), (0.8, [1.5, 0.1])):
        xt = (1 - t) * x0 + t * x1
        target = x1 - x0
        point = torch.tensor([point], dtype=torch.float64)
        # the marginal velocity is smooth: the mean of the target over a small ball estimates it
        near = (xt - point).norm(dim=1) < 0.08
        assert near.sum() > 500
        estimate = target[near].mean(dim=0)
        exact = model(point, torch.tensor([t], dtype=torch.float64))[0]
        stderr = target[near].std(dim=0) / math.sqrt(int(near.sum()))
        assert torch.all((estimate - exact).abs() < 5 * stderr + 0.03), (t, estimate, exact)


def test_velocity_is_batched_dtype_preserving_and_time_broadcasting():
    model = gmm_64d()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    v32 = model(x, torch.full((5,), 0.3))
    assert v32.dtype == torch.float32 and v32.shape == (5, 64)
    v64 = model(x.double(), 0.3)
    assert v64.dtype == torch.float64
    torch.testing.assert_close(v32.double(), v64, rtol=1e-4, atol=1e-4)
    rows = torch.stack([model(x[i : i + 1].double(), torch.tensor([0.3], dtype=torch.float64))[0] for i in range(5)])
    torch.testing.assert_close(rows, v64)
    torch.testing.assert_close(model(x.double(), torch.tensor(0.3, dtype=torch.float64)), v64)  # 0-dim t


def test_image_shaped_means():
    means = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    model = bf.GaussianMixtureFlow(means, std=0.5)
    x = torch.randn(2, 1, 4, 4)
    assert model(x, 0.5).shape == (2, 1, 4, 4)
    assert model.sample(7).shape == (7, 1, 4, 4)


def test_reference_solver_carries_noise_to_the_mixture():
    means = torch.tensor([[3.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    model = bf.GaussianMixtureFlow(means, std=0.25, weights=[0.25, 0.75])
    z = bf.gaussian_noise(4000, (2,), seed=3, dtype=torch.float64)
    x1 = bf.reference_solve(model, z, rtol=1e-7, atol=1e-7)
    right = x1[:, 0] > 0
    assert abs(right.double().mean().item() - 0.25) < 0.025
    for mask, mean in ((right, means[0]), (~right, means[1])):
        cluster = x1[mask]
        torch.testing.assert_close(cluster.mean(0), mean, atol=0.03, rtol=0)
        assert torch.all((cluster.std(0) - 0.25).abs() < 0.02)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(means=torch.zeros(2), std=1.0),
        dict(means=torch.zeros(0, 2), std=1.0),
        dict(means=torch.zeros(2, 2), std=0.0),
        dict(means=torch.zeros(2, 2), std=float("nan")),
        dict(means=torch.full((2, 2), float("inf")), std=1.0),
        dict(means=torch.zeros(2, 2), std=1.0, weights=[1.0]),
        dict(means=torch.zeros(2, 2), std=1.0, weights=[1.0, -1.0]),
        dict(means=torch.zeros(2, 2), std=1.0, weights=[0.0, 0.0]),
    ],
)
def test_bad_mixture_arguments(kwargs):
    with pytest.raises(ModelSpecError):
        bf.GaussianMixtureFlow(**kwargs)


def test_small_networks_run():
    torch.manual_seed(0)
    mlp = VelocityMLP(dim=6, hidden=16, depth=2)
    assert mlp(torch.randn(3, 2, 3), torch.rand(3)).shape == (3, 2, 3)
    unet = TinyUNet(channels=1, width=8, time_dim=16)
    assert unet(torch.randn(2, 1, 8, 8), 0.5).shape == (2, 1, 8, 8)
