"""The built-in teachers of ``bossflow teacher NAME``: data, network and training defaults.

Importing this module imports no torch (``bossflow teacher --help`` lists the presets); the
data loaders import what they need when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import Tensor


def _digits_data(data_dir: str | None = None) -> tuple[Tensor, dict[str, Any]]:
    from ..data.digits import load_digits

    images = load_digits()
    return images, {"name": "digits", "source": "sklearn.datasets.load_digits", "n": int(images.shape[0]),
                    "shape": list(images.shape[1:]), "pixels": "0..16 mapped linearly to [-1, 1]"}


_GMM_2D_DATA_SIZE = 100_000
_GMM_2D_DATA_SEED = 0


def _gmm_2d_data(data_dir: str | None = None) -> tuple[Tensor, dict[str, Any]]:
    from ..data.toy import eight_gaussians

    import torch

    points = eight_gaussians(_GMM_2D_DATA_SIZE, generator=torch.Generator().manual_seed(_GMM_2D_DATA_SEED))
    return points, {"name": "gmm-2d", "source": "bossflow.models.gmm_2d().sample (bossflow.data.eight_gaussians)",
                    "n": _GMM_2D_DATA_SIZE, "seed": _GMM_2D_DATA_SEED, "shape": [2]}


def _fashion_mnist_data(data_dir: str | None = None) -> tuple[Tensor, dict[str, Any]]:
    from ..data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist

    images = load_fashion_mnist(data_dir, split="train")
    return images, {"name": "fashion-mnist", "source": f"Fashion-MNIST IDX files in {data_dir or DEFAULT_FASHION_MNIST_DIR}",
                    "split": "train", "n": int(images.shape[0]), "shape": list(images.shape[1:]),
                    "pixels": "0..255 mapped linearly to [-1, 1]"}


@dataclass(frozen=True)
class TeacherPreset:
    """Default settings of one built-in teacher (``bossflow teacher NAME``).

    Attributes:
        architecture: key of :data:`bossflow.checkpoints.ARCHITECTURES`.
        arch_kwargs: constructor arguments of the network.
        steps: optimizer steps.
        batch_size: samples per step.
        lr: AdamW learning rate (constant).
        ema_decay: EMA decay of the exported weights.
        checkpoint_every: steps between checkpoints.
        weights_dtype: storage dtype of the exported ``model.safetensors``.
        load_data: ``load_data(data_dir)`` returns ``(data (N, *shape), data provenance)``;
            ``data_dir`` is ``--data`` (``None``: the preset's default source).
        description: one line for ``--help``.
    """

    architecture: str
    arch_kwargs: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    ema_decay: float
    checkpoint_every: int
    weights_dtype: str
    load_data: Callable[[str | None], tuple[Tensor, dict[str, Any]]] = field(repr=False)
    description: str = ""


_GREY_UNET = {"architecture": "TinyUNet", "arch_kwargs": {"channels": 1, "width": 32, "time_dim": 64}}
"""The network of both image teachers: one channel, 188k parameters."""

TEACHER_PRESETS: dict[str, TeacherPreset] = {
    "digits": TeacherPreset(
        **_GREY_UNET,
        steps=4000,
        batch_size=128,
        lr=2e-3,
        ema_decay=0.999,
        checkpoint_every=500,
        weights_dtype="float16",
        load_data=_digits_data,
        description="scikit-learn 8x8 digits (1,797 images); TinyUNet, 188k parameters, float16 weights (~380 KB)",
    ),
    "gmm-2d": TeacherPreset(
        architecture="VelocityMLP",
        arch_kwargs={"dim": 2, "hidden": 128, "depth": 3, "time_dim": 32},
        steps=3000,
        batch_size=512,
        lr=2e-3,
        ema_decay=0.999,
        checkpoint_every=500,
        weights_dtype="float32",
        load_data=_gmm_2d_data,
        description="the 8 Gaussians of the gmm-2d preset (100,000 points); VelocityMLP, 38k parameters",
    ),
    "fashion-mnist": TeacherPreset(
        **_GREY_UNET,
        steps=20000,
        batch_size=64,
        lr=1e-3,
        ema_decay=0.9995,
        checkpoint_every=250,
        weights_dtype="float16",
        load_data=_fashion_mnist_data,
        description="Fashion-MNIST 28x28 (60,000 training images, --data DIR or Debian's dataset-fashion-mnist); "
        "TinyUNet, 188k parameters; about an hour per few thousand steps on one CPU thread: use --resume",
    ),
}
"""Built-in teachers: defaults train on a CPU in a few minutes."""
