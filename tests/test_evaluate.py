"""`bossflow evaluate`, its measures and inputs, and the shipped digits classifier."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.cli import main
from bossflow.errors import BossflowError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def schedule_files(tmp_path):
    """Two schedule files for gmm-2d: a small BOSS search and the EDM family, both NFE 2 and 4."""
    grid = bf.uniform_schedule(20).times
    noise = bf.gaussian_noise(32, (2,), dtype=torch.float64)
    boss = bf.bellman_schedules(bf.cost_matrix(bf.models.gmm_2d(), noise, grid), grid, [2, 4], model="gmm-2d")
    bf.save_schedules(tmp_path / "boss.json", boss.values())
    bf.save_schedules(tmp_path / "edm.json", [bf.edm_schedule(2), bf.edm_schedule(4)])
    return tmp_path / "boss.json", tmp_path / "edm.json"


def test_evaluate_end_to_end_on_gmm_2d(capsys, tmp_path, schedule_files):
    out = tmp_path / "eval"
    code, text, err = run(capsys, "evaluate", "--model", "gmm-2d", "--schedule", schedule_files[0], "--schedule",
                          schedule_files[1], "--samples", "150", "--out", out, "--quiet")
    assert code == 0, err
    assert "| schedule | method | NFE |" in text and "exact mixture samples" in text
    report = json.loads((out / "evaluate.json").read_text())
    rows = report["rows"]
    assert rows[0]["schedule"] == "reference" and rows[0]["rmse"] == 0.0 and rows[0]["nfe_spent"] > 20
    assert [(r["schedule"], r["nfe"]) for r in rows[1:]] == [("boss", 2), ("boss", 4), ("edm", 2), ("edm", 4)]
    for r in rows[1:]:
        assert r["nfe_spent"] == r["nfe"]  # counted: one evaluation per Euler step
        assert all(np.isfinite(r[k]) and r[k] > 0 for k in ("rmse", "w2", "mmd2", "seconds"))
        assert r["w2_kind"] == "exact" and r["fd"] is None and r["fid"] is None
    assert rows[1]["method"] == "bellman" and rows[3]["method"] == "edm"
    # RMSE is measured against the dopri5 solution of the same noises: recompute one
    noise = bf.gaussian_noise(150, (2,), seed=1, dtype=torch.float64)  # the default evaluation seed
    model = bf.models.gmm_2d()
    ref = bf.reference_solve(model, noise, rtol=1e-8, atol=1e-8)
    expected = bf.endpoint_rmse(bf.euler(model, noise, bf.Schedule.load(schedule_files[1], nfe=4)), ref)
    assert rows[4]["rmse"] == pytest.approx(expected, rel=1e-6)
    assert (out / "evaluate.csv").read_text().splitlines()[0].startswith("model,schedule,method,nfe,nfe_spent,rmse,w2")
    assert len((out / "evaluate.csv").read_text().splitlines()) == 1 + 5
    assert (out / "evaluate.md").read_text().startswith("# bossflow evaluate: gmm-2d")


def test_family_names_and_nfe_selection(capsys, tmp_path, schedule_files):
    code, _, err = run(capsys, "evaluate", "--model", "gmm-2d", "--schedule", "uniform", "--schedule", schedule_files[0],
                       "--schedule", schedule_files[0], "--nfe", "4", "--samples", "40", "--out", tmp_path / "e", "--quiet")
    assert code == 0, err
    rows = json.loads((tmp_path / "e" / "evaluate.json").read_text())["rows"]
    assert [(r["schedule"], r["nfe"]) for r in rows[1:]] == [("uniform", 4), ("boss", 4), ("boss#2", 4)]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--schedule", "uniform"], "needs budgets"),
        (["--schedule", "missing.json"], "does not exist"),
        (["--schedule", "BOSS", "--nfe", "3"], "no schedule with NFE [3]"),
        (["--schedule", "uniform", "--nfe", "2", "--inception", "no/such/inception.pt2", "--ref-stats", "x.npz"],
         "Inception feature extractor no/such/inception.pt2 does not exist; give --inception"),
        (["--schedule", "uniform", "--nfe", "2", "--inception", "no/such/inception.pt2"], "--ref-stats"),
        (["--schedule", "uniform", "--nfe", "2", "--ref-stats", "x.npz"], "needs both"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, schedule_files, extra, message):
    extra = [str(schedule_files[0]) if e == "BOSS" else e for e in extra]
    code, _, err = run(capsys, "evaluate", "--model", "gmm-2d", "--samples", "20", "--out", tmp_path / "e", "--quiet", *extra)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_digits_fd_and_fid_with_a_supplied_extractor(capsys, tmp_path):
    """The FID path, offline: a tiny torch.export feature extractor and reference statistics made with it."""

    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 4).flatten(1)  # (B, 4) features of (B, 1, 8, 8) images

    exported = torch.export.export(Pool(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1)}})
    extractor = tmp_path / "features.pt2"
    torch.export.save(exported, str(extractor))
    from bossflow.data.digits import load_digits

    real = (load_digits() + 1) / 2
    feats = Pool()(real).double().numpy()
    np.savez(tmp_path / "stats.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    out = tmp_path / "e"
    code, text, err = run(capsys, "evaluate", "--model", "digits", "--schedule", "uniform", "--nfe", "2", "--samples", "60",
                          "--inception", extractor, "--ref-stats", tmp_path / "stats.npz", "--out", out, "--quiet")
    assert code == 0, err
    assert "digits FD" in text and "FID" in text and "real digits" in text
    ref, two = json.loads((out / "evaluate.json").read_text())["rows"]
    for r in (ref, two):
        assert np.isfinite(r["fd"]) and np.isfinite(r["fid"]) and r["fd"] > 0
    assert two["fd"] > ref["fd"]  # 2 Euler steps are further from the digits than the reference solver
    # features of another size than the statistics: one line, exit 2
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(3))
    code, _, err = run(capsys, "evaluate", "--model", "digits", "--schedule", "uniform", "--nfe", "2", "--samples", "20",
                       "--inception", extractor, "--ref-stats", tmp_path / "bad.npz", "--out", out, "--quiet")
    assert code == 2 and "same extractor" in err


def test_data_for_trained_teachers():
    from bossflow.evaluate import data_for_model
    from bossflow.loading import load_model

    loaded = load_model("gmm-2d-teacher")
    data, text, features = data_for_model("gmm-2d-teacher", loaded.model, (2,), 10, 0, torch.float32)
    assert data.shape == (10, 2) and "exact gmm-2d samples" in text and features is None
    loaded = load_model("digits")
    data, text, features = data_for_model("digits", loaded.model, (1, 8, 8), 10, 0, torch.float32)
    assert data.shape == (1797, 1, 8, 8) and "real digits" in text and features == "digits"


def _fashion_model_dir(tmp_path):
    """A model directory whose config says it was trained on Fashion-MNIST (only its config is read)."""
    doc = json.loads((Path(bf.__file__).parent / "models" / "weights" / "digits" / "config.json").read_text())
    doc["sample_shape"], doc["data"] = [1, 28, 28], {"name": "fashion-mnist", "shape": [1, 28, 28]}
    folder = tmp_path / "fmnist-teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(doc))
    return folder


def test_fashion_mnist_models_are_compared_with_the_test_split(tmp_path):
    from bossflow.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
    from bossflow.evaluate import ScheduleEvaluator, data_for_model, format_evaluation

    if not Path(DEFAULT_FASHION_MNIST_DIR).is_dir():
        pytest.skip(f"Fashion-MNIST is not installed in {DEFAULT_FASHION_MNIST_DIR}")
    folder = str(_fashion_model_dir(tmp_path))

    def shrink(x, t):  # any flow will do: the point is which data and features it is measured against
        return -0.5 * x

    data, text, features = data_for_model(folder, shrink, (1, 28, 28), 10, 3, torch.float32)
    assert data.shape == (2000, 1, 28, 28) and features == "fashion-mnist" and "random subset" in text
    again, _, _ = data_for_model(folder, shrink, (1, 28, 28), 10, 3, torch.float32)
    assert torch.equal(data, again)  # seeded
    assert data_for_model(folder, shrink, (1, 28, 28), 20_000, 3, torch.float32)[0].shape[0] == 10_000
    evaluator = ScheduleEvaluator(shrink, (1, 28, 28), model_id=folder, samples=20)
    assert evaluator.features == "fashion-mnist" and not evaluator.digits
    row, _ = evaluator.score(bf.uniform_schedule(2))
    assert row.fd is not None and row.fd > 0
    report = {"info": evaluator.info(), "rows": [vars(evaluator.reference_row()), vars(row)]}
    assert report["info"]["fd_features"] == "fashion-mnist"
    text = format_evaluation(report)
    assert "fashion-mnist FD" in text and "10,000 Fashion-MNIST test images" in text
    # no Fréchet distance when asked for none, through either keyword
    assert ScheduleEvaluator(shrink, (1, 28, 28), model_id=folder, samples=20, features=None)._fd_stats is None
    assert ScheduleEvaluator(shrink, (1, 28, 28), model_id=folder, samples=20, digits=False).features is None


def test_evaluator_feature_switches():
    from bossflow.evaluate import ScheduleEvaluator

    with pytest.raises(BossflowError, match="known: digits, fashion-mnist"):
        ScheduleEvaluator(bf.models.gmm_2d(), (2,), model_id="gmm-2d", samples=10, features="cifar10")
    with pytest.raises(BossflowError, match="not both"):
        ScheduleEvaluator(bf.models.gmm_2d(), (2,), model_id="gmm-2d", samples=10, features="fashion-mnist", digits=True)
    from bossflow.data.digits import load_digits

    real = load_digits()[:50]
    evaluator = ScheduleEvaluator(bf.models.gmm_2d(), (2,), model_id="gmm-2d", samples=10)
    assert evaluator.features is None and not evaluator.digits
    evaluator = ScheduleEvaluator(lambda x, t: -x, (1, 8, 8), model_id="f", samples=10, data=real, digits=True)
    assert evaluator.features == "digits" and evaluator.digits and evaluator.fd_reference == "the data"


def test_shipped_digits_classifier():
    from bossflow.classifier import WEIGHTS_NAME, accuracy, digits_features, load_classifier, split_digits

    model, config = load_classifier()
    recorded = config["training"]["test_accuracy"]
    assert recorded >= 0.97
    split = config["config"]
    _, _, x_test, y_test = split_digits(split["test_fraction"], split["seed"])
    assert accuracy(model, x_test, y_test) == pytest.approx(recorded, abs=1e-9)
    folder = Path(bf.__file__).parent / "models" / "weights" / "digits-classifier"
    assert (folder / WEIGHTS_NAME).stat().st_size < 200_000
    feats = digits_features(x_test[:10])
    assert feats.shape == (10, 64) and feats.dtype == torch.float64
    with pytest.raises(BossflowError, match="8, 8"):
        digits_features(torch.zeros(3, 64))


def test_classifier_training_is_seeded():
    from bossflow.classifier import ClassifierConfig, train_digits_classifier

    config = ClassifierConfig(epochs=1)
    a, info = train_digits_classifier(config)
    b, _ = train_digits_classifier(config)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert info["test_accuracy"] > 0.5  # one epoch already separates most classes


def test_a_diverging_schedule_is_reported(tmp_path):
    from bossflow.evaluate import ScheduleEvaluator

    def blow_up(x, t):
        return torch.full_like(x, float("inf"))

    evaluator = ScheduleEvaluator(bf.models.gmm_2d(), (2,), model_id="gmm-2d", samples=10)
    evaluator.model = blow_up  # the reference came from the real flow; the sampler now diverges
    with pytest.raises(BossflowError, match="non-finite samples"):
        evaluator.score(bf.uniform_schedule(2))
