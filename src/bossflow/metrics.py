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
