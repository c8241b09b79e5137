"""The shipped feature classifiers (digits, Fashion-MNIST) and their Fréchet distances."""

import json
from pathlib import Path

import pytest
import torch

import bossflow as bf
from bossflow import classifier as clf
from bossflow.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
from bossflow.errors import BossflowError, FileFormatError

TEST_SEED = 0
needs_fashion = pytest.mark.skipif(not Path(DEFAULT_FASHION_MNIST_DIR).is_dir(),
                                   reason=f"Fashion-MNIST is not installed in {DEFAULT_FASHION_MNIST_DIR}")


def test_registry():
    assert clf.feature_classifier_names() == ("digits", "fashion-mnist")
    for name in clf.feature_classifier_names():
        spec = clf.feature_classifier(name)
        assert spec.format == f"bossflow.{name}-classifier/1" and spec.shipped_dir == f"weights/{name}-classifier"
    assert clf.FEATURE_CLASSIFIERS["digits"].format == clf.CLASSIFIER_FORMAT
    assert clf.FEATURE_CLASSIFIERS["digits"].shipped_dir == clf.SHIPPED_DIR
    with pytest.raises(BossflowError, match="known: digits, fashion-mnist"):
        clf.feature_classifier("cifar10")
    with pytest.raises(BossflowError, match="fashion-mnist features need"):
        clf.dataset_features("fashion-mnist", torch.zeros(2, 1, 8, 8))


def test_missing_fashion_mnist_is_one_sentence(monkeypatch, tmp_path):
    import bossflow.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEFAULT_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    clf.fashion_mnist_reference.cache_clear()
    clf.reference_statistics.cache_clear()
    try:
        with pytest.raises(BossflowError, match="dataset-fashion-mnist") as info:
            clf.dataset_frechet_distance("fashion-mnist", torch.zeros(4, 1, 28, 28))
        assert "Fashion-MNIST reference (for its Fréchet distance and evaluation data) needs" in str(info.value) and "\n" not in str(info.value)
    finally:
        clf.fashion_mnist_reference.cache_clear()
        clf.reference_statistics.cache_clear()


def test_shipped_digits_classifier_by_name():
    model, config = clf.load_classifier(name="digits")
    assert isinstance(model, clf.DigitsClassifier) and config["format"] == clf.CLASSIFIER_FORMAT
    split = config["config"]
    _, _, x_test, y_test = clf.split_digits(split["test_fraction"], split["seed"])
    assert clf.accuracy(model, x_test, y_test) == pytest.approx(config["training"]["test_accuracy"], abs=1e-9)
    assert torch.equal(clf.dataset_features("digits", x_test[:5]), clf.digits_features(x_test[:5]))
    assert clf.digits_frechet_distance(x_test) == pytest.approx(clf.dataset_frechet_distance("digits", x_test))


@needs_fashion
def test_shipped_fashion_mnist_classifier():
    from bossflow.data.fashion_mnist import load_fashion_mnist

    model, config = clf.load_classifier(name="fashion-mnist")
    assert isinstance(model, clf.FashionMNISTClassifier) and config["format"] == "bossflow.fashion-mnist-classifier/1"
    recorded = config["training"]["test_accuracy"]
    assert recorded >= 0.88 and config["training"]["n_test"] == 10_000
    folder = Path(bf.__file__).parent / "models" / "weights" / "fashion-mnist-classifier"
    assert (folder / clf.WEIGHTS_NAME).stat().st_size < 1_000_000
    images, labels = load_fashion_mnist(split="test", return_labels=True)
    keep = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(TEST_SEED))[:2000]
    assert clf.accuracy(model, images[keep], labels[keep]) >= recorded - 0.01
    feats = clf.dataset_features("fashion-mnist", images[:3])
    assert feats.shape == (3, 128) and feats.dtype == torch.float64


@needs_fashion
def test_fashion_mnist_frechet_distance_separates_data_from_noise():
    reference = clf.fashion_mnist_reference()
    real = reference[torch.randperm(reference.shape[0], generator=torch.Generator().manual_seed(TEST_SEED))[:1000]]
    noise = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(TEST_SEED))
    fd_real = clf.dataset_frechet_distance("fashion-mnist", real)  # against the cached 10,000 test images
    fd_noise = clf.dataset_frechet_distance("fashion-mnist", noise)
    assert 0 <= fd_real < 0.03 * fd_noise
    # an explicit reference: two halves of the real images are close, noise is far
    fd_halves = clf.dataset_frechet_distance("fashion-mnist", real[:500], reference=real[500:])
    assert fd_halves < 0.1 * clf.dataset_frechet_distance("fashion-mnist", noise, reference=real[500:])


def _write_config(folder: Path, doc: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / clf.CONFIG_NAME).write_text(json.dumps(doc))


def test_foreign_or_damaged_classifier_folders(tmp_path):
    shipped = Path(bf.__file__).parent / "models" / "weights" / "digits-classifier"
    digits_doc = json.loads((shipped / clf.CONFIG_NAME).read_text())
    cases = {
        "foreign": ({"format": "something-else/1"}, None, "not a bossflow feature classifier config"),
        "not-a-dict": ([1, 2], None, "not a bossflow feature classifier config"),
        "no-weights": (digits_doc, None, "model.safetensors is missing"),
        "garbage-weights": (digits_doc, b"\x00not safetensors", "does not hold a valid digits classifier"),
        "wrong-shapes": ({**digits_doc, "config": {**digits_doc["config"], "width": 8}}, "copy",
                         "does not hold a valid digits classifier"),
        "bad-config": ({**digits_doc, "config": {"depth": 3}}, "copy", "does not hold a valid digits classifier"),
    }
    for label, (doc, weights, message) in cases.items():
        folder = tmp_path / label
        _write_config(folder, doc)
        if weights == "copy":
            (folder / clf.WEIGHTS_NAME).write_bytes((shipped / clf.WEIGHTS_NAME).read_bytes())
        elif weights is not None:
            (folder / clf.WEIGHTS_NAME).write_bytes(weights)
        with pytest.raises(FileFormatError, match=message) as info:
            clf.load_classifier(folder)
        assert "\n" not in str(info.value) and isinstance(info.value, BossflowError), label
    # a digits folder where a Fashion-MNIST classifier is expected
    with pytest.raises(FileFormatError, match="not a bossflow fashion-mnist classifier config"):
        clf.load_classifier(shipped, name="fashion-mnist")
    with pytest.raises(FileFormatError, match="does not exist"):
        clf.load_classifier(tmp_path / "nowhere")


def test_save_and_load_round_trip_in_float16(tmp_path):
    """A Fashion-MNIST-sized classifier is stored in float16 and loads back exactly (no data set needed)."""
    config = clf.FashionClassifierConfig(width=4, feature_dim=8)
    torch.manual_seed(TEST_SEED)
    model = clf.FashionMNISTClassifier(config.width, config.feature_dim)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half())
    clf.save_classifier(tmp_path / "fm", model, config, {"test_accuracy": 0.5})
    loaded, doc = clf.load_classifier(tmp_path / "fm")
    assert doc["weights_dtype"] == "float16" and doc["config"]["width"] == 4
    assert "fashion-mnist --out" in doc["training"]["command"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert torch.equal(model.features(x), loaded.features(x))
