import math

import pytest
import torch

import bossflow as bf
from bossflow.errors import BossflowError
from bossflow.metrics import wasserstein2


def test_endpoint_rmse():
    a = torch.zeros(4, 2, 3)
    assert bf.endpoint_rmse(a + 2.0, a) == pytest.approx(2.0)
    with pytest.raises(BossflowError):
        bf.endpoint_rmse(a, torch.zeros(4, 6))


def test_exact_w2_of_a_translation_is_its_length():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    # translating a cloud moves every point by the same vector: the identity plan is optimal
    assert wasserstein2(x + shift, x) == pytest.approx(float(shift.norm()), rel=1e-9)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-6)  # sqrt of a rounding-level cost


def test_w2_between_gaussian_samples_approaches_the_closed_form():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 1, generator=gen, dtype=torch.float64)
    y = 2.0 + 0.5 * torch.randn(1500, 1, generator=gen, dtype=torch.float64)
    # W2^2(N(0, 1), N(2, 0.25)) = 2^2 + (1 - 0.5)^2
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(4.25), rel=0.03)


def test_sliced_w2_for_large_sets():
    x = torch.randn(3000, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shift = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    sliced = wasserstein2(x + shift, x, max_exact=1000, projections=2000)
    # each random unit direction theta sees a shift theta_1; E[theta_1^2] = 1 / D
    assert sliced == pytest.approx(0.5, rel=0.1)
    with pytest.raises(BossflowError):
        wasserstein2(x, torch.zeros(5, 3))
