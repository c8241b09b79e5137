"""scikit-learn's 8×8 handwritten digits (1,797 images) as a float tensor in [-1, 1].

The images ship with bossflow in ``data/digits.npz`` (45 KB): ``pixels`` ``(1797, 64)``
uint8 in 0..16 and ``labels`` ``(1797,)`` uint8, exactly the ``data`` and ``target`` of
``sklearn.datasets.load_digits()`` (UCI optical digits, CC BY 4.0), written once by
``python tools/make_digits_npz.py``. scikit-learn is not needed to read them.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from ..core.errors import BossflowError

DIGITS_SHAPE = (1, 8, 8)
"""Shape of one digits image: one channel, 8×8 pixels."""

DIGITS_COUNT = 1797
"""Number of images."""

_MAX_PIXEL = 16.0  # load_digits pixels are integers 0..16
_FILE = "digits.npz"


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """The shipped ``(pixels, labels)``, read once and checked; read-only arrays."""
    try:
        with resources.files(__package__).joinpath(_FILE).open("rb") as f, np.load(f, allow_pickle=False) as npz:
            pixels, labels = npz["pixels"], npz["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise BossflowError(f"the shipped digits file bossflow/data/{_FILE} is missing or unreadable ({exc}); "
                            "reinstall bossflow.") from None
    if pixels.shape != (DIGITS_COUNT, 64) or labels.shape != (DIGITS_COUNT,) or pixels.max() > _MAX_PIXEL:
        raise BossflowError(f"the shipped digits file bossflow/data/{_FILE} is damaged (pixels {pixels.shape}, "
                            f"labels {labels.shape}); reinstall bossflow.")
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_digits(*, dtype: torch.dtype = torch.float32, return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """All 1,797 digits images, ``(1797, 1, 8, 8)``, pixels mapped from 0..16 to [-1, 1].

    Args:
        dtype: floating dtype of the images.
        return_labels: also return the ``(1797,)`` int64 class labels 0..9.

    Returns:
        The images, or ``(images, labels)`` when ``return_labels`` is true; fresh tensors.

    Raises:
        BossflowError: the shipped data file is missing or damaged.
    """
    pixels, labels = _arrays()
    images = (torch.from_numpy(pixels.astype(np.float64)) / _MAX_PIXEL * 2.0 - 1.0).reshape(-1, *DIGITS_SHAPE).to(dtype)
    if return_labels:
        return images, torch.from_numpy(labels.astype(np.int64))
    return images
