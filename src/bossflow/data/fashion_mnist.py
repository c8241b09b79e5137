"""Fashion-MNIST (Xiao et al. 2017): 70,000 grey 28×28 images of clothing, read from local IDX files.

Nothing is downloaded. On Debian, ``apt-get install dataset-fashion-mnist`` puts the four
original files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) under
:data:`DEFAULT_FASHION_MNIST_DIR`; any folder holding them (gzipped or not) works.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.errors import BossflowError, FileFormatError

FASHION_MNIST_SHAPE = (1, 28, 28)
"""Shape of one Fashion-MNIST image: one channel, 28×28 pixels."""

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise BossflowError(
        f"{folder} has no {stem}(.gz); point --data at a folder holding the Fashion-MNIST IDX files "
        "(on Debian: apt-get install dataset-fashion-mnist)."
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 array of one IDX file (big-endian header: magic, then ``ndim`` sizes)."""
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError) as exc:
        raise FileFormatError(f"cannot read {path}: {exc}.") from None
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise FileFormatError(f"{path} is not an IDX file of {'images' if ndim == 3 else 'labels'} (bad magic number).")
    sizes = [int.from_bytes(raw[4 * (1 + i):4 * (2 + i)], "big") for i in range(ndim)]
    if len(raw) - header != int(np.prod(sizes)):
        raise FileFormatError(f"{path} is truncated: its header promises {sizes}, the file holds {len(raw) - header} bytes.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(sizes)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "train",
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fashion-MNIST images ``(N, 1, 28, 28)``, pixels mapped from 0..255 to [-1, 1].

    Args:
        data_dir: folder of the IDX files (default :data:`DEFAULT_FASHION_MNIST_DIR`).
        split: ``"train"`` (60,000 images), ``"test"`` (10,000) or ``"all"`` (70,000, train first).
        dtype: floating dtype of the images.
        return_labels: also return the ``(N,)`` int64 class labels 0..9.

    Raises:
        BossflowError: the folder or a file is missing, or ``split`` is unknown.
        FileFormatError: a file is damaged.
    """
    if split == "all":
        parts = [load_fashion_mnist(data_dir, split=s, dtype=dtype, return_labels=True) for s in ("train", "test")]
        images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return (images, labels) if return_labels else images
    if split not in _PREFIX:
        raise BossflowError(f"Fashion-MNIST split must be 'train', 'test' or 'all', got {split!r}.")
    folder = Path(data_dir if data_dir is not None else DEFAULT_FASHION_MNIST_DIR)
    if not folder.is_dir():
        raise BossflowError(
            f"Fashion-MNIST folder {folder} does not exist; install it with `apt-get install dataset-fashion-mnist` "
            "or pass --data DIR holding the IDX files."
        )
    pixels = _read_idx(_find(folder, f"{_PREFIX[split]}-images-idx3-ubyte"), _IMAGE_MAGIC, 3)
    images = (torch.from_numpy(pixels.astype(np.float32)) / 127.5 - 1.0).reshape(-1, *FASHION_MNIST_SHAPE).to(dtype)
    if not return_labels:
        return images
    labels = torch.from_numpy(_read_idx(_find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte"), _LABEL_MAGIC, 1).astype(np.int64))
    if labels.shape[0] != images.shape[0]:
        raise FileFormatError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels in the {split} split.")
    return images, labels
