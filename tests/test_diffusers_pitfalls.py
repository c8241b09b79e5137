"""Known ways a schedule goes wrong on its way into diffusers, each pinned by a regression test.

Every test starts from the sigmas ``bossflow export --format diffusers`` writes and checks what
the scheduler (or the saved pipeline) really steps through: t = 1 - sigma, t = 0 noise.
"""

import json
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import bossflow as bf  # noqa: E402
from bossflow.adapters.diffusers import schedule_to_sigmas  # noqa: E402
from bossflow.adapters.export import diffusers_call, export_schedule  # noqa: E402
from bossflow.cli import main  # noqa: E402
from bossflow.errors import ScheduleError  # noqa: E402
from tiny_pipelines import make_flux_pipeline, make_sd3_pipeline  # noqa: E402

TIMES = [0.0, 0.15, 0.5, 0.85, 1.0]


def _stepped_times(scheduler, sigmas, mu=None):
    """The times ``t = 1 - sigma`` a fresh copy of ``scheduler`` steps through for ``sigmas``."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(sigmas=sigmas, **({"mu": mu} if mu is not None else {}))
    return 1 - fresh.sigmas.double().numpy(), fresh


def _recorded(schedule_meta_scheduler):
    return bf.Schedule(TIMES, diffusers_scheduler=dict(schedule_meta_scheduler.config))


def test_shift_is_applied_once_not_twice():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD3's saved config
    naive, _ = _stepped_times(scheduler, [1 - t for t in TIMES[:-1]])
    assert np.abs(naive - TIMES).max() > 0.1  # 1 - t into a shifting scheduler: shifted once more
    ours, _ = _stepped_times(scheduler, export_schedule(_recorded(scheduler), "diffusers"))
    np.testing.assert_allclose(ours, TIMES, atol=1e-6)
    # a schedule searched on the shifting pipeline already includes the shift: the call line keeps
    # the scheduler as saved (no configure_scheduler, which would drop the shift the sigmas undo)
    line = diffusers_call(_recorded(scheduler), export_schedule(_recorded(scheduler), "diffusers"))
    assert "configure_scheduler" not in line and line.startswith("image = pipe(prompt, sigmas=[")
    assert "configure_scheduler" in diffusers_call(bf.Schedule(TIMES), export_schedule(bf.Schedule(TIMES), "diffusers"))


def test_custom_timesteps_under_shift_disagree_with_their_sigmas_so_we_export_sigmas():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    with_timesteps = type(scheduler).from_config(scheduler.config)
    with_timesteps.set_timesteps(timesteps=[1000 * (1 - t) for t in TIMES[:-1]])
    seen = with_timesteps.timesteps.double().numpy() / 1000  # what the transformer is told
    stepped = with_timesteps.sigmas[:-1].double().numpy()  # what the Euler step uses
    assert np.abs(seen - stepped).max() > 0.1  # the pitfall: the two disagree under shift
    _, ours = _stepped_times(scheduler, export_schedule(_recorded(scheduler), "diffusers"))
    np.testing.assert_allclose(ours.timesteps.double().numpy() / 1000, ours.sigmas[:-1].double().numpy(), atol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_one_step_schedule(shift):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    one = bf.Schedule([0.0, 1.0], diffusers_scheduler=dict(scheduler.config))
    sigmas = export_schedule(one, "diffusers")
    assert sigmas == pytest.approx([1.0])
    times, fresh = _stepped_times(scheduler, sigmas)
    np.testing.assert_allclose(times, [0.0, 1.0], atol=1e-6)
    assert len(fresh.timesteps) == 1
    assert export_schedule(one, "comfyui") == pytest.approx([1.0, 0.0])


def test_terminal_sigma_is_appended_once():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sigmas = export_schedule(_recorded(scheduler), "diffusers")
    assert len(sigmas) == len(TIMES) - 1 and min(sigmas) > 0  # no 0: the scheduler appends it
    assert np.all(np.diff(sigmas) < 0)
    _, fresh = _stepped_times(scheduler, sigmas)
    assert len(fresh.timesteps) == len(TIMES) - 1  # K transformer calls
    assert int((fresh.sigmas == 0).sum()) == 1 and float(fresh.sigmas[-1]) == 0.0
    _, doubled = _stepped_times(scheduler, [*sigmas, 0.0])  # what a trailing 0 would have cost
    assert len(doubled.timesteps) == len(TIMES)
    sigmas_k = export_schedule(bf.Schedule(TIMES), "k-diffusion")
    assert sigmas_k[-1] == 0.0 and sigmas_k.count(0.0) == 1


def test_dynamic_shifting_needs_the_recorded_mu(tmp_path, capsys):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    with_mu = bf.Schedule(TIMES, diffusers_scheduler=dict(scheduler.config), mu=0.8)
    times, _ = _stepped_times(scheduler, export_schedule(with_mu, "diffusers"), mu=0.8)
    np.testing.assert_allclose(times, TIMES, atol=1e-6)
    without = bf.Schedule(TIMES, diffusers_scheduler=dict(scheduler.config))
    with pytest.raises(ScheduleError, match="mu"):
        export_schedule(without, "diffusers")
    path = tmp_path / "no-mu.json"
    bf.save_schedules(path, [without])
    assert main(["export", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mu" in err and len(err.strip().splitlines()) == 1
    assert schedule_to_sigmas(with_mu, scheduler, mu=0.8) == export_schedule(with_mu, "diffusers")


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    return make_flux_pipeline(tmp_path_factory.mktemp("flux") / "pipe", guidance_embeds=True)


def test_flux_search_exports_sigmas_that_the_pipeline_steps_at_its_own_mu(flux, tmp_path, capsys):
    out = tmp_path / "flux.json"
    argv = ["schedule", "--model", f"diffusers:{flux}", "--prompt", "a cat", "--prompt", "a dog", "--nfe", "3",
            "--samples", "4", "--grid-steps", "12", "--height", "32", "--width", "32", "--holdout-samples", "2",
            "--quiet", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "the search makes 48 transformer calls" in text  # guidance-distilled: one call per velocity
    meta = bf.load_schedules(out)[3].meta
    assert meta["pipeline"] == "FluxPipeline" and meta["guidance_embeds"] and not meta["cfg"]
    assert meta["diffusers_scheduler"]["use_dynamic_shifting"] and meta["mu"] is not None

    assert main(["export", str(out), "--nfe", "3"]) == 0
    captured = capsys.readouterr()
    sigmas = json.loads(captured.out)
    assert "height=32, width=32, guidance_scale=3.5" in captured.err
    pipe = diffusers.DiffusionPipeline.from_pretrained(flux)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    forward = pipe.transformer.forward
    pipe.transformer.forward = lambda *a, **k: (seen.append(float(k["timestep"][0])), forward(*a, **k))[1]
    pipe("a cat", sigmas=sigmas, guidance_scale=3.5, height=32, width=32, output_type="latent",
         max_sequence_length=32)
    assert len(seen) == 3  # Flux passes sigma itself as the timestep, after its own dynamic shift
    np.testing.assert_allclose(1 - np.array(seen), bf.load_schedules(out)[3].times[:-1], atol=1e-5)


def test_a_pipeline_with_a_non_flow_scheduler_is_refused(tmp_path, capsys):
    folder = make_sd3_pipeline(tmp_path / "sd3")
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
    pipe.scheduler = diffusers.EulerDiscreteScheduler()
    pipe.save_pretrained(tmp_path / "sd3-euler")
    argv = ["schedule", "--model", f"diffusers:{tmp_path / 'sd3-euler'}", "--prompt", "a cat", "--nfe", "2",
            "--samples", "2", "--grid-steps", "4", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "EulerDiscreteScheduler, not a flow-matching scheduler" in err
