"""Sample-quality measures.

Endpoint error is the paper's own measure: the distance between K-step samples and the
reference (fine or exact) solution from the *same* noises.
"""

from __future__ import annotations

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
