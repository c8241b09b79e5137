"""Two-dimensional toy data: the eight Gaussians of the ``gmm-2d`` preset."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import BossflowError
from ..models.networks import gmm_2d


def eight_gaussians(n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` samples ``(n, 2)`` of the ``gmm-2d`` mixture: 8 equal Gaussians on a circle of radius 4, std 0.2.

    The mixture is exactly :func:`bossflow.models.gmm_2d` (samples come from its ``sample``),
    so a teacher trained on this data can be checked against the exact flow.

    Args:
        n: number of samples.
        generator: the only source of randomness.
        dtype: floating dtype of the samples.
    """
    if not isinstance(n, int) or n < 1:
        raise BossflowError(f"the number of samples must be a positive integer, got {n!r}.")
    if not isinstance(generator, torch.Generator):
        raise BossflowError("pass an explicit torch.Generator, e.g. torch.Generator().manual_seed(0).")
    return gmm_2d().sample(n, generator=generator, dtype=dtype)
