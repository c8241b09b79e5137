"""Seeded Gaussian noise whose samples do not depend on how they are batched.

Sample ``i`` of seed ``s`` is drawn from its own generator, seeded from
``numpy.random.SeedSequence(s, spawn_key=(i,))`` (the idea of EDM's
``StackedRandomGenerator``): the first 100 samples are the same whether 100 or 10,000
are drawn, in one batch or many, on one process or several.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import BossflowError


def sample_seed(seed: int, index: int) -> int:
    """The 63-bit generator seed of sample ``index`` under ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def gaussian_noise(
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    *,
    start: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Standard normal noise ``(n, *shape)`` for samples ``start .. start + n - 1`` of ``seed``.

    Values are drawn in float32 and then cast, so a seed gives the same samples in every dtype.

    >>> a = gaussian_noise(4, (2,), seed=1)
    >>> b = torch.cat([gaussian_noise(2, (2,), seed=1), gaussian_noise(2, (2,), seed=1, start=2)])
    >>> bool(torch.equal(a, b))
    True
    """
    if not isinstance(n, int) or n < 1:
        raise BossflowError(f"the number of noise samples must be a positive integer, got {n!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise BossflowError(f"the seed must be a non-negative integer, got {seed!r}.")
    shape = tuple(int(s) for s in shape)
    gen = torch.Generator()
    rows = []
    for i in range(start, start + n):
        gen.manual_seed(sample_seed(seed, i))
        rows.append(torch.randn(shape, generator=gen, dtype=torch.float32))
    return torch.stack(rows).to(device=device, dtype=dtype)


def validate_noise(noise: object) -> Tensor:
    """Check that ``noise`` is a floating-point ``(B, *shape)`` tensor with at least one sample."""
    if not isinstance(noise, Tensor) or noise.ndim < 2 or noise.shape[0] < 1:
        raise BossflowError("noise must be a tensor of shape (B, *shape) with at least one sample.")
    if not noise.is_floating_point():
        raise BossflowError(f"noise must be a floating-point tensor, got {noise.dtype}.")
    return noise
