"""scikit-learn's 8×8 handwritten digits (1,797 images) as a float tensor in [-1, 1].

The images ship inside scikit-learn's wheel, so this works offline. scikit-learn is
imported only when the data is asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.errors import BossflowError

DIGITS_SHAPE = (1, 8, 8)
"""Shape of one digits image: one channel, 8×8 pixels."""

_MAX_PIXEL = 16.0  # load_digits pixels are integers 0..16


def load_digits(*, dtype: torch.dtype = torch.float32, return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """All 1,797 digits images, ``(1797, 1, 8, 8)``, pixels mapped from 0..16 to [-1, 1].

    Args:
        dtype: floating dtype of the images.
        return_labels: also return the ``(1797,)`` int64 class labels 0..9.

    Returns:
        The images, or ``(images, labels)`` when ``return_labels`` is true.

    Raises:
        BossflowError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as _sklearn_load_digits
    except ImportError:
        raise BossflowError(
            "the digits data set needs scikit-learn; install it with `pip install scikit-learn`."
        ) from None
    bunch = _sklearn_load_digits()
    pixels = torch.as_tensor(bunch.data, dtype=torch.float64)
    images = (pixels / _MAX_PIXEL * 2.0 - 1.0).reshape(-1, *DIGITS_SHAPE).to(dtype)
    if return_labels:
        return images, torch.as_tensor(bunch.target, dtype=torch.int64)
    return images
