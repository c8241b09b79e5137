"""A saved diffusers text-to-image pipeline over a prompt set, as one velocity model with per-sample prompts.

The pipeline is loaded with diffusers' own ``from_pretrained`` (a local folder, or a hub id
already in the user's cache; ``HF_HUB_OFFLINE=1`` is honoured by diffusers itself). Each
search noise is paired with a prompt (seeded and balanced: every prompt gets ``B // P`` or
``B // P + 1`` noises); the prompts are encoded once, in batches, and the text encoders and
the VAE are then dropped, since a search needs only the transformer.

The velocity is the pipeline's own update direction at sigma = 1 - t (t = 0 noise, t = 1
data), classifier-free guidance included as the pipeline applies it:

* ``StableDiffusion3Pipeline``: latents ``(C, H / f, W / f)``; guidance when
  ``guidance_scale > 1``, with the negative prompt's embeddings as the unconditional branch;
* ``FluxPipeline``: packed latents ``(H / 2f * W / 2f, 4 C)`` with ``img_ids`` and ``txt_ids``;
  a guidance-distilled transformer (``guidance_embeds``) takes ``guidance_scale`` as its
  guidance embedding and runs once per step; otherwise ``guidance_scale > 1`` with a
  negative prompt is true CFG (the pipeline's ``true_cfg_scale``).

A LoRA (``lora=``, a step-distilled Lightning/Turbo LoRA, say) is loaded with the pipeline's
own ``load_lora_weights`` and fused into the transformer before anything is encoded or searched.

``f`` is the VAE's scale factor. The pipeline's scheduler must be a
``FlowMatchEulerDiscreteScheduler``; its config (shift, dynamic shifting and, for this
resolution, ``mu``) is recorded so that schedules can be exported for it
(:func:`bossflow.adapters.diffusers.schedule_to_sigmas`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.errors import FileFormatError, ModelSpecError
from ._optional import require
from .diffusers import DiffusersVelocity

KINDS = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
"""Pipeline classes with a built-in recipe, and their short names."""

ENCODE_BATCH = 8
"""Prompts encoded per text-encoder call."""


@dataclass
class PipelineModel:
    """What a search needs of a pipeline: the velocity, the per-sample prompts, the latent shape, provenance.

    Attributes:
        model: velocity ``model(x, t, **cond)`` of the pipeline's latents (t = 0 noise, t = 1 data).
        cond: per-sample conditioning for the ``samples`` search noises (first dimension ``samples``).
        sample_shape: shape of one latent as the transformer takes it (Flux: packed).
        prompt_index: ``(samples,)`` index into ``prompts`` of each noise's prompt.
        prompts: the prompts, in file order.
        scheduler: the pipeline's scheduler, as saved.
        mu: the dynamic-shift parameter the pipeline uses at this resolution (``None`` without dynamic shifting).
        provenance: what the schedule file records about the pipeline (JSON-able).
        holdout_cond: per-sample conditioning of the held-out noises (``None`` when none were asked for).
        holdout_prompts: the prompts those held-out noises were paired with.
        prompt_embeds: ``{key: (P, ...)}`` the embeddings of ``prompts``, one row per prompt, on the model's device.
    """

    model: DiffusersVelocity
    cond: dict[str, Tensor]
    sample_shape: tuple[int, ...]
    prompt_index: np.ndarray
    prompts: list[str]
    scheduler: Any
    mu: float | None
    provenance: dict[str, Any] = field(default_factory=dict)
    holdout_cond: dict[str, Tensor] | None = None
    holdout_prompts: list[str] | None = None
    prompt_embeds: dict[str, Tensor] = field(default_factory=dict)


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The prompts of a UTF-8 text file, one per line, blank lines ignored.

    Raises:
        FileFormatError: the file is missing, unreadable, not UTF-8, or holds no prompt.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileFormatError(f"prompt file {path} does not exist; check the path.") from None
    except UnicodeDecodeError:
        raise FileFormatError(f"prompt file {path} is not UTF-8 text; save it as UTF-8, one prompt per line.") from None
    except OSError as exc:
        raise FileFormatError(f"cannot read prompt file {path}: {exc}.") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise FileFormatError(f"prompt file {path} holds no prompt; write one prompt per line.")
    return prompts


def prompt_hash(prompts: Sequence[str]) -> str:
    """SHA-256 of the prompts joined by newlines (what a schedule file records of its prompt set)."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()


def assign_prompts(samples: int, n_prompts: int, seed: int) -> np.ndarray:
    """``(samples,)`` prompt indices: each prompt ``samples // n_prompts`` or one more times, in a seeded order."""
    order = np.random.default_rng(seed).permutation(samples)
    index = np.empty(samples, dtype=np.int64)
    index[order] = np.arange(samples) % n_prompts
    return index


def load_pipeline(path: str, *, dtype: torch.dtype = torch.float32, variant: str | None = None,
                  device: torch.device | str = "cpu") -> Any:
    """The pipeline saved at ``path`` (or a cached hub id), through ``DiffusionPipeline.from_pretrained``.

    Raises:
        ModelSpecError: nothing loadable there, or a scheduler that is not a flow-matching one.
    """
    diffusers = require("diffusers", "bossflow.adapters.pipelines")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not Path(path).exists() and offline:
        raise ModelSpecError(f"no pipeline folder {path!r}, and HF_HUB_OFFLINE is set: give a saved pipeline folder.")
    try:
        with warnings.catch_warnings(), _quiet_transformers():
            warnings.simplefilter("ignore", FutureWarning)  # newer diffusers renames torch_dtype to dtype
            pipe = diffusers.DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, variant=variant)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"cannot load a diffusers pipeline from {path!r}: {first}") from None
    if not isinstance(pipe.scheduler, diffusers.FlowMatchEulerDiscreteScheduler):
        raise ModelSpecError(
            f"the pipeline in {path!r} samples with a {type(pipe.scheduler).__name__}, not a flow-matching scheduler "
            "(FlowMatchEulerDiscreteScheduler); bossflow searches flow-matching pipelines (SD3, Flux, ...)."
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings silenced while inside: it warns of a torchvision fallback for image processors that a
    text-to-image pipeline's text encoders never use."""
    try:
        from transformers.utils import logging
    except ImportError:
        yield
        return
    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def fuse_lora(pipe: Any, path: str, scale: float = 1.0) -> dict[str, Any]:
    """Load the LoRA at ``path`` (a file, or a folder holding one) into ``pipe`` and fuse it; its provenance.

    Uses the pipeline's own ``load_lora_weights``, ``fuse_lora(lora_scale=scale)`` and
    ``unload_lora_weights``: the transformer (and any adapted text encoder) is left plain, with
    the LoRA in its weights.

    Raises:
        ModelSpecError: no such file, or a LoRA this pipeline cannot load.
    """
    require("peft", "LoRA loading (--lora)")
    where = Path(path)
    if not where.exists():
        raise ModelSpecError(f"no LoRA file or folder {path!r}; give a .safetensors file or the folder holding it.")
    if not (isinstance(scale, (int, float)) and np.isfinite(scale)):
        raise ModelSpecError(f"the LoRA scale must be a number, got {scale!r}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.load_lora_weights(str(where))
        pipe.fuse_lora(lora_scale=float(scale))
        pipe.unload_lora_weights()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"cannot load the LoRA {path!r} into this {type(pipe).__name__}: {first}") from None
    files = sorted(where.glob("*.safetensors")) if where.is_dir() else [where]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return {"path": str(path), "scale": float(scale), "sha256": digest.hexdigest()}


def pipeline_kind(pipe: Any) -> str:
    """``"sd3"`` or ``"flux"``; other pipelines need the recipe of the README (wrap the transformer yourself)."""
    name = type(pipe).__name__
    if name not in KINDS:
        raise ModelSpecError(
            f"bossflow has no recipe for {name}; it reads StableDiffusion3Pipeline and FluxPipeline. For another "
            "flow-matching pipeline, wrap its transformer with bossflow.adapters.diffusers.wrap (README: "
            "'Your own diffusers pipeline') and pass it as --model file.py:factory."
        )
    return KINDS[name]


def latent_geometry(pipe: Any, height: int | None, width: int | None) -> tuple[int, int, tuple[int, ...], int]:
    """``(height, width, sample_shape, image_seq_len)`` for an image of ``height x width`` pixels.

    Defaults are the pipeline's own (``default_sample_size * vae_scale_factor``).

    Raises:
        ModelSpecError: a size that is not a positive multiple of what the pipeline needs.
    """
    kind = pipeline_kind(pipe)
    factor = int(pipe.vae_scale_factor)
    default = int(pipe.default_sample_size) * factor
    height, width = height or default, width or default
    config = pipe.transformer.config
    step = factor * (int(config.patch_size) if kind == "sd3" else 2)
    for name, size in (("--height", height), ("--width", width)):
        if size < step or size % step:
            raise ModelSpecError(f"{name} {size} must be a positive multiple of {step} pixels for this pipeline "
                                 f"(VAE factor {factor} times patch size {step // factor}), e.g. {max(step, size - size % step)}.")
    h, w = height // factor, width // factor
    if kind == "sd3":
        channels = int(config.in_channels)
        return height, width, (channels, h, w), (h // int(config.patch_size)) * (w // int(config.patch_size))
    channels = int(config.in_channels) // 4
    seq = (h // 2) * (w // 2)
    return height, width, (seq, 4 * channels), seq


def dynamic_mu(pipe: Any, image_seq_len: int) -> float | None:
    """The ``mu`` the pipeline passes its scheduler at this image size (``None`` without dynamic shifting)."""
    config = pipe.scheduler.config
    if not config.get("use_dynamic_shifting", False):
        return None
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    max_shift = config.get("max_shift", 1.15 if pipeline_kind(pipe) == "flux" else 1.16)
    return float(calculate_shift(image_seq_len, config.get("base_image_seq_len", 256),
                                 config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5), max_shift))


def encode_prompts(pipe: Any, prompts: Sequence[str], *, batch: int = ENCODE_BATCH) -> dict[str, Tensor]:
    """``{"encoder_hidden_states": (P, L, E), "pooled_projections": (P, E')}`` on the CPU, in batches of ``batch``."""
    kind = pipeline_kind(pipe)
    parts: dict[str, list[Tensor]] = {"encoder_hidden_states": [], "pooled_projections": []}
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            if kind == "sd3":
                embeds, _, pooled, _ = pipe.encode_prompt(chunk, None, None, do_classifier_free_guidance=False)
            else:
                embeds, pooled, _ = pipe.encode_prompt(chunk, None)
            parts["encoder_hidden_states"].append(embeds.cpu())
            parts["pooled_projections"].append(pooled.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def drop_encoders(pipe: Any) -> None:
    """Free the text encoders and the VAE: a search calls only the transformer."""
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)


def _guidance(pipe: Any, guidance_scale: float, negative_prompt: str | None) -> tuple[dict[str, Tensor], bool]:
    """Fixed conditioning for the guidance, and whether classifier-free guidance runs (two branches)."""
    if pipeline_kind(pipe) == "flux" and pipe.transformer.config.guidance_embeds:
        return {"guidance": torch.full((1,), float(guidance_scale))}, False
    if pipeline_kind(pipe) == "flux":
        return {}, guidance_scale > 1 and negative_prompt is not None
    return {}, guidance_scale > 1


def _flux_ids(pipe: Any, text_length: int, height: int, width: int) -> dict[str, Tensor]:
    """Flux's ``img_ids`` for this image size and ``txt_ids`` for this text length, shared by every sample."""
    factor = int(pipe.vae_scale_factor)
    h, w = height // factor // 2, width // factor // 2
    image_ids = type(pipe)._prepare_latent_image_ids(1, h, w, torch.device("cpu"), torch.float32)
    return {"img_ids": image_ids, "txt_ids": torch.zeros(text_length, 3)}


def pipeline_model(
    path: str, prompts: Sequence[str], *, samples: int, seed: int = 0, negative_prompt: str | None = None,
    guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, variant: str | None = None,
    holdout_samples: int = 0, holdout_prompts: Sequence[str] | None = None, holdout_seed: int = 1,
    lora: str | None = None, lora_scale: float = 1.0,
) -> PipelineModel:
    """Load the pipeline at ``path`` and build the velocity of its latents over ``prompts``.

    Args:
        path: a saved pipeline folder (or a hub id in the local cache).
        prompts: the prompt set; each of the ``samples`` noises gets one (:func:`assign_prompts`).
        samples: number of search noises ``B``.
        seed: seed of the prompt assignment (use the noises' seed).
        negative_prompt: the unconditional prompt of classifier-free guidance (default ``""`` for SD3).
        guidance_scale: the pipeline's guidance scale (default: SD3 7.0, Flux 3.5).
        height, width: image size in pixels (default: the pipeline's).
        device: where the transformer runs.
        dtype: weights dtype (``torch.bfloat16`` for ``--precision bf16``).
        variant: the weights variant to load (``"fp16"``, ...).
        holdout_samples: held-out noises to condition as well (their prompts are encoded in the
            same pass, before the text encoders are freed).
        holdout_prompts: the held-out noises' prompts (default: ``prompts``).
        holdout_seed: seed of the held-out prompt assignment.
        lora: a LoRA to fuse into the pipeline first (:func:`fuse_lora`); recorded in the provenance.
        lora_scale: its weight.

    Raises:
        ModelSpecError: the pipeline cannot be loaded or used, or a bad size or guidance.
    """
    pipe = load_pipeline(path, dtype=dtype, variant=variant, device=device)
    kind = pipeline_kind(pipe)
    fused = fuse_lora(pipe, lora, lora_scale) if lora is not None else None
    if guidance_scale is None:
        guidance_scale = 7.0 if kind == "sd3" else 3.5
    if not (isinstance(guidance_scale, (int, float)) and np.isfinite(guidance_scale) and guidance_scale > 0):
        raise ModelSpecError(f"--guidance-scale must be a positive number, got {guidance_scale!r}.")
    if kind == "sd3" and negative_prompt is None:
        negative_prompt = ""
    height, width, shape, seq_len = latent_geometry(pipe, height, width)
    fixed, cfg = _guidance(pipe, guidance_scale, negative_prompt)
    held_out = list(holdout_prompts or prompts)
    embeds = encode_prompts(pipe, [*prompts, *holdout_prompts] if holdout_prompts else prompts)
    negative = {k: v[:1] for k, v in encode_prompts(pipe, [negative_prompt]).items()} if cfg else None
    if kind == "flux":
        fixed.update(_flux_ids(pipe, embeds["encoder_hidden_states"].shape[1], height, width))
    drop_encoders(pipe)
    index = assign_prompts(samples, len(prompts), seed)
    model = DiffusersVelocity(pipe.transformer, fixed, negative_cond=negative, guidance_scale=guidance_scale if cfg else 1.0,
                              sample_shape=shape, per_sample=tuple(embeds), shared=tuple(fixed)).to(device)
    cond = _rows(embeds, index, device)
    holdout_cond = None
    if holdout_samples:
        offset = len(prompts) if holdout_prompts else 0
        holdout_cond = _rows(embeds, offset + assign_prompts(holdout_samples, len(held_out), holdout_seed), device)
    mu = dynamic_mu(pipe, seq_len)
    provenance = {
        "pipeline": type(pipe).__name__, "pipeline_path": str(path), "height": height, "width": width,
        "guidance_scale": float(guidance_scale), "cfg": bool(cfg), "negative_prompt": negative_prompt if cfg else None,
        "guidance_embeds": "guidance" in fixed, "prompts": len(prompts), "prompts_sha256": prompt_hash(prompts),
        "diffusers_scheduler": {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")},
        "mu": mu, "latent_shape": list(shape), **({"lora": fused} if fused else {}),
    }
    table = {k: v[:len(prompts)].to(device) for k, v in embeds.items()}
    return PipelineModel(model, cond, tuple(shape), index, list(prompts), pipe.scheduler, mu, provenance,
                         holdout_cond, held_out if holdout_samples else None, table)


def _rows(embeds: dict[str, Tensor], index: np.ndarray, device: torch.device | str) -> dict[str, Tensor]:
    """Each prompt embedding ``(P, ...)`` indexed by ``index`` ``(B,)``: the conditioning ``(B, ...)`` of B noises."""
    return {k: v[torch.as_tensor(index)].to(device) for k, v in embeds.items()}


class TransformerBudget(torch.nn.Module):
    """A pipeline velocity that counts its transformer calls, reports a time estimate, and stops at a budget.

    One transformer call is one latent through the transformer once; with classifier-free
    guidance a velocity row costs two. After the first velocity call, ``report(seconds_per_call)``
    is called once (so the caller can print an estimate); past ``max_calls`` the call that
    would exceed it raises instead of running.

    Args:
        model: the pipeline's velocity (:attr:`PipelineModel.model`).
        calls_per_row: 2 with classifier-free guidance, else 1.
        max_calls: the most transformer calls allowed (``None``: no limit).
        report: called once with the measured seconds per transformer call.

    Raises:
        BossflowError: (when called) the call would take the total past ``max_calls``.
    """

    def __init__(self, model: torch.nn.Module, calls_per_row: int, *, max_calls: int | None = None,
                 report: Any = None) -> None:
        super().__init__()
        self.model, self.calls_per_row, self.max_calls, self.report = model, int(calls_per_row), max_calls, report
        self.calls = 0
        sample_shape = getattr(model, "sample_shape", None)
        if sample_shape is not None:
            self.sample_shape = tuple(sample_shape)

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        cost = int(x.shape[0]) * self.calls_per_row
        if self.max_calls is not None and self.calls + cost > self.max_calls:
            raise BudgetExceeded(
                f"the search would make more than --max-calls {self.max_calls:,} transformer calls ({self.calls:,} so "
                "far); raise --max-calls, or lower --samples, --grid-steps or the number of budgets."
            )
        first = self.calls == 0 and self.report is not None
        started = time.perf_counter()
        out = self.model(x, t, **cond)
        self.calls += cost
        if first:
            if out.is_cuda:
                torch.cuda.synchronize(out.device)
            self.report((time.perf_counter() - started) / cost)
        return out


class BudgetExceeded(ModelSpecError):
    """A search reached its ``--max-calls``."""
