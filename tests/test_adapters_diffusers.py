"""diffusers: our sigmas reach FlowMatchEulerDiscreteScheduler exactly, and a wrapped transformer samples identically."""

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.adapters import diffusers as dif_adapter
from bossflow.errors import ModelSpecError, ScheduleError

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

TEST_SEED = 1234
SHAPE = (4, 8, 8)  # latent channels, height, width


@pytest.fixture(scope="module")
def tiny():
    """A tiny randomly initialised SD3 transformer (built from its config, no hub) and fixed embeddings."""
    torch.set_num_threads(1)
    torch.manual_seed(TEST_SEED)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8,
        pos_embed_max_size=8,
    ).eval()
    gen = torch.Generator().manual_seed(TEST_SEED)
    cond = {"encoder_hidden_states": torch.randn(1, 5, 16, generator=gen), "pooled_projections": torch.randn(1, 8, generator=gen)}
    negative = {"encoder_hidden_states": torch.randn(1, 5, 16, generator=gen), "pooled_projections": torch.randn(1, 8, generator=gen)}
    return transformer, cond, negative


class TimestepRecorder:
    """Records the timesteps the transformer is called with (a forward pre-hook)."""

    def __init__(self, transformer):
        self.timesteps = []
        self.handle = transformer.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.timesteps.append(kwargs["timestep"].detach().clone())

    def close(self):
        self.handle.remove()


@pytest.fixture(scope="module")
def bellman_schedule(tiny):
    """A 4-step Bellman schedule of the wrapped transformer (its cost matrix runs through the adapter)."""
    transformer, cond, _ = tiny
    velocity = dif_adapter.wrap(transformer, sample_shape=SHAPE, **cond)
    noise = bf.gaussian_noise(8, SHAPE, seed=TEST_SEED)
    grid = bf.uniform_schedule(20).times
    indices, total = bf.bellman_path(bf.cost_matrix(velocity, noise, grid), 4)
    return bf.Schedule(grid[indices], method="bellman", cost=float(total))


def scheduler_loop(transformer, scheduler, sigmas, latents, cond, mu=None):
    """The denoising loop of diffusers' flow pipelines (SD3), without guidance."""
    scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    batch = latents.shape[0]
    kwargs = {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}
    with torch.no_grad():
        for t in scheduler.timesteps:
            noise_pred = transformer(hidden_states=latents, timestep=t.expand(batch), return_dict=False, **kwargs)[0]
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    return latents


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_scheduler_loop_calls_the_transformer_k_times_at_our_timesteps(tiny, bellman_schedule, shift):
    transformer, cond, _ = tiny
    schedule = bellman_schedule
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)  # SD3 ships shift=3.0: pre-inverted below
    sigmas = dif_adapter.schedule_to_sigmas(schedule, scheduler)
    latents = bf.gaussian_noise(2, SHAPE, seed=TEST_SEED + 1)
    recorder = TimestepRecorder(transformer)
    try:
        theirs = scheduler_loop(transformer, scheduler, sigmas, latents, cond)
    finally:
        recorder.close()
    np.testing.assert_allclose(dif_adapter.scheduler_times(scheduler), schedule.times, atol=1e-6)
    assert len(recorder.timesteps) == schedule.nfe
    expected = 1000.0 * (1.0 - schedule.times[:-1])
    np.testing.assert_allclose([float(ts[0]) for ts in recorder.timesteps], expected, atol=2e-3)
    ours = bf.euler(dif_adapter.wrap(transformer, **cond), latents, schedule)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("time_shift_type", ["exponential", "linear"])
def test_dynamic_shifting_is_inverted_given_mu(time_shift_type):
    schedule = bf.Schedule([0.0, 0.1, 0.35, 0.8, 1.0])
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type=time_shift_type)
    mu = 0.9
    scheduler.set_timesteps(sigmas=dif_adapter.schedule_to_sigmas(schedule, scheduler, mu=mu), mu=mu)
    np.testing.assert_allclose(dif_adapter.scheduler_times(scheduler), schedule.times, atol=1e-6)
    with pytest.raises(ScheduleError, match="mu"):
        dif_adapter.schedule_to_sigmas(schedule, scheduler)


def test_configured_scheduler_uses_the_plain_sigmas():
    schedule = bf.Schedule([0.0, 0.2, 0.9, 1.0])
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, use_karras_sigmas=True, num_train_timesteps=1000)
    neutral = dif_adapter.configure_scheduler(shifted)
    assert neutral is not shifted and neutral.config.shift == 1.0 and not neutral.config.use_dynamic_shifting
    sigmas = dif_adapter.schedule_to_sigmas(schedule)
    assert sigmas == pytest.approx([1.0, 0.8, 0.1])
    neutral.set_timesteps(sigmas=sigmas)
    np.testing.assert_allclose(dif_adapter.scheduler_times(neutral), schedule.times, atol=1e-7)
    assert len(neutral.timesteps) == 3  # K steps; the terminal sigma 0 is appended by the scheduler
    assert dif_adapter.schedule_to_sigmas(schedule, neutral) == pytest.approx(sigmas)


@pytest.mark.parametrize(
    "options", [{"use_karras_sigmas": True}, {"shift_terminal": 0.1}, {"stochastic_sampling": True}, {"invert_sigmas": True}]
)
def test_schedulers_that_replace_our_sigmas_are_refused(options):
    with pytest.raises(ScheduleError, match="configure_scheduler"):
        dif_adapter.schedule_to_sigmas(bf.uniform_schedule(4), FlowMatchEulerDiscreteScheduler(**options))


def test_other_schedulers_and_eval_times_are_refused():
    with pytest.raises(ScheduleError, match="FlowMatchEulerDiscreteScheduler"):
        dif_adapter.configure_scheduler(diffusers.FlowMatchHeunDiscreteScheduler())
    with pytest.raises(ScheduleError, match="eval_times"):
        dif_adapter.schedule_to_sigmas(bf.Schedule([0.0, 0.5, 1.0], eval_times=[0.0, 0.7]))


def test_sd3_pipeline_with_guidance_matches_wrapped_model_and_euler(tiny, bellman_schedule):
    """The real StableDiffusion3Pipeline (no VAE or text encoders: embeddings passed in) with our sigmas."""
    transformer, cond, negative = tiny
    pipeline_module = pytest.importorskip("diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3")
    schedule = bellman_schedule
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = pipeline_module.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    latents = bf.gaussian_noise(2, SHAPE, seed=TEST_SEED + 2)
    recorder = TimestepRecorder(transformer)
    try:
        theirs = pipe(
            prompt_embeds=cond["encoder_hidden_states"].expand(2, -1, -1),
            pooled_prompt_embeds=cond["pooled_projections"].expand(2, -1),
            negative_prompt_embeds=negative["encoder_hidden_states"].expand(2, -1, -1),
            negative_pooled_prompt_embeds=negative["pooled_projections"].expand(2, -1),
            guidance_scale=4.0, sigmas=dif_adapter.schedule_to_sigmas(schedule, pipe.scheduler),
            latents=latents, output_type="latent", height=64, width=64,
        ).images
    finally:
        recorder.close()
    assert len(recorder.timesteps) == schedule.nfe  # one (batched) call per step
    np.testing.assert_allclose([float(ts[0]) for ts in recorder.timesteps], 1000.0 * (1.0 - schedule.times[:-1]), atol=2e-3)
    velocity = dif_adapter.wrap(transformer, negative_cond=negative, guidance_scale=4.0, **cond)
    torch.testing.assert_close(bf.euler(velocity, latents, schedule), theirs, rtol=1e-4, atol=1e-4)


def test_wrapped_velocity_is_minus_the_prediction_at_sigma(tiny):
    transformer, cond, _ = tiny
    velocity = dif_adapter.wrap(transformer, sample_shape=SHAPE, **cond)
    assert velocity.timestep_scale == 1000.0 and velocity.sample_shape == SHAPE
    x = bf.gaussian_noise(3, SHAPE, seed=TEST_SEED)
    t = torch.tensor([0.0, 0.3, 0.9])
    with torch.no_grad():
        native = transformer(hidden_states=x, timestep=1000.0 * (1 - t), return_dict=False,
                             **{k: v.expand(3, *v.shape[1:]) for k, v in cond.items()})[0]
        torch.testing.assert_close(velocity(x, t), -native)
    # the conditioning is part of the state (moved by .to, seen by the cost-matrix fingerprint)
    assert "cond.encoder_hidden_states" in velocity.state_dict()
    other = dif_adapter.wrap(transformer, **{k: v + 1 for k, v in cond.items()})
    from bossflow.cost import model_fingerprint
    assert model_fingerprint(other) != model_fingerprint(velocity)


def test_flux_transformer_takes_sigma_as_timestep():
    torch.manual_seed(TEST_SEED)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=False, axes_dims_rope=(4, 6, 6),
    ).eval()
    seq, length = 16, 5
    img_ids = torch.stack([torch.zeros(seq), torch.arange(seq) // 4, torch.arange(seq) % 4], dim=1).float()
    cond = {"encoder_hidden_states": torch.randn(1, length, 16), "pooled_projections": torch.randn(1, 8),
            "txt_ids": torch.zeros(length, 3), "img_ids": img_ids}  # ids have no batch dimension: passed unchanged
    velocity = dif_adapter.wrap(transformer, **cond)
    assert velocity.timestep_scale == 1.0
    recorder = TimestepRecorder(transformer)
    try:
        with torch.no_grad():
            v = velocity(torch.randn(3, seq, 8), torch.full((3,), 0.25))
    finally:
        recorder.close()
    assert v.shape == (3, seq, 8) and torch.isfinite(v).all()
    torch.testing.assert_close(recorder.timesteps[0], torch.full((3,), 0.75))


def test_bad_guidance_options_are_refused(tiny):
    transformer, cond, negative = tiny
    with pytest.raises(ModelSpecError, match="negative_cond"):
        dif_adapter.wrap(transformer, guidance_scale=3.0, **cond)
    with pytest.raises(ModelSpecError, match="keys"):
        dif_adapter.wrap(transformer, negative_cond={"encoder_hidden_states": negative["encoder_hidden_states"]}, **cond)
    with pytest.raises(ModelSpecError):
        dif_adapter.wrap(transformer, timestep_scale=-1.0, **cond)


@pytest.mark.parametrize("lora", [False, True])
def test_straighten_runs_on_the_wrapped_transformer(tiny, lora):
    from bossflow.pairs import teacher_pairs
    from bossflow.straighten import LoraSettings, straighten

    transformer, cond, _ = tiny
    teacher = dif_adapter.wrap(transformer, sample_shape=SHAPE, **cond)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pairs = teacher_pairs(teacher, [bf.uniform_schedule(2)], SHAPE, samples=16, grid_steps=8, batch_size=16, progress=False)
    student, record = straighten(teacher, pairs, steps=4, batch_size=8, lr=1e-3, progress=False,
                                 lora=LoraSettings(rank=2) if lora else None)
    assert isinstance(student, dif_adapter.DiffusersVelocity) and record["steps"] == 4
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # teacher untouched
    x, t = bf.gaussian_noise(2, SHAPE, seed=TEST_SEED), torch.full((2,), 0.3)
    with torch.no_grad():
        assert not torch.allclose(student(x, t), teacher(x, t))


def test_half_precision_transformer_keeps_the_state_dtype(tiny):
    transformer, cond, _ = tiny
    half = SD3Transformer2DModel.from_config(transformer.config).to(torch.bfloat16).eval()
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in transformer.state_dict().items()})
    velocity = dif_adapter.wrap(half, **cond)  # float32 embeddings are cast for the call
    x = bf.gaussian_noise(2, SHAPE, seed=TEST_SEED)
    with torch.no_grad():
        v = velocity(x, torch.full((2,), 0.5))
        reference = dif_adapter.wrap(transformer, **cond)(x, torch.full((2,), 0.5))
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, reference, rtol=0.1, atol=0.1)


def test_olss_schedules_are_refused():
    olss = bf.Schedule([0.0, 0.5, 1.0], method="olss", olss={"coefficients": []})
    with pytest.raises(ScheduleError, match="OLSS"):
        dif_adapter.schedule_to_sigmas(olss)
