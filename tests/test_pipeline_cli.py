"""bossflow schedule --model diffusers:DIR on a tiny random SD3 pipeline, and its sigmas back in the pipeline."""

import json
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import bossflow as bf  # noqa: E402
from bossflow.cli import main  # noqa: E402
from tiny_pipelines import make_sd3_pipeline  # noqa: E402

SIZE = ["--height", "32", "--width", "32"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return make_sd3_pipeline(tmp_path_factory.mktemp("sd3") / "pipe", shift=3.0)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a photo of a cat\n\na red car on a street\na bowl of fruit\n", encoding="utf-8")
    return path


def test_search_with_cfg_then_exported_sigmas_drive_the_saved_pipeline(sd3, prompts, tmp_path, capsys):
    import diffusers

    out = tmp_path / "sd3.json"
    args = ["schedule", "--model", f"diffusers:{sd3}", "--prompts", str(prompts), "--guidance-scale", "4",
            "--nfe", "2,4", "--samples", "8", "--grid-steps", "20", "--holdout-samples", "4", "--quiet", "--out", str(out)]
    assert main([*args, *SIZE]) == 0
    text = capsys.readouterr().out
    assert "the search makes 320 transformer calls" in text  # 8 noises x 20 steps x 2 (CFG)
    assert "the search made 320 transformer calls" in text and "pipeline default" in text
    meta = bf.load_schedules(out)[4].meta
    assert meta["pipeline"] == "StableDiffusion3Pipeline" and meta["cfg"] and meta["transformer_calls"] == 320
    assert meta["diffusers_scheduler"]["shift"] == 3.0 and meta["prompts"] == 3

    assert main(["export", str(out), "--nfe", "4"]) == 0
    sigmas = json.loads(capsys.readouterr().out)
    pipe = diffusers.DiffusionPipeline.from_pretrained(sd3)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    forward = pipe.transformer.forward
    pipe.transformer.forward = lambda *a, **k: (seen.append(float(k["timestep"][0])), forward(*a, **k))[1]
    pipe("a photo of a cat", sigmas=sigmas, guidance_scale=4.0, height=32, width=32, output_type="latent")
    times = bf.load_schedules(out)[4].times
    assert len(seen) == 4  # K transformer calls (CFG batched), the saved shift kept and undone in advance
    np.testing.assert_allclose(1 - np.array(seen) / 1000, times[:-1], atol=1e-5)


@pytest.mark.parametrize("extra, words", [
    (["--model", "diffusers:/nonexistent/pipe", "--prompt", "a cat"], "no pipeline folder"),
    (["--prompts", "EMPTY"], "holds no prompt"),
    (["--prompt", "a cat", "--height", "30"], "--height 30 must be a positive multiple of 4"),
    (["--prompt", "a cat", "--model", "gmm-2d"], None),
])
def test_bad_pipeline_input_is_one_line_and_exit_2(sd3, tmp_path, capsys, extra, words):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    argv = ["schedule", "--model", f"diffusers:{sd3}", "--nfe", "2", "--samples", "4", "--grid-steps", "4", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bossflow: error:")
    assert words is None or words in err
    if words is None:
        assert "--prompt apply to --model diffusers:DIR" in err


def test_holdout_prompts_are_encoded_with_the_search_prompts_in_one_load(sd3, prompts, tmp_path, capsys, monkeypatch):
    import bossflow.adapters.pipelines as pipelines

    loads, encoded = [], []
    load, encode = pipelines.load_pipeline, pipelines.encode_prompts
    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: (loads.append(a[0]), load(*a, **k))[1])
    monkeypatch.setattr(pipelines, "encode_prompts", lambda pipe, p, **k: (encoded.append(list(p)), encode(pipe, p, **k))[1])
    held_out = tmp_path / "held-out.txt"
    held_out.write_text("a lighthouse at dusk\na bowl of soup\n", encoding="utf-8")
    argv = ["schedule", "--model", f"diffusers:{sd3}", "--prompts", str(prompts), "--holdout-prompts", str(held_out),
            "--nfe", "2", "--samples", "4", "--grid-steps", "8", "--holdout-samples", "4", "--quiet", *SIZE]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert len(loads) == 1
    assert encoded[0] == ["a photo of a cat", "a red car on a street", "a bowl of fruit", "a lighthouse at dusk",
                          "a bowl of soup"]
    assert f"held-out prompts ({held_out})" in text
    assert "then the held-out table makes 832 more" in text  # 4 noises x (100 + 2 x 2 steps) x 2 (CFG)
    row = next(line for line in text.splitlines() if line.split()[:1] == ["2"] and len(line.split()) == 4)
    assert float(row.split()[1]) > 0 and float(row.split()[2]) > 0
