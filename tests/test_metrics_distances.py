"""MMD, the Fréchet distance and W2 against known answers."""

import math

import numpy as np
import pytest
import torch

from bossflow.errors import BossflowError
from bossflow.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    median_bandwidth,
    mmd2,
    wasserstein2,
)


def _gaussian(n, mean, cov, seed):
    gen = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    return torch.as_tensor(mean, dtype=torch.float64) + torch.randn(n, len(mean), generator=gen, dtype=torch.float64) @ chol.T


COV1 = [[1.0, 0.6], [0.6, 0.8]]
COV2 = [[0.5, -0.2], [-0.2, 1.5]]


def test_frechet_distance_hand_computed():
    # diagonal covariances commute: |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 = 2 + (1 - 2)^2 + (2 - 3)^2 = 4
    assert frechet_distance([0, 0], np.diag([1.0, 4.0]), [1, 1], np.diag([4.0, 9.0])) == pytest.approx(4.0, abs=1e-12)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.5], [[0.25]], [2.0], [[4.0]]) == pytest.approx(1.5**2 + 1.5**2, abs=1e-12)
    assert frechet_distance([1, 2], COV1, [1, 2], COV1) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_the_sqrtm_formula_for_non_commuting_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = np.array(COV1), np.array(COV2)
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
    cross = linalg.sqrtm(s1 @ s2).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * cross))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # symmetric in its arguments
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_handles_rank_deficient_covariances():
    feats = torch.randn(5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fewer samples than features
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_features(feats, feats + 1.0) == pytest.approx(20.0, rel=1e-6)  # a pure shift: |d|^2


def test_frechet_distance_of_samples_approaches_the_gaussians():
    x, y = _gaussian(20000, [0, 0], COV1, 1), _gaussian(20000, [1, -1], COV2, 2)
    exact = frechet_distance([0, 0], COV1, [1, -1], COV2)
    assert frechet_distance_features(x, y) == pytest.approx(exact, rel=0.03)
    _, sigma = feature_statistics(x)
    np.testing.assert_allclose(sigma, COV1, atol=0.03)


def test_w2_between_two_gaussians_approaches_the_closed_form():
    # W2^2 between Gaussians is the Fréchet distance of their parameters
    exact = math.sqrt(frechet_distance([0, 0], COV1, [3, 1], COV2))
    x, y = _gaussian(1500, [0, 0], COV1, 3), _gaussian(1500, [3, 1], COV2, 4)
    assert wasserstein2(x, y) == pytest.approx(exact, rel=0.02)


def test_mmd_known_values():
    # biased MMD^2 of two points with h = 1: k(x, x) + k(y, y) - 2 k(x, y) = 2 - 2 exp(-1/2)
    assert mmd2(torch.zeros(1, 1), torch.ones(1, 1), bandwidth=1.0) == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-12)
    x = _gaussian(400, [0, 0], COV1, 5)
    assert mmd2(x, x) == 0.0  # identical sets: exactly zero (V-statistic)
    y = _gaussian(400, [0, 0], COV1, 6)
    same = mmd2(x, y, unbiased=True)
    assert abs(same) < 5e-3  # same distribution: the U-statistic is unbiased around zero
    h = median_bandwidth(y)
    values = [mmd2(x + shift, y, bandwidth=h) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 0.1  # grows with the shift


def test_mmd_blocks_and_bandwidth():
    x, y = _gaussian(50, [0, 0], COV1, 7), _gaussian(37, [1, 0], COV2, 8)
    assert mmd2(x, y, block=7) == pytest.approx(mmd2(x, y), rel=1e-12)
    assert mmd2(x, y, unbiased=True, block=5) == pytest.approx(mmd2(x, y, unbiased=True), rel=1e-12)
    # median of the pairwise distances 1, 2, 3
    assert median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(3, 3)), "differ in dimension"),
        (lambda: mmd2(torch.full((3, 2), math.nan), torch.zeros(3, 2)), "NaN"),
        (lambda: mmd2(torch.zeros(3, 2), torch.ones(3, 2), bandwidth=-1.0), "bandwidth"),
        (lambda: median_bandwidth(torch.zeros(4, 2)), "same point"),
        (lambda: frechet_distance([0, 0], np.eye(2), [0], np.eye(1)), "disagree in shape"),
        (lambda: feature_statistics(torch.zeros(1, 3)), "at least two"),
    ],
)
def test_bad_input_raises_bossflow_error(call, message):
    with pytest.raises(BossflowError, match=message):
        call()
