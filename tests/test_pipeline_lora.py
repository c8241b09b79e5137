"""bossflow straighten --model diffusers:DIR on a tiny random SD3 pipeline: the LoRA file, its use, resumption, --lora."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import bossflow as bf  # noqa: E402
from bossflow.adapters.diffusers import DiffusersVelocity  # noqa: E402
from bossflow.search.sampling import sample_with  # noqa: E402
from bossflow.cli import main  # noqa: E402
from tiny_pipelines import make_sd3_pipeline  # noqa: E402

PROMPTS = "a photo of a cat\na red car on a street\na bowl of fruit\na dog in the sea\n"
HOLDOUT = "a horse in a field\na small house at night\n"
SIZE = ["--height", "32", "--width", "32"]
TRAIN = ["--samples", "32", "--grid-steps", "20", "--steps", "150", "--batch-size", "16", "--lr", "3e-3",
         "--lora-rank", "8", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The saved pipeline, its prompt files and a 2-step schedule file (times only)."""
    root = tmp_path_factory.mktemp("lora")
    pipe = make_sd3_pipeline(root / "sd3", shift=3.0)
    (root / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    (root / "holdout.txt").write_text(HOLDOUT, encoding="utf-8")
    bf.save_schedules(root / "s.json", [bf.Schedule([0.0, 0.5, 1.0], method="hand")])
    return root, pipe


def _argv(root, pipe, out, *extra):
    return ["straighten", "--model", f"diffusers:{pipe}", "--prompts", str(root / "prompts.txt"), "--guidance-scale", "4",
            "--schedule", str(root / "s.json"), *SIZE, *TRAIN, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    """One CLI run with held-out prompts; the student bossflow trained, captured from inside the command."""
    import bossflow.training.pipeline_lora as pipeline_lora

    root, pipe = setup
    out = tmp_path_factory.mktemp("run") / "sd3-boss-lora"
    captured = {}
    original = pipeline_lora.straighten_pipeline

    def spy(*args, **kwargs):
        captured["student"], record = original(*args, **kwargs)
        return captured["student"], record

    pipeline_lora.straighten_pipeline = spy
    try:
        code = main(_argv(root, pipe, out, "--holdout-prompts", str(root / "holdout.txt"), "--holdout-samples", "8"))
    finally:
        pipeline_lora.straighten_pipeline = original
    assert code == 0
    return out, captured["student"]


def _load(pipe, lora=None):
    import diffusers

    loaded = diffusers.DiffusionPipeline.from_pretrained(pipe)
    loaded.set_progress_bar_config(disable=True)
    if lora is not None:
        loaded.load_lora_weights(lora)
    return loaded


def _tensors(path):
    import safetensors.torch

    return safetensors.torch.load_file(str(path))


def test_lora_file_loads_and_the_transformer_equals_bossflows_student(setup, trained):
    root, pipe = setup
    out, student = trained
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "bossflow_lora.json", "checkpoint.safetensors", "pairs", "pytorch_lora_weights.safetensors", "schedules.json"]
    loaded = _load(pipe, out)
    torch.manual_seed(0)
    x, t = torch.randn(3, 16, 16, 16), torch.tensor([0.1, 0.5, 0.9])
    cond = {"encoder_hidden_states": torch.randn(3, 333, 32) * 0.1, "pooled_projections": torch.randn(3, 64)}
    with torch.no_grad():
        ours = student(x, t, **cond)  # both guidance branches, as the pipeline runs them
        theirs = DiffusersVelocity(loaded.transformer, {}, negative_cond=dict(student.negative_cond.as_dict()),
                                   guidance_scale=4.0, per_sample=tuple(cond))(x, t, **cond)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_the_pipeline_with_the_lora_and_exported_sigmas_is_bossflows_two_step_sampler(setup, trained):
    from bossflow.adapters.pipelines import encode_prompts

    root, pipe = setup
    out, student = trained
    record = json.loads((out / "bossflow_lora.json").read_text())
    sigmas = record["sigmas"]["2"]
    loaded = _load(pipe, out)
    noise = bf.gaussian_noise(2, (16, 16, 16), seed=7)
    latents = loaded(["a photo of a cat", "a bowl of fruit"], sigmas=sigmas, guidance_scale=4.0, height=32, width=32,
                     latents=noise.clone(), output_type="latent").images
    cond = encode_prompts(loaded, ["a photo of a cat", "a bowl of fruit"])
    schedule = bf.load_schedules(out / "schedules.json")[2]
    with torch.no_grad():
        ours = sample_with(student, noise, schedule, cond=cond)
    torch.testing.assert_close(latents, ours, atol=1e-4, rtol=0)


def test_held_out_two_step_error_is_lower_with_the_lora(trained):
    out, _ = trained
    rows = json.loads((out / "bossflow_lora.json").read_text())["holdout"]
    (row,) = rows
    assert row["nfe"] == 2 and row["lora_rmse"] < 0.9 * row["base_rmse"], row
    meta = bf.load_schedules(out / "schedules.json")[2].meta
    assert meta["pipeline"] == "StableDiffusion3Pipeline" and meta["guidance_scale"] == 4.0 and meta["lora_folder"] == str(out)


def _kill_when(argv, path: Path, timeout: float = 120.0) -> None:
    """Run ``bossflow argv`` in a new process and SIGKILL it as soon as ``path`` exists (or it ends)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bossflow.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # 75 s: three pipeline runs, two of them killed
def test_killed_in_pairs_and_in_training_a_resumed_run_reaches_the_same_weights(setup, tmp_path):
    root, pipe = setup
    short = ["--samples", "64", "--steps", "60", "--checkpoint-every", "20", "--holdout-samples", "0"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*_argv(root, pipe, whole), *short]) == 0
    _kill_when([*_argv(root, pipe, killed), *short], killed / "pairs" / "shard-00000.safetensors")
    assert not (killed / "pytorch_lora_weights.safetensors").exists()
    _kill_when([*_argv(root, pipe, killed), *short, "--resume"], killed / "checkpoint.safetensors")
    assert not (killed / "pytorch_lora_weights.safetensors").exists()
    assert main([*_argv(root, pipe, killed), *short, "--resume"]) == 0
    a, b = _tensors(whole / "pytorch_lora_weights.safetensors"), _tensors(killed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distilled_guidance_merged_transformer_runs_with_guidance_1(setup, tmp_path, capsys):
    import diffusers

    root, pipe = setup
    out = tmp_path / "distilled"
    assert main([*_argv(root, pipe, out), "--distill-guidance", "--merge", "--steps", "20", "--holdout-samples", "0"]) == 0
    text = capsys.readouterr().out
    assert "guidance_scale=1" in text and "training: 320 transformer forward and backward passes" in text
    assert json.loads((out / "bossflow_lora.json").read_text())["guidance_scale"] == 1.0
    merged = diffusers.SD3Transformer2DModel.from_pretrained(out / "transformer")
    loaded = _load(pipe, out)
    x, t = torch.randn(2, 16, 16, 16), torch.tensor([300.0, 700.0])
    cond = {"encoder_hidden_states": torch.randn(2, 20, 32), "pooled_projections": torch.randn(2, 64)}
    with torch.no_grad():
        a = merged(hidden_states=x, timestep=t, return_dict=False, **cond)[0]
        b = loaded.transformer(hidden_states=x, timestep=t, return_dict=False, **cond)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_schedule_with_lora_searches_the_fused_velocity_and_records_it(setup, trained, tmp_path, capsys):
    root, pipe = setup
    out, _ = trained
    common = ["schedule", "--model", f"diffusers:{pipe}", "--prompts", str(root / "prompts.txt"), "--guidance-scale", "4",
              "--method", "bellman", "--nfe", "2", "--samples", "4", "--grid-steps", "10", "--holdout-samples", "0",
              "--quiet", *SIZE]
    assert main([*common, "--out", str(tmp_path / "base.json")]) == 0
    assert main([*common, "--lora", str(out), "--out", str(tmp_path / "lora.json")]) == 0
    base, lora = bf.load_schedules(tmp_path / "base.json")[2], bf.load_schedules(tmp_path / "lora.json")[2]
    assert "lora" not in base.meta and lora.meta["lora"]["path"] == str(out) and len(lora.meta["lora"]["sha256"]) == 64
    assert lora.meta["cost"] != base.meta["cost"]
    assert main([*common, "--lora", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no LoRA file or folder" in err


@pytest.mark.parametrize("extra, words", [
    (["--objective", "reflow"], "--objective reflow is not for pipelines"),
    (["--guidance-scale", "1", "--distill-guidance"], "--distill-guidance needs classifier-free guidance"),
    (["--lora-targets", "nope"], "--lora-targets nope match no linear layer"),
    (["--schedule", "EVAL"], "has evaluation times"),
    (["--height", "30"], "--height 30 must be a positive multiple of 4"),
])
def test_bad_pipeline_straightening_is_one_line_and_exit_2(setup, tmp_path, capsys, extra, words):
    root, pipe = setup
    evals = tmp_path / "evals.json"
    bf.save_schedules(evals, [bf.Schedule([0.0, 0.5, 1.0], [0.1, 0.6])])
    extra = [str(evals) if e == "EVAL" else e for e in extra]
    assert main([*_argv(root, pipe, tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bossflow: error:") and words in err, err


def test_pipeline_options_are_refused_for_model_directories(tmp_path, capsys):
    argv = ["straighten", "--model", "digits", "--schedule", "uniform", "--nfe", "2", "--out", str(tmp_path / "o")]
    assert main([*argv, "--distill-guidance"]) == 2
    assert "--distill-guidance apply to --model diffusers:DIR" in capsys.readouterr().err
    np.testing.assert_equal(bool((tmp_path / "o").exists() and any((tmp_path / "o").iterdir())), False)


def test_flux_lora_loads_into_the_flux_pipeline_and_equals_the_student(setup, tmp_path):
    import bossflow.training.pipeline_lora as pipeline_lora
    from tiny_pipelines import make_flux_pipeline

    root, _ = setup
    flux = make_flux_pipeline(tmp_path / "flux")  # guidance-distilled: one branch, the guidance embedded
    captured = {}
    original = pipeline_lora.straighten_pipeline

    def spy(*args, **kwargs):
        captured["student"], record = original(*args, **kwargs)
        return captured["student"], record

    out = tmp_path / "flux-lora"
    pipeline_lora.straighten_pipeline = spy
    try:
        argv = ["straighten", "--model", f"diffusers:{flux}", "--prompts", str(root / "prompts.txt"), "--schedule",
                str(root / "s.json"), *SIZE, "--samples", "8", "--grid-steps", "6", "--steps", "5", "--batch-size", "4",
                "--lora-rank", "4", "--holdout-samples", "0", "--threads", "1", "--quiet", "--out", str(out)]
        assert main(argv) == 0
    finally:
        pipeline_lora.straighten_pipeline = original
    student = captured["student"]
    loaded = _load(flux, out)
    x, t = torch.randn(2, 64, 64), torch.tensor([0.3, 0.8])
    cond = {"encoder_hidden_states": torch.randn(2, 512, 32), "pooled_projections": torch.randn(2, 32)}
    theirs = DiffusersVelocity(loaded.transformer, {k: v for k, v in student.cond.as_dict().items()}, per_sample=tuple(cond))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, t, **cond), student(x, t, **cond), atol=1e-5, rtol=0)
    assert json.loads((out / "bossflow_lora.json").read_text())["pipeline"] == "FluxPipeline"
