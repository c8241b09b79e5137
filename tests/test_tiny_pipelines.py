"""The tiny offline SD3 / Flux pipelines of ``tiny_pipelines`` build, reload and generate."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import DiffusionPipeline, FluxPipeline, StableDiffusion3Pipeline  # noqa: E402

from tiny_pipelines import make_flux_pipeline, make_sd3_pipeline  # noqa: E402

PROMPT = "a photo of a cat"


def _generate(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(
        PROMPT, num_inference_steps=2, height=32, width=32, output_type="latent", generator=generator, **kwargs
    ).images


def test_sd3_pipeline_reloads_and_generates(tmp_path):
    folder = make_sd3_pipeline(tmp_path / "sd3", shift=3.0)
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert isinstance(pipe, StableDiffusion3Pipeline)
    assert pipe.vae_scale_factor == 2 and pipe.transformer.config.patch_size == 2
    assert pipe.scheduler.config.shift == 3.0

    latents = _generate(pipe, guidance_scale=4.0)  # CFG on
    assert latents.shape == (1, 16, 16, 16)
    assert torch.isfinite(latents).all()

    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, None, None, max_sequence_length=32)
    assert embeds.shape == negative.shape == (1, 77 + 32, 32)
    assert pooled.shape == negative_pooled.shape == (1, 64)


@pytest.mark.parametrize("guidance_embeds", [True, False], ids=["dev", "schnell"])
def test_flux_pipeline_reloads_and_generates(tmp_path, guidance_embeds):
    folder = make_flux_pipeline(tmp_path / "flux", guidance_embeds=guidance_embeds)
    pipe = FluxPipeline.from_pretrained(folder)
    assert pipe.transformer.config.guidance_embeds is guidance_embeds
    assert pipe.scheduler.config.use_dynamic_shifting

    latents = _generate(pipe, guidance_scale=3.5, max_sequence_length=32)
    assert latents.shape == (1, (32 // 4) ** 2, 64)  # packed 2x2 patches of the 16-channel 16x16 latent
    assert torch.isfinite(latents).all()

    embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, None, max_sequence_length=32)
    assert embeds.shape == (1, 32, 32) and pooled.shape == (1, 32) and text_ids.shape == (32, 3)
