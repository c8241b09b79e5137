"""Teachers: model directories, shipped weights, flow-matching training, resume, the ``teacher`` command."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch

import bossflow as bf
from bossflow import checkpoints, teachers
from bossflow.checkpoints import load_model_dir, resolve_model_dir, round_weights, save_model_dir, shipped_model_dir
from bossflow.data import eight_gaussians
from bossflow.errors import BossflowError, FileFormatError, ModelSpecError
from bossflow.metrics import wasserstein2
from bossflow.models import VelocityMLP, gmm_2d
from bossflow.cli.app import add_subcommand
from bossflow.cli.teacher import run as cmd_teacher
from bossflow.teachers import TEACHER_PRESETS, train_teacher

SMALL_MLP = {"dim": 2, "hidden": 32, "depth": 2, "time_dim": 8}
SMALL_UNET = {"channels": 1, "width": 8, "time_dim": 8}


def _outputs(model, shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, *shape, generator=gen)
    t = torch.rand(5, generator=gen)
    with torch.no_grad():
        return model(x, t)


def _gmm_points(n=2000, seed=0):
    return eight_gaussians(n, generator=torch.Generator().manual_seed(seed))


def _images(n=64, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- data ---------------------------------------------------------------------------------


def test_eight_gaussians_is_the_gmm_2d_mixture():
    a = eight_gaussians(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = gmm_2d().sample(500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert eight_gaussians(4, generator=torch.Generator().manual_seed(0)).dtype == torch.float32
    with pytest.raises(BossflowError, match="Generator"):
        eight_gaussians(4, generator=None)


def test_digits_data_shape_and_range():
    from bossflow.data import load_digits

    images, labels = load_digits(return_labels=True)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert labels.shape == (1797,) and labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert load_digits(dtype=torch.float64).dtype == torch.float64


def test_shipped_digits_are_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    from bossflow.data import load_digits

    bunch = datasets.load_digits()
    images, labels = load_digits(dtype=torch.float64, return_labels=True)
    assert torch.equal(images.reshape(1797, 64) * 8 + 8, torch.as_tensor(bunch.data, dtype=torch.float64))
    assert torch.equal(labels, torch.as_tensor(bunch.target, dtype=torch.int64))


def test_digits_need_no_scikit_learn(monkeypatch):
    from bossflow.data import digits

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    digits._arrays.cache_clear()
    images, labels = digits.load_digits(return_labels=True)
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    images[0] = 0  # fresh tensors: the cached arrays are not changed
    assert digits.load_digits()[0].min() == -1


# --- model directories --------------------------------------------------------------------


@pytest.mark.parametrize(
    "architecture, kwargs, shape",
    [("VelocityMLP", SMALL_MLP, (2,)), ("TinyUNet", SMALL_UNET, (1, 8, 8))],
)
@pytest.mark.parametrize("weights_dtype", ["float32", "float16"])
def test_model_dir_round_trip(tmp_path, architecture, kwargs, shape, weights_dtype):
    model = checkpoints.build_model(architecture, kwargs)
    save_model_dir(model, tmp_path / "m", architecture=architecture, kwargs=kwargs, sample_shape=shape,
                   weights_dtype=weights_dtype, data={"name": "test"}, training={"steps": 0})
    loaded, config = load_model_dir(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.sample_shape == shape
    assert config["format"] == "bossflow.model/1" and config["architecture"] == architecture
    assert config["kwargs"] == kwargs and config["data"] == {"name": "test"} and config["training"] == {"steps": 0}
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    round_weights(model, weights_dtype)
    assert torch.equal(_outputs(loaded, shape), _outputs(model, shape))
    assert resolve_model_dir(tmp_path / "m") == tmp_path / "m"
    assert resolve_model_dir("gmm-2d") is None


def _bad_dir(tmp_path, case):
    good = tmp_path / "good"
    save_model_dir(VelocityMLP(**SMALL_MLP), good, architecture="VelocityMLP", kwargs=SMALL_MLP, sample_shape=(2,))
    path = tmp_path / case
    config = json.loads((good / "config.json").read_text())
    weights = (good / "model.safetensors").read_bytes()
    if case == "missing":
        return path
    if case == "a-file":
        path.write_text("hello")
        return path
    path.mkdir()
    if case == "no-config":
        (path / "model.safetensors").write_bytes(weights)
        return path
    if case == "bad-json":
        (path / "config.json").write_text("{not json")
    elif case == "foreign-format":
        (path / "config.json").write_text(json.dumps({**config, "format": "someone.else/2"}))
    elif case == "unknown-architecture":
        (path / "config.json").write_text(json.dumps({**config, "architecture": "os.system"}))
    elif case == "bad-kwargs":
        (path / "config.json").write_text(json.dumps({**config, "kwargs": {"dim": 2, "colour": "red"}}))
    elif case == "bad-shape-field":
        (path / "config.json").write_text(json.dumps({**config, "sample_shape": [0, "x"]}))
    else:
        (path / "config.json").write_text(json.dumps(config))
    if case == "corrupt-weights":
        (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    elif case == "garbage-weights":
        (path / "model.safetensors").write_bytes(b"\x80\x04pickle? no thanks" * 10)
    elif case == "wrong-size":
        (path / "config.json").write_text(json.dumps({**config, "kwargs": {**SMALL_MLP, "hidden": 16}}))
        (path / "model.safetensors").write_bytes(weights)
    elif case != "no-weights":
        (path / "model.safetensors").write_bytes(weights)
    return path


@pytest.mark.parametrize(
    "case, error, words",
    [
        ("missing", FileFormatError, "does not exist"),
        ("a-file", FileFormatError, "not a directory"),
        ("no-config", FileFormatError, "no config.json"),
        ("bad-json", FileFormatError, "not valid JSON"),
        ("foreign-format", FileFormatError, "not a bossflow model"),
        ("unknown-architecture", ModelSpecError, "architecture 'os.system'"),
        ("bad-kwargs", ModelSpecError, "cannot build VelocityMLP"),
        ("bad-shape-field", FileFormatError, "sample_shape"),
        ("no-weights", FileFormatError, "no model.safetensors"),
        ("corrupt-weights", FileFormatError, "not a valid safetensors"),
        ("garbage-weights", FileFormatError, "not a valid safetensors"),
        ("wrong-size", FileFormatError, "has shape"),
    ],
)
def test_bad_model_dirs_give_clear_errors(tmp_path, case, error, words):
    with pytest.raises(error, match=words) as info:
        load_model_dir(_bad_dir(tmp_path, case))
    assert isinstance(info.value, BossflowError)
    assert "\n" not in str(info.value)


def test_save_model_dir_checks_its_arguments(tmp_path):
    model = VelocityMLP(**SMALL_MLP)
    with pytest.raises(ModelSpecError, match="do not match"):
        save_model_dir(model, tmp_path, architecture="VelocityMLP", kwargs={**SMALL_MLP, "hidden": 8}, sample_shape=(2,))
    with pytest.raises(ModelSpecError, match="unknown architecture"):
        save_model_dir(model, tmp_path, architecture="Transformer", kwargs={}, sample_shape=(2,))
    with pytest.raises(ModelSpecError, match="weights_dtype"):
        save_model_dir(model, tmp_path, architecture="VelocityMLP", kwargs=SMALL_MLP, sample_shape=(2,), weights_dtype="int8")
    assert not (tmp_path / "config.json").exists()


# --- shipped teachers ---------------------------------------------------------------------


def test_shipped_digits_teacher_samples_look_like_images():
    path = shipped_model_dir("digits")
    assert resolve_model_dir("digits") == path
    assert (path / "model.safetensors").stat().st_size < 1_000_000
    model, config = load_model_dir(path)
    assert model.sample_shape == (1, 8, 8)
    assert config["data"]["name"] == "digits" and config["training"]["command"].startswith("bossflow teacher digits")
    noise = bf.gaussian_noise(64, model.sample_shape, seed=0)
    x = bf.euler(model, noise, bf.uniform_schedule(100))
    assert torch.isfinite(x).all()
    assert x.min() > -1.6 and x.max() < 1.6  # pixels live in [-1, 1]
    assert x.std(dim=0).mean() > 0.3  # samples differ from one another
    assert (x.flatten(1).std(dim=1) > 0.3).all()  # and none is a flat image
    # background pixels (corners) are dark in real digits
    assert x[:, 0, [0, 0, 7, 7], [0, 7, 0, 7]].mean() < -0.8


def test_shipped_gmm_teacher_is_close_to_the_exact_mixture():
    model, config = load_model_dir(shipped_model_dir("gmm-2d-teacher"))
    assert model.sample_shape == (2,) and config["data"]["name"] == "gmm-2d"
    noise = bf.gaussian_noise(500, (2,), seed=5)
    x = bf.euler(model, noise, bf.uniform_schedule(100))
    x_exact_flow = bf.euler(gmm_2d(), noise, bf.uniform_schedule(100))
    data = gmm_2d().sample(500, generator=torch.Generator().manual_seed(6), dtype=torch.float32)
    # W2 at 500 samples has a floor of ~0.7 even for exact samples: compare with the exact flow's own.
    assert wasserstein2(x, data) < 1.15 * wasserstein2(x_exact_flow, data)
    assert bf.endpoint_rmse(x, x_exact_flow) < 0.3  # same noise, nearly the same flow map


def test_unknown_shipped_name():
    with pytest.raises(ModelSpecError, match="shipped models: digits"):
        shipped_model_dir("imagenet")


# --- training -----------------------------------------------------------------------------


def test_training_lowers_the_loss_and_exports_a_model_dir(tmp_path):
    model = train_teacher(_gmm_points(), architecture="VelocityMLP", arch_kwargs=SMALL_MLP, steps=150,
                          batch_size=128, lr=1e-2, out_dir=tmp_path, checkpoint_every=50, progress=False,
                          data_info={"name": "gmm-2d"}, provenance={"command": "test"})
    config = json.loads((tmp_path / "config.json").read_text())
    curve = config["training"]["loss_curve"]
    assert curve[-1][0] == 150 and curve[-1][1] < 0.7 * curve[0][1]
    assert config["training"]["command"] == "test" and config["data"] == {"name": "gmm-2d"}
    loaded, _ = load_model_dir(tmp_path)
    assert torch.equal(_outputs(loaded, (2,)), _outputs(model, (2,)))
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_training_is_seeded_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    kwargs = dict(architecture="VelocityMLP", arch_kwargs=SMALL_MLP, steps=5, batch_size=16, progress=False)
    a = train_teacher(_gmm_points(200), seed=1, **kwargs)
    b = train_teacher(_gmm_points(200), seed=1, **kwargs)
    c = train_teacher(_gmm_points(200), seed=2, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(_outputs(a, (2,)), _outputs(b, (2,)))
    assert not torch.equal(_outputs(a, (2,)), _outputs(c, (2,)))


def test_tiny_gmm_training_improves_w2():
    data = _gmm_points(5000)
    kwargs = {"dim": 2, "hidden": 64, "depth": 2, "time_dim": 16}
    untrained = checkpoints.build_model("VelocityMLP", kwargs).eval()
    trained = train_teacher(data, architecture="VelocityMLP", arch_kwargs=kwargs, steps=300, batch_size=256,
                            lr=5e-3, seed=0, progress=False)
    noise = bf.gaussian_noise(400, (2,), seed=1)
    exact = gmm_2d().sample(400, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    w_untrained = wasserstein2(bf.euler(untrained, noise, bf.uniform_schedule(20)), exact)
    w_trained = wasserstein2(bf.euler(trained, noise, bf.uniform_schedule(20)), exact)
    assert w_trained < 0.5 * w_untrained


class _Killed(Exception):
    pass


@pytest.mark.parametrize(
    "architecture, kwargs, make_data",
    [("VelocityMLP", SMALL_MLP, _gmm_points), ("TinyUNet", SMALL_UNET, _images)],
)
def test_resume_after_a_kill_is_bit_identical(tmp_path, monkeypatch, architecture, kwargs, make_data):
    settings = dict(architecture=architecture, arch_kwargs=kwargs, steps=12, batch_size=16, lr=1e-2, seed=7,
                    checkpoint_every=4, ema_decay=0.9, progress=False)
    data = make_data()
    train_teacher(data, out_dir=tmp_path / "straight", **settings)

    real_step = teachers._train_step
    calls = {"n": 0}

    def dying_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 11:  # after the checkpoint at step 8, before step 11 completes
            raise _Killed
        return real_step(*args, **kw)

    monkeypatch.setattr(teachers, "_train_step", dying_step)
    with pytest.raises(_Killed):
        train_teacher(data, out_dir=tmp_path / "killed", **settings)
    monkeypatch.setattr(teachers, "_train_step", real_step)
    assert not (tmp_path / "killed" / "config.json").exists()
    with pytest.raises(BossflowError, match="--resume"):
        train_teacher(data, out_dir=tmp_path / "killed", **settings)
    train_teacher(data, out_dir=tmp_path / "killed", resume=True, **settings)

    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    b = (tmp_path / "killed" / "model.safetensors").read_bytes()
    assert a == b
    from safetensors.torch import load_file

    ca = load_file(tmp_path / "straight" / "checkpoint.safetensors")
    cb = load_file(tmp_path / "killed" / "checkpoint.safetensors")
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


def test_resume_refuses_other_settings_and_damaged_checkpoints(tmp_path):
    settings = dict(architecture="VelocityMLP", arch_kwargs=SMALL_MLP, steps=4, batch_size=8, checkpoint_every=2,
                    progress=False)
    data = _gmm_points(100)
    train_teacher(data, out_dir=tmp_path, **settings)
    with pytest.raises(BossflowError, match="other settings \\(lr\\)"):
        train_teacher(data, out_dir=tmp_path, resume=True, **{**settings, "lr": 0.5})
    with pytest.raises(BossflowError, match="past the requested"):
        train_teacher(data, out_dir=tmp_path, resume=True, **{**settings, "steps": 2})
    ckpt = tmp_path / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="damaged"):
        train_teacher(data, out_dir=tmp_path, resume=True, **settings)
    with pytest.raises(ModelSpecError, match="does not fit samples"):
        train_teacher(_images(4), architecture="VelocityMLP", arch_kwargs=SMALL_MLP, steps=1, progress=False)


# --- the command --------------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="bossflow")
    add_subcommand(parser.add_subparsers(dest="command", required=True), "teacher")
    return parser


def test_cmd_teacher_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(TEACHER_PRESETS, "gmm-2d", teachers.TeacherPreset(
        **{**TEACHER_PRESETS["gmm-2d"].__dict__, "arch_kwargs": SMALL_MLP}))
    out = tmp_path / "teacher"
    args = _parser().parse_args(["teacher", "gmm-2d", "--out", str(out), "--steps", "20", "--batch-size", "64",
                                 "--checkpoint-every", "10", "--seed", "3", "--quiet"])
    assert cmd_teacher(args) == 0
    printed = capsys.readouterr().out
    assert "final loss" in printed and "model.safetensors" in printed
    model, config = load_model_dir(out)
    assert model.sample_shape == (2,)
    assert config["training"]["command"] == (
        f"bossflow teacher gmm-2d --out {out} --steps 20 --seed 3 --batch-size 64 --checkpoint-every 10"
    )
    assert config["training"]["steps"] == 20 and config["data"]["name"] == "gmm-2d"
    with pytest.raises(BossflowError, match="--resume"):
        cmd_teacher(args)
    more = _parser().parse_args(["teacher", "gmm-2d", "--out", str(out), "--steps", "30", "--batch-size", "64",
                                 "--checkpoint-every", "10", "--seed", "3", "--quiet", "--resume"])
    assert cmd_teacher(more) == 0
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == 30


def test_cmd_teacher_digits_tiny(tmp_path, capsys):
    out = tmp_path / "digits"
    args = _parser().parse_args(["teacher", "digits", "--out", str(out), "--steps", "2", "--quiet"])
    assert cmd_teacher(args) == 0
    model, config = load_model_dir(out)
    assert model.sample_shape == (1, 8, 8) and config["weights_dtype"] == "float16"
    assert config["architecture"] == TEACHER_PRESETS["digits"].architecture


def test_teacher_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["teacher", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "bossflow teacher digits --out" in text and "--resume" in text


def test_teacher_parser_rejects_bad_options(capsys):
    for argv in (["teacher", "mnist", "--out", "x"], ["teacher", "digits"], ["teacher", "digits", "--out", "x", "--steps", "0"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)


def test_metadata_cannot_overwrite_the_network_fields(tmp_path):
    with pytest.raises(ModelSpecError, match="may not set format"):
        save_model_dir(VelocityMLP(**SMALL_MLP), tmp_path, architecture="VelocityMLP", kwargs=SMALL_MLP,
                       sample_shape=(2,), format="evil/1")


def test_shipped_fashion_mnist_teacher_loads_and_samples():
    model, config = load_model_dir(shipped_model_dir("fashion-mnist"))
    assert model.sample_shape == (1, 28, 28) and config["data"]["name"] == "fashion-mnist"
    assert config["training"]["steps"] == 20000
    noise = bf.gaussian_noise(4, (1, 28, 28), seed=0)
    with torch.no_grad():
        x = bf.euler(model, noise, bf.uniform_schedule(4))
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()
