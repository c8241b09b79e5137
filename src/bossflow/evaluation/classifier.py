"""Shipped feature classifiers, whose penultimate features give a data set's *Fréchet distance*.

FID needs Inception weights that no offline wheel ships; for its image data sets bossflow
trains its own feature extractors instead: small convolutional classifiers, one per data set
(:data:`FEATURE_CLASSIFIERS`):

* ``"digits"``: scikit-learn's 1,797 8×8 digits (``bossflow.data.digits``), 64 features;
* ``"fashion-mnist"``: Fashion-MNIST 28×28 (``bossflow.data.fashion_mnist``), 128 features.

The Fréchet distance of a sample set (:func:`dataset_frechet_distance`) is
:func:`bossflow.metrics.frechet_distance` between the Gaussian fits of its penultimate-layer
features and those of a reference set, by default the real data (all digits; the 10,000
Fashion-MNIST test images): FID's recipe with a feature extractor that knows the data.

The shipped weights (``weights/<name>-classifier``: safetensors plus a ``config.json`` with
the split, training settings and test accuracy) are retrained with

    python -m bossflow.classifier --out src/bossflow/models/weights/digits-classifier
    python -m bossflow.classifier fashion-mnist --out src/bossflow/models/weights/fashion-mnist-classifier

Training is seeded and single-threaded by default, so it is repeatable; digits take seconds
on a CPU, Fashion-MNIST a few minutes. Nothing here reads a data set until it is needed.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..core._io import read_json, write_atomic, write_json_atomic
from ..core.errors import BossflowError, FileFormatError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASSIFIER_FORMAT = "bossflow.digits-classifier/1"
"""Format tag of the digits classifier (each classifier's is ``bossflow.<name>-classifier/1``)."""
SHIPPED_DIR = "weights/digits-classifier"
"""Package folder of the shipped digits classifier (each classifier's is ``weights/<name>-classifier``)."""


class ConvClassifier(nn.Module):
    """A three-convolution classifier for ``(B, 1, size, size)`` images in [-1, 1].

    ``conv 3×3 (width) → conv 3×3 stride 2 (2·width) → conv 3×3 stride 2 (2·width) →
    flatten → linear (feature_dim) → linear (classes)``, SiLU between layers.
    :meth:`features` returns the ``feature_dim`` penultimate activations.

    Args:
        width: channels of the first convolution (doubled after the first stride).
        feature_dim: size of the penultimate layer.
        classes: number of classes.
        size: image height and width.
    """

    def __init__(self, width: int, feature_dim: int, classes: int = 10, *, size: int) -> None:
        super().__init__()
        reduced = ((size + 1) // 2 + 1) // 2  # two stride-2 convolutions with padding 1: ceil(ceil(size / 2) / 2)
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(),
            nn.Linear(2 * width * reduced * reduced, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: Tensor) -> Tensor:
        """``(B, feature_dim)`` penultimate features of ``(B, 1, size, size)`` images."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, classes)`` logits."""
        return self.head(self.body(x))


class DigitsClassifier(ConvClassifier):
    """:class:`ConvClassifier` for ``(B, 1, 8, 8)`` digits: 8×8 → 4×4 → 2×2, flatten (128) → 64 features (arguments as there)."""

    def __init__(self, width: int = 16, feature_dim: int = 64, classes: int = 10) -> None:
        super().__init__(width, feature_dim, classes, size=8)


class FashionMNISTClassifier(ConvClassifier):
    """:class:`ConvClassifier` for ``(B, 1, 28, 28)`` Fashion-MNIST: 28×28 → 14×14 → 7×7, flatten (3,136) → 128 features.

    Arguments as for :class:`ConvClassifier`.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, classes: int = 10) -> None:
        super().__init__(width, feature_dim, classes, size=28)


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


@dataclass(frozen=True)
class FashionClassifierConfig:
    """How the Fashion-MNIST classifier is trained (stored in its ``config.json``).

    It trains on the official 60,000-image training split (or a seeded subset of
    ``train_subset`` images) and is tested on the 10,000-image test split.
    """

    width: int = 32
    feature_dim: int = 128
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    noise_std: float = 0.05  # Gaussian pixel noise during training, as for the digits
    train_subset: int | None = None  # None: the whole training split
    seed: int = 0


def split_digits(test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded stratified train/test split of the digits: ``(x_train, y_train, x_test, y_test)``."""
    from ..data.digits import load_digits

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


def _fashion_split(split: str, what: str) -> tuple[Tensor, Tensor]:
    """Images and labels of a Fashion-MNIST split from the default folder, with a clear error when it is absent."""
    from ..data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist

    if not Path(DEFAULT_FASHION_MNIST_DIR).is_dir():
        raise BossflowError(
            f"{what} needs the Fashion-MNIST IDX files in {DEFAULT_FASHION_MNIST_DIR}, which does not exist; "
            "install them with `apt-get install dataset-fashion-mnist`."
        )
    return load_fashion_mnist(split=split, return_labels=True)


def split_fashion_mnist(train_subset: int | None, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The official Fashion-MNIST split ``(x_train, y_train, x_test, y_test)``; ``train_subset`` keeps a seeded subset of the training images."""
    x_train, y_train = _fashion_split("train", "training the Fashion-MNIST classifier")
    x_test, y_test = _fashion_split("test", "training the Fashion-MNIST classifier")
    if train_subset is not None and train_subset < x_train.shape[0]:
        keep = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed + 2))[:train_subset].sort().values
        x_train, y_train = x_train[keep], y_train[keep]
    return x_train, y_train, x_test, y_test


@lru_cache(maxsize=1)
def fashion_mnist_reference() -> Tensor:
    """The 10,000 Fashion-MNIST test images: the default reference of the Fashion-MNIST Fréchet distance."""
    return _fashion_split("test", "the Fashion-MNIST reference (for its Fréchet distance and evaluation data)")[0]


def _digits_reference() -> Tensor:
    from ..data.digits import load_digits

    return load_digits()


@dataclass(frozen=True)
class FeatureClassifier:
    """One feature classifier of :data:`FEATURE_CLASSIFIERS`: its network, training data and reference.

    Attributes:
        name: registry key; the format tag is ``bossflow.<name>-classifier/1`` and the shipped
            folder ``weights/<name>-classifier``.
        architecture: the network class, built as ``architecture(config.width, config.feature_dim)``.
        config_type: frozen dataclass of training settings.
        image_shape: ``(C, H, W)`` of the images it classifies.
        split: ``split(config) -> (x_train, y_train, x_test, y_test)``.
        reference: the default reference images of the Fréchet distance.
        reference_text: what ``reference`` holds, in words.
        input_text: the pixel convention, in words (written into ``config.json``).
        weights_dtype: dtype of the stored weights (the model computes in float32).
    """

    name: str
    architecture: type[ConvClassifier]
    config_type: type
    image_shape: tuple[int, int, int]
    split: Callable[[Any], tuple[Tensor, Tensor, Tensor, Tensor]]
    reference: Callable[[], Tensor]
    reference_text: str
    input_text: str
    weights_dtype: torch.dtype = torch.float32

    @property
    def format(self) -> str:
        """Format tag in ``config.json`` and the safetensors metadata."""
        return f"bossflow.{self.name}-classifier/1"

    @property
    def shipped_dir(self) -> str:
        """Package folder of the shipped weights."""
        return f"weights/{self.name}-classifier"

    def retrain_command(self, out: str | os.PathLike) -> str:
        """The shell command that retrains this classifier into ``out``."""
        return f"python -m bossflow.classifier {'' if self.name == 'digits' else self.name + ' '}--out {out}"


FEATURE_CLASSIFIERS: dict[str, FeatureClassifier] = {
    "digits": FeatureClassifier(
        name="digits", architecture=DigitsClassifier, config_type=ClassifierConfig, image_shape=(1, 8, 8),
        split=lambda c: split_digits(c.test_fraction, c.seed), reference=_digits_reference,
        reference_text="the 1,797 real digits",
        input_text="(B, 1, 8, 8) images, pixels 0..16 of sklearn.datasets.load_digits mapped linearly to [-1, 1]",
    ),
    "fashion-mnist": FeatureClassifier(
        name="fashion-mnist", architecture=FashionMNISTClassifier, config_type=FashionClassifierConfig,
        image_shape=(1, 28, 28), split=lambda c: split_fashion_mnist(c.train_subset, c.seed),
        reference=fashion_mnist_reference, reference_text="the 10,000 Fashion-MNIST test images",
        input_text="(B, 1, 28, 28) images, Fashion-MNIST pixels 0..255 mapped linearly to [-1, 1]",
        weights_dtype=torch.float16,
    ),
}
"""Name → feature classifier: the data sets with a shipped Fréchet-distance feature extractor."""


def feature_classifier_names() -> tuple[str, ...]:
    """Names of the feature classifiers (keys of :data:`FEATURE_CLASSIFIERS`)."""
    return tuple(FEATURE_CLASSIFIERS)


def feature_classifier(name: str) -> FeatureClassifier:
    """The registry entry ``name``, or a :class:`BossflowError` listing the known names."""
    try:
        return FEATURE_CLASSIFIERS[name]
    except (KeyError, TypeError):
        raise BossflowError(f"no feature classifier named {name!r}; known: {', '.join(FEATURE_CLASSIFIERS)}.") from None


def accuracy(model: ConvClassifier, x: Tensor, y: Tensor, *, batch_size: int = 256) -> float:
    """Fraction of ``x`` classified as ``y`` (in batches of ``batch_size``)."""
    with torch.no_grad():
        hits = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    return hits / x.shape[0]


def _data_hash(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' bytes, one after the other (that of their flattened concatenation)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_classifier(name: str, config: Any = None, *, threads: int | None = 1) -> tuple[ConvClassifier, dict]:
    """Train the feature classifier ``name`` on its training split (AdamW, cosine learning rate, cross-entropy, pixel noise).

    The trained weights are rounded to the classifier's storage dtype before they are
    measured, so the recorded accuracies are those of the saved model.

    Args:
        name: key of :data:`FEATURE_CLASSIFIERS`.
        config: training settings (an instance of the entry's ``config_type``; default: its defaults).
        threads: torch threads while training (1 for repeatable results); ``None`` leaves the setting alone.

    Returns:
        ``(model, info)``: the trained model in eval mode, and ``info`` with its train and test
        accuracy, wall time and the data hash.
    """
    spec = feature_classifier(name)
    config = spec.config_type() if config is None else config
    if not isinstance(config, spec.config_type):
        raise BossflowError(f"the {name} classifier is configured by {spec.config_type.__name__}, got {type(config).__name__}.")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        x_train, y_train, x_test, y_test = spec.split(config)
        gen = torch.Generator().manual_seed(config.seed + 1)
        with torch.random.fork_rng(devices=[]):  # the initialisers draw from the global generator; leave it as it was
            torch.manual_seed(config.seed)
            model = spec.architecture(config.width, config.feature_dim)
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
        with torch.no_grad():  # what save_classifier stores is what gets measured
            for p in model.parameters():
                p.copy_(p.to(spec.weights_dtype))
        train_seconds = time.perf_counter() - started
        info = {
            "train_accuracy": accuracy(model, x_train, y_train),
            "test_accuracy": accuracy(model, x_test, y_test),
            "n_train": int(x_train.shape[0]),
            "n_test": int(x_test.shape[0]),
            "wall_seconds": round(train_seconds, 2),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "data_sha256": _data_hash(x_train, x_test),
        }
    finally:
        torch.set_num_threads(previous)
    return model, info


def train_digits_classifier(config: ClassifierConfig = ClassifierConfig(), *, threads: int | None = 1) -> tuple[DigitsClassifier, dict]:
    """Train :class:`DigitsClassifier` on the digits training split: :func:`train_classifier` for ``"digits"``.

    Args:
        config: sizes, optimiser settings, split and seed.
        threads: torch threads while training (1 for repeatable results); ``None`` leaves the setting alone.

    Returns:
        ``(model, info)``: the trained model in eval mode, and ``info`` with its train and test
        accuracy, wall time and the data hash.
    """
    return train_classifier("digits", config, threads=threads)


def _spec_of_config(config: Any) -> FeatureClassifier:
    for spec in FEATURE_CLASSIFIERS.values():
        if isinstance(config, spec.config_type):
            return spec
    raise BossflowError(f"{type(config).__name__} is not the training config of any feature classifier.")


def save_classifier(path: str | os.PathLike, model: ConvClassifier, config: Any, info: dict) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into the folder ``path``, atomically.

    Which classifier it is follows from the type of ``config``; the weights are stored in that
    classifier's ``weights_dtype`` (float32 for digits, float16 for Fashion-MNIST).
    """
    import safetensors.torch

    spec = _spec_of_config(config)
    out = Path(path)
    state = {k: v.detach().to(spec.weights_dtype).contiguous() for k, v in model.state_dict().items()}
    blob = safetensors.torch.save(state, metadata={"format": spec.format})
    write_atomic(out / WEIGHTS_NAME, lambda f: f.write(blob))
    write_json_atomic(out / CONFIG_NAME, {
        "format": spec.format,
        "architecture": spec.architecture.__name__,
        "config": asdict(config),
        "input": spec.input_text,
        "features": f"{config.feature_dim} penultimate activations ({spec.architecture.__name__}.features)",
        "weights_dtype": str(spec.weights_dtype).removeprefix("torch."),
        "training": {**info, "command": spec.retrain_command(path)},
    })
    return out


def _shipped_folder(spec: FeatureClassifier) -> Path:
    return Path(str(resources.files("bossflow.models").joinpath(*spec.shipped_dir.split("/"))))


def load_classifier(path: str | os.PathLike | None = None, *, name: str | None = None) -> tuple[ConvClassifier, dict]:
    """Load a classifier folder as ``(model in eval mode, config)``.

    Args:
        path: folder with ``config.json`` and ``model.safetensors``; default: the shipped folder of ``name``.
        name: which classifier to expect (default ``"digits"`` without ``path``; with ``path``, any
            known one, as its config says).

    Raises:
        FileFormatError: the folder, its config or its weights are missing, damaged, or not the classifier asked for.
    """
    import safetensors
    import safetensors.torch

    wanted = feature_classifier(name) if name is not None else None
    if path is None:
        folder = _shipped_folder(wanted or FEATURE_CLASSIFIERS["digits"])
    else:
        folder = Path(path)
    doc = read_json(folder / CONFIG_NAME, "feature classifier config")
    by_format = {s.format: s for s in FEATURE_CLASSIFIERS.values()}
    spec = by_format.get(doc.get("format")) if isinstance(doc, dict) else None
    expected = wanted.format if wanted is not None else " or ".join(repr(f) for f in by_format)
    if spec is None or (wanted is not None and spec is not wanted):
        raise FileFormatError(
            f"{folder / CONFIG_NAME} is not a bossflow {wanted.name if wanted else 'feature'} classifier config "
            f"(format {expected}); retrain it with `{(wanted or FEATURE_CLASSIFIERS['digits']).retrain_command(folder)}`."
        )
    try:
        config = spec.config_type(**doc["config"])
        tensors = safetensors.torch.load((folder / WEIGHTS_NAME).read_bytes())
        model = spec.architecture(config.width, config.feature_dim)
        model.load_state_dict(tensors)  # copies (and upcasts) float16 weights into the float32 model
    except FileNotFoundError:
        raise FileFormatError(f"{folder / WEIGHTS_NAME} is missing; retrain with `{spec.retrain_command(folder)}`.") from None
    except (KeyError, TypeError, RuntimeError, ValueError, safetensors.SafetensorError) as exc:
        raise FileFormatError(
            f"{folder} does not hold a valid {spec.name} classifier ({exc}); retrain it with `{spec.retrain_command(folder)}`."
            .replace("\n", " ")
        ) from None
    model.eval()
    return model, doc


@cache
def _shipped(name: str = "digits") -> ConvClassifier:
    return load_classifier(name=name)[0]


def dataset_features(name: str, images: Tensor, *, batch_size: int = 128) -> Tensor:
    """``(n, F)`` float64 features of ``(n, C, H, W)`` images from the shipped classifier ``name``.

    Images are clamped to the data range [-1, 1] first, as a sampler's output would be
    before it is stored as an image.

    Args:
        name: key of :data:`FEATURE_CLASSIFIERS`.
        images: images of that classifier's ``image_shape``, pixels in [-1, 1].
        batch_size: images per forward pass.
    """
    spec = feature_classifier(name)
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.image_shape:
        raise BossflowError(f"{name} features need (n, {', '.join(map(str, spec.image_shape))}) images, got {tuple(images.shape)}.")
    model = _shipped(name)
    x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    with torch.no_grad():
        return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]).double()


@cache
def reference_statistics(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the classifier ``name``'s features of its default reference (computed once per process)."""
    from ..core.metrics import feature_statistics

    return feature_statistics(dataset_features(name, feature_classifier(name).reference()))


def dataset_frechet_distance(name: str, images: Tensor, reference: Tensor | None = None) -> float:
    """Fréchet distance between the classifier ``name``'s features of ``images`` and of ``reference``.

    Args:
        name: key of :data:`FEATURE_CLASSIFIERS`.
        images: ``(n, C, H, W)`` samples, ``n >= 2``.
        reference: real images; default the data set (all digits; the 10,000 Fashion-MNIST
            test images), whose feature statistics are cached per process.

    Raises:
        BossflowError: wrong image shape, or the reference data set is not installed.
    """
    from ..core.metrics import feature_statistics, frechet_distance

    ref = reference_statistics(name) if reference is None else feature_statistics(dataset_features(name, reference))
    return frechet_distance(*feature_statistics(dataset_features(name, images)), *ref)


def digits_features(images: Tensor, *, batch_size: int = 1024) -> Tensor:
    """``(n, 64)`` float64 features of ``(n, 1, 8, 8)`` images: :func:`dataset_features` for ``"digits"``."""
    return dataset_features("digits", images, batch_size=batch_size)


def digits_frechet_distance(images: Tensor, reference: Tensor | None = None) -> float:
    """Fréchet distance between the classifier features of ``images`` and of ``reference`` (default: all real digits)."""
    return dataset_frechet_distance("digits", images, reference)
