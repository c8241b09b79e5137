"""Sample-quality measures.

* :func:`endpoint_rmse`: the paper's own measure, the distance between K-step samples and
  the reference (fine or exact) solution from the *same* noises.
* :func:`wasserstein2`: exact optimal-transport W2 for small sets, sliced W2 for large ones (POT).
* :func:`mmd2`: squared maximum mean discrepancy, Gaussian kernel, median-heuristic bandwidth.
* :func:`frechet_distance`: the Fréchet (FID-style) distance between Gaussian fits of
  features; :func:`frechet_distance_features` from two feature sets.

Everything is computed in float64 on CPU, whatever the input dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .errors import BossflowError


def endpoint_rmse(samples: Tensor, reference: Tensor) -> float:
    """Root mean squared error per dimension, ``sqrt(mean_{b,d} (x - ref)^2)``, computed in float64.

    Args:
        samples: ``(B, *shape)`` sampler outputs.
        reference: ``(B, *shape)`` reference solutions from the same noises.
    """
    if samples.shape != reference.shape:
        raise BossflowError(f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in shape.")
    diff = samples.detach().to(torch.float64) - reference.detach().to(torch.float64)
    return float(diff.pow(2).mean().sqrt())


def wasserstein2(samples: Tensor, reference: Tensor, *, max_exact: int = 2000, projections: int = 256, seed: int = 0) -> float:
    """Wasserstein-2 distance between two sample sets, flattened to ``(n, D)``.

    Exact (optimal transport with POT's network simplex, ``ot.emd2``) when both sets have at
    most ``max_exact`` samples; otherwise the sliced W2 over ``projections`` random
    directions (``ot.sliced_wasserstein_distance``, seeded). Empirical W2 carries a
    sampling floor: compare against the distance between two independent reference sets.

    Args:
        samples: ``(n, *shape)`` samples.
        reference: ``(m, *shape)`` samples of the target distribution.
    """
    import ot

    x = samples.detach().to(torch.float64).reshape(samples.shape[0], -1).cpu().numpy()
    y = reference.detach().to(torch.float64).reshape(reference.shape[0], -1).cpu().numpy()
    if x.shape[1] != y.shape[1]:
        raise BossflowError(f"sample sets differ in dimension ({x.shape[1]} vs {y.shape[1]}).")
    if max(len(x), len(y)) <= max_exact:
        cost = ot.dist(x, y)  # squared Euclidean
        return float(ot.emd2([], [], cost, numItermax=10_000_000)) ** 0.5
    return float(ot.sliced_wasserstein_distance(x, y, n_projections=projections, seed=seed))


def _flat64(samples: Tensor | np.ndarray, what: str) -> np.ndarray:
    """``(n, *shape)`` tensor or array as a float64 ``(n, D)`` numpy array."""
    if isinstance(samples, Tensor):
        samples = samples.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise BossflowError(f"{what} must have shape (n, *shape) with at least one sample, got {tuple(arr.shape)}.")
    arr = arr.reshape(arr.shape[0], -1)
    if not np.all(np.isfinite(arr)):
        raise BossflowError(f"{what} contain NaN or infinite values; the sampler diverged or the input is damaged.")
    return arr


def _pairwise_sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n, m)`` squared Euclidean distances, clipped at 0 against rounding."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def median_bandwidth(samples: Tensor | np.ndarray, *, max_samples: int = 1000, seed: int = 0) -> float:
    """The median heuristic: median pairwise Euclidean distance between distinct samples.

    Computed on at most ``max_samples`` samples (a seeded random subset beyond that).

    Args:
        samples: ``(n, *shape)``, n ≥ 2.
        max_samples: subset size bound.
        seed: seed of the subset.

    Returns:
        The bandwidth ``h`` of :func:`mmd2`'s kernel ``exp(-|a - b|^2 / (2 h^2))``.
    """
    x = _flat64(samples, "samples")
    if x.shape[0] < 2:
        raise BossflowError("the median heuristic needs at least two samples.")
    if x.shape[0] > max_samples:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)]
    d = _pairwise_sq_dists(x, x)[np.triu_indices(x.shape[0], 1)]
    h = float(np.sqrt(np.median(d)))
    if not h > 0:
        positive = d[d > 0]
        if positive.size == 0:
            raise BossflowError("every sample is the same point; give the MMD bandwidth explicitly.")
        h = float(np.sqrt(np.median(positive)))
    return h


def mmd2(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    *,
    bandwidth: float | None = None,
    unbiased: bool = False,
    block: int = 2048,
) -> float:
    """Squared maximum mean discrepancy with the Gaussian (RBF) kernel (Gretton et al., JMLR 2012).

    Kernel ``k(a, b) = exp(-|a - b|^2 / (2 h^2))`` on flattened samples. By default the
    *biased* V-statistic (eq. 5 of Gretton et al.), ``mean k(x, x') + mean k(y, y') - 2 mean
    k(x, y)`` over all pairs, diagonals included: never negative and exactly 0 for identical
    sets. ``unbiased=True`` gives the U-statistic (eq. 3), which drops the diagonals of the
    within-set terms: unbiased, but it can be slightly negative. Kernel sums are taken in
    blocks of ``block`` rows, so memory stays ``O(block * max(n, m))``.

    Args:
        samples: ``(n, *shape)`` samples.
        reference: ``(m, *shape)`` samples of the target distribution.
        bandwidth: kernel width ``h``; default the median heuristic on ``reference``
            (:func:`median_bandwidth`). Pass one fixed value to compare several sample sets.
        unbiased: U-statistic instead of the V-statistic.
        block: rows per kernel block.

    Returns:
        The MMD² estimate (squared, in kernel units, between 0 and 2 for the V-statistic).
    """
    x = _flat64(samples, "samples")
    y = _flat64(reference, "reference samples")
    if x.shape[1] != y.shape[1]:
        raise BossflowError(f"sample sets differ in dimension ({x.shape[1]} vs {y.shape[1]}).")
    if unbiased and min(len(x), len(y)) < 2:
        raise BossflowError("the unbiased MMD needs at least two samples in each set.")
    h = median_bandwidth(y) if bandwidth is None else float(bandwidth)
    if not (np.isfinite(h) and h > 0):
        raise BossflowError(f"the MMD bandwidth must be a positive number, got {bandwidth!r}.")
    gamma = 0.5 / (h * h)

    def kernel_sum(a: np.ndarray, b: np.ndarray) -> float:
        return float(sum(np.exp(-gamma * _pairwise_sq_dists(a[i:i + block], b)).sum() for i in range(0, len(a), block)))

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel_sum(x, x), kernel_sum(y, y), kernel_sum(x, y)
    if unbiased:
        # k(a, a) = 1 on the diagonals
        return (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return max(kxx / (n * n) + kyy / (m * m) - 2.0 * kxy / (n * m), 0.0)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``n - 1`` normalised) of ``(n, F)`` features, in float64."""
    f = _flat64(features, "features")
    if f.shape[0] < 2:
        raise BossflowError("feature statistics need at least two samples.")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues below 0 clipped)."""
    w, u = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, squared (as FID reports it).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^{1/2} sigma2 sigma1^{1/2})^{1/2})``
    (Dowson & Landau 1982; Heusel et al. 2017). The cross term goes through symmetric
    eigen-decompositions in float64: ``sigma1^{1/2}`` from ``eigh``, then the eigenvalues of
    the symmetric PSD matrix ``sigma1^{1/2} sigma2 sigma1^{1/2}``, clipped at 0, whose square
    roots sum to ``tr((sigma1 sigma2)^{1/2})``. No complex parts to discard, unlike
    ``scipy.linalg.sqrtm`` on the non-symmetric product. Rank-deficient covariances (fewer
    samples than features) work too; their zero eigenvalues leave rounding of order
    ``sqrt(machine epsilon)`` relative in the cross term. The square root of the result is
    the Wasserstein-2 distance between the two Gaussians.

    Args:
        mu1: ``(F,)`` mean.
        sigma1: ``(F, F)`` covariance.
        mu2: ``(F,)`` mean.
        sigma2: ``(F, F)`` covariance.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    f = mu1.shape[0]
    if mu1.shape != (f,) or mu2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
        raise BossflowError(
            f"Fréchet statistics disagree in shape: means {mu1.shape} and {mu2.shape}, covariances {s1.shape} and {s2.shape}."
        )
    if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, s1, s2)):
        raise BossflowError("Fréchet statistics contain NaN or infinite values.")
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * cross
    return max(value, 0.0)


def frechet_distance_features(features: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> float:
    """:func:`frechet_distance` between the Gaussian fits of two ``(n, F)`` feature sets."""
    return frechet_distance(*feature_statistics(features), *feature_statistics(reference))
