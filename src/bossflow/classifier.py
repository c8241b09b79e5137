"""The shipped digits classifier, whose penultimate features give the *digits Fréchet distance*.

FID needs Inception weights that no offline wheel ships; for the 8×8 digits bossflow
trains its own feature extractor instead: a small convolutional classifier on
``bossflow.data.digits`` (scikit-learn's 1,797 images, pixels in [-1, 1]). The digits
Fréchet distance of a sample set is :func:`bossflow.metrics.frechet_distance` between the
Gaussian fits of its 64 penultimate-layer features and those of the real digits: FID's
recipe with a feature extractor that knows this data.

The shipped weights (``weights/digits-classifier``, float32 safetensors plus a
``config.json`` with the split, training settings and test accuracy) are retrained with

    python -m bossflow.classifier --out src/bossflow/weights/digits-classifier

Training is seeded and single-threaded by default, so it is repeatable; it takes seconds on a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ._io import read_json, write_atomic, write_json_atomic
from .errors import BossflowError, FileFormatError

CLASSIFIER_FORMAT = "bossflow.digits-classifier/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHIPPED_DIR = "weights/digits-classifier"


class DigitsClassifier(nn.Module):
    """A three-convolution classifier for ``(B, 1, 8, 8)`` digits in [-1, 1].

    ``conv 3×3 (16, 8×8) → conv 3×3 stride 2 (32, 4×4) → conv 3×3 stride 2 (32, 2×2) →
    flatten (128) → linear (64) → linear (10)``, SiLU between layers. :meth:`features` returns the 64 penultimate
    activations.

    Args:
        width: channels of the first convolution (doubled after the stride).
        feature_dim: size of the penultimate layer.
        classes: number of classes.
    """

    def __init__(self, width: int = 16, feature_dim: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 4, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: Tensor) -> Tensor:
        """``(B, feature_dim)`` penultimate features of ``(B, 1, 8, 8)`` images."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, classes)`` logits."""
        return self.head(self.body(x))


@dataclass(frozen=True)
class ClassifierConfig:
    """How the digits classifier is trained (stored in its ``config.json``)."""

    width: int = 16
    feature_dim: int = 64
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.05  # Gaussian pixel noise during training: features that do not hinge on the 17 pixel levels
    test_fraction: float = 0.2
    seed: int = 0


def split_digits(test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded stratified train/test split of the digits: ``(x_train, y_train, x_test, y_test)``."""
    from .data.digits import load_digits

    images, labels = load_digits(return_labels=True)
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = round(test_fraction * idx.numel())
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    tr, te = torch.cat(train).sort().values, torch.cat(test).sort().values
    return images[tr], labels[tr], images[te], labels[te]


def accuracy(model: DigitsClassifier, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def train_digits_classifier(config: ClassifierConfig = ClassifierConfig(), *, threads: int | None = 1) -> tuple[DigitsClassifier, dict]:
    """Train :class:`DigitsClassifier` on the training split (AdamW, cosine learning rate, cross-entropy).

    Args:
        config: sizes, optimiser settings, split and seed.
        threads: torch threads while training (1 for repeatable results); ``None`` leaves the setting alone.

    Returns:
        ``(model, info)``: the trained model in eval mode, and ``info`` with its train and test
        accuracy, wall time and the data hash.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        x_train, y_train, x_test, y_test = split_digits(config.test_fraction, config.seed)
        gen = torch.Generator().manual_seed(config.seed + 1)
        with torch.random.fork_rng(devices=[]):  # the initialisers draw from the global generator; leave it as it was
            torch.manual_seed(config.seed)
            model = DigitsClassifier(config.width, config.feature_dim)
        steps_per_epoch = -(-x_train.shape[0] // config.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps_per_epoch)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(x_train.shape[0], generator=gen)
            for i in range(0, order.numel(), config.batch_size):
                idx = order[i:i + config.batch_size]
                x = x_train[idx] + config.noise_std * torch.randn(x_train[idx].shape, generator=gen)
                loss = loss_fn(model(x), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        info = {
            "train_accuracy": accuracy(model, x_train, y_train),
            "test_accuracy": accuracy(model, x_test, y_test),
            "n_train": int(x_train.shape[0]),
            "n_test": int(x_test.shape[0]),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "data_sha256": hashlib.sha256(torch.cat([x_train.flatten(), x_test.flatten()]).numpy().tobytes()).hexdigest(),
        }
    finally:
        torch.set_num_threads(previous)
    return model, info


def save_classifier(path: str | os.PathLike, model: DigitsClassifier, config: ClassifierConfig, info: dict) -> Path:
    """Write ``model.safetensors`` (float32) and ``config.json`` into the folder ``path``, atomically."""
    import safetensors.torch

    out = Path(path)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    blob = safetensors.torch.save(state, metadata={"format": CLASSIFIER_FORMAT})
    write_atomic(out / WEIGHTS_NAME, lambda f: f.write(blob))
    write_json_atomic(out / CONFIG_NAME, {
        "format": CLASSIFIER_FORMAT,
        "architecture": "DigitsClassifier",
        "config": asdict(config),
        "input": "(B, 1, 8, 8) images, pixels 0..16 of sklearn.datasets.load_digits mapped linearly to [-1, 1]",
        "features": f"{config.feature_dim} penultimate activations (DigitsClassifier.features)",
        "training": {**info, "command": "python -m bossflow.classifier --out " + str(path)},
    })
    return out


def load_classifier(path: str | os.PathLike | None = None) -> tuple[DigitsClassifier, dict]:
    """Load a classifier folder (default: the shipped one) as ``(model in eval mode, config)``.

    Raises:
        FileFormatError: the folder, its config or its weights are missing or not a digits classifier.
    """
    import safetensors.torch

    folder = Path(str(resources.files("bossflow").joinpath(*SHIPPED_DIR.split("/")))) if path is None else Path(path)
    doc = read_json(folder / CONFIG_NAME, "digits classifier config")
    if not isinstance(doc, dict) or doc.get("format") != CLASSIFIER_FORMAT:
        raise FileFormatError(f"{folder / CONFIG_NAME} is not a bossflow digits classifier config (format {CLASSIFIER_FORMAT!r}).")
    try:
        config = ClassifierConfig(**doc["config"])
        tensors = safetensors.torch.load((folder / WEIGHTS_NAME).read_bytes())
        model = DigitsClassifier(config.width, config.feature_dim)
        model.load_state_dict(tensors)
    except FileNotFoundError:
        raise FileFormatError(f"{folder / WEIGHTS_NAME} is missing; retrain with `python -m bossflow.classifier --out {folder}`.") from None
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise FileFormatError(f"{folder} does not hold a valid digits classifier ({exc}).".replace("\n", " ")) from None
    model.eval()
    return model, doc


@lru_cache(maxsize=1)
def _shipped() -> DigitsClassifier:
    return load_classifier()[0]


def digits_features(images: Tensor, *, batch_size: int = 1024) -> Tensor:
    """``(n, 64)`` float64 features of ``(n, 1, 8, 8)`` images from the shipped classifier.

    Images are clamped to the data range [-1, 1] first, as a sampler's output would be
    before it is stored as an image.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise BossflowError(f"digits features need (n, 1, 8, 8) images, got {tuple(images.shape)}.")
    model = _shipped()
    x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    with torch.no_grad():
        return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).double()


def digits_frechet_distance(images: Tensor, reference: Tensor | None = None) -> float:
    """Fréchet distance between the classifier features of ``images`` and of ``reference`` (default: all real digits)."""
    from .data.digits import load_digits
    from .metrics import frechet_distance_features

    ref = load_digits() if reference is None else reference
    return frechet_distance_features(digits_features(images), digits_features(ref))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bossflow.classifier --out DIR``: train the digits classifier and write it to DIR."""
    parser = argparse.ArgumentParser(prog="python -m bossflow.classifier", description=main.__doc__)
    parser.add_argument("--out", required=True, help="output folder (the shipped one: src/bossflow/weights/digits-classifier)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=ClassifierConfig.epochs)
    args = parser.parse_args(argv)
    config = ClassifierConfig(seed=args.seed, epochs=args.epochs)
    model, info = train_digits_classifier(config)
    save_classifier(args.out, model, config, info)
    size = (Path(args.out) / WEIGHTS_NAME).stat().st_size
    print(json.dumps({k: info[k] for k in ("train_accuracy", "test_accuracy", "wall_seconds")}), f"weights {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
