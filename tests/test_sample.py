"""`bossflow sample` and :func:`bossflow.sample.sample`: real models, files that decode, errors on one line."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.cli import main
from bossflow.errors import BossflowError
from bossflow.loading import load_model
from bossflow.sample import sample
from bossflow.search import sample_with

TESTS = Path(__file__).parent


def run(capsys, *argv):
    code = main(["sample", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def counted_nfe(out: str) -> float:
    """The per-sample NFE in the one line ``bossflow sample`` prints."""
    assert len(out.splitlines()) == 1, out
    return float(re.search(r"([\d.]+) model evaluations per sample", out).group(1))


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_digits_image_grid(capsys, tmp_path):
    out = tmp_path / "grid.png"
    code, stdout, err = run(capsys, "--model", "digits", "--nfe", "4", "--n", "16", "--out", str(out), "--quiet")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: 16 samples (1, 8, 8) of digits, uniform NFE 4")
    assert counted_nfe(stdout) == 4
    image = read_png(out)
    assert image.ndim == 3 and min(image.shape[:2]) > 100  # small mosaics are enlarged
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left


def test_npy_equals_sample_with_on_seeded_noise(capsys, tmp_path):
    out = tmp_path / "points.npy"
    code, stdout, err = run(capsys, "--model", "gmm-2d", "--schedule", "edm", "--nfe", "5", "--n", "300", "--seed", "7",
                            "--batch-size", "128", "--out", str(out), "--quiet")
    assert code == 0, err
    assert counted_nfe(stdout) == 5
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (300, 2)
    noise = bf.gaussian_noise(300, (2,), seed=7, dtype=torch.float64)
    want = sample_with(bf.models.gmm_2d(), noise, bf.edm_schedule(5)).to(torch.float32).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_schedule_file_with_eval_times_to_npz(capsys, tmp_path):
    sched = bf.custom_schedule([0.0, 0.3, 0.7, 1.0], eval_times=[0.0, 0.4, 0.75])
    path = tmp_path / "one.json"
    bf.save_schedules(path, [sched])  # one budget: no --nfe needed
    out = tmp_path / "run.npz"
    code, stdout, err = run(capsys, "--model", "gmm-2d", "--schedule", str(path), "--n", "50", "--seed", "3",
                            "--out", str(out), "--quiet")
    assert code == 0, err
    assert counted_nfe(stdout) == 3 and f"{path} NFE 3 (custom)" in stdout
    with np.load(out) as z:
        assert sorted(z.files) == ["eval_times", "noise", "samples", "seed", "times"]
        np.testing.assert_array_equal(z["times"], sched.times)
        np.testing.assert_array_equal(z["eval_times"], sched.eval_times)
        assert int(z["seed"]) == 3 and z["noise"].dtype == np.float32 and z["samples"].dtype == np.float32
        np.testing.assert_array_equal(z["noise"], bf.gaussian_noise(50, (2,), seed=3).numpy())
        want = sample_with(bf.models.gmm_2d(), torch.from_numpy(z["noise"]).double(), sched)
        np.testing.assert_allclose(z["samples"], want.float().numpy(), rtol=0, atol=1e-6)


def test_file_nfe_picks_one_budget_and_scatter_png(capsys, tmp_path):
    path = tmp_path / "several.json"
    bf.save_schedules(path, [bf.uniform_schedule(2), bf.shifted_schedule(6)])
    out = tmp_path / "points.png"
    code, stdout, err = run(capsys, "--model", "gmm-2d", "--schedule", str(path), "--nfe", "6", "--n", "200",
                            "--out", str(out), "--quiet")
    assert code == 0, err
    assert counted_nfe(stdout) == 6 and "(shift)" in stdout
    assert read_png(out).ndim == 3


def test_shape_option_and_rgb_grid(capsys, tmp_path):
    out = tmp_path / "rgb.png"
    model = f"{TESTS / 'user_models.py'}:velocity"  # a plain function without sample_shape
    code, stdout, err = run(capsys, "--model", model, "--shape", "3,4,4", "--nfe", "2", "--n", "5", "--per-row", "2",
                            "--out", str(out))
    assert code == 0, err
    assert "5 samples (3, 4, 4)" in stdout and counted_nfe(stdout) == 2
    assert "sample" in err  # the progress bar, without --quiet
    assert read_png(out).ndim == 3


def test_library_sample_is_batch_independent_and_slices_cond():
    teacher = load_model("digits").model
    sched = bf.uniform_schedule(3)
    whole = sample(teacher, sched, 10, seed=2)
    assert whole.shape == (10, 1, 8, 8) and whole.dtype == torch.float32
    torch.testing.assert_close(sample(teacher, sched, 10, seed=2, batch_size=3), whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(sample(teacher, sched, 4, seed=2), whole[:4], rtol=0, atol=1e-5)

    def scaled(x, t, *, scale, offset):
        return scale[:, None] * x + offset

    scale, offset = torch.arange(7, dtype=torch.float64), 0.5
    got = sample(scaled, sched, 7, seed=1, batch_size=2, shape=(2,), cond={"scale": scale, "offset": offset})
    want = sample_with(scaled, bf.gaussian_noise(7, (2,), seed=1, dtype=torch.float64), sched,
                       cond={"scale": scale, "offset": offset})
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    as_float32 = sample(scaled, sched, 2, shape=(2,), dtype=torch.float32, cond={"scale": scale[:2].float(), "offset": 0.0})
    assert as_float32.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": None}, "sample_shape"),
        ({"n": 0}, "number of samples"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_library_sample_rejects_bad_input(kwargs, message):
    args = {"n": 2, "shape": (2,), **kwargs}
    with pytest.raises(BossflowError, match=message):
        sample(lambda x, t: -x, bf.uniform_schedule(2), args.pop("n"), **args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "gmm-2d", "--nfe", "2", "--out", "x.txt"], "must end with .png"),
        (["--model", "gmm-2d"], "give --nfe K"),
        (["--model", "gmm-2d", "--schedule", "edm"], "needs a step budget"),
        (["--model", "gmm-2d", "--schedule", "missing.json", "--nfe", "2"], "does not exist"),
        (["--model", "gmm-2d", "--schedule", "{several}"], "NFE [2, 4]; pick one with --nfe"),
        (["--model", "gmm-2d", "--schedule", "{several}", "--nfe", "3"], "has no schedule with NFE"),
        (["--model", "gmm-64d", "--nfe", "2", "--out", "x.png"], "--out x.npy"),
        (["--model", f"{TESTS / 'user_models.py'}:velocity", "--nfe", "2"], "pass --shape"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    several = tmp_path / "several.json"
    bf.save_schedules(several, [bf.uniform_schedule(2), bf.uniform_schedule(4)])
    argv = [a.replace("{several}", str(several)) for a in argv]
    code, stdout, err = run(capsys, *argv, "--quiet")
    assert code == 2
    assert stdout == "" and err.startswith("bossflow: error: ") and len(err.splitlines()) == 1
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["several.json"]  # nothing written


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "bossflow sample --model digits --nfe 4 --out grid.png" in text
