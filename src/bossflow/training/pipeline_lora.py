"""Straightening a diffusers pipeline into a LoRA: adapters on its transformer, trained as the pipeline evaluates it.

The student is the pipeline's own velocity (:class:`~bossflow.adapters.diffusers.DiffusersVelocity`
over the pipeline's transformer, ``t = 0`` noise, ``t = 1`` data): with classifier-free guidance
both branches run through the adapted transformer and are combined with the pipeline's guidance
scale, exactly as the pipeline combines them. The pipeline with the LoRA loaded, called with
the same guidance scale along the schedule, is then the few-step sampler.

With ``distill_guidance`` the student is the conditional branch alone, trained on the guided
teacher's pairs: one transformer call per step instead of two, used with ``guidance_scale=1``.

The adapters are added in place (no copy of a multi-gigabyte transformer); the teacher's pairs
must therefore be made before (:func:`bossflow.training.pairs.teacher_pairs`), and
``transformer.disable_adapters()`` gives the teacher back afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from torch import nn

from ..adapters.lora import add_transformer_lora, resolve_targets
from ..core.errors import BossflowError
from ..core.noise import sample_seed
from .pairs import PairData
from .straighten import LoraSettings, straighten


def check_request(velocity: Any, settings: LoraSettings, *, distill_guidance: bool = False) -> list[str]:
    """Refuse what :func:`pipeline_student` could not do, before any work; the target layer names it would use.

    Raises:
        BossflowError: ``distill_guidance`` without classifier-free guidance, or targets that match no linear layer.
    """
    if distill_guidance and velocity.negative_cond is None:
        raise BossflowError("--distill-guidance needs classifier-free guidance (a guidance scale above 1 and, for "
                            "Flux, a negative prompt); this pipeline's velocity is a single branch already.")
    return resolve_targets(velocity.transformer, settings.targets)


def pipeline_student(velocity: Any, settings: LoraSettings, *, distill_guidance: bool = False,
                     seed: int = 0) -> tuple[nn.Module, LoraSettings]:
    """Add LoRA adapters to ``velocity``'s transformer; the velocity to train and the settings with the targets used.

    Args:
        velocity: the pipeline's velocity (classifier-free guidance included when the pipeline uses it).
        settings: rank, alpha and target layer names (``None``: the attention projections).
        distill_guidance: train the conditional branch alone to give the guided velocity.
        seed: seeds the adapters' ``A`` matrices (as :func:`~bossflow.training.straighten.straighten` does).

    Raises:
        BossflowError: ``distill_guidance`` without classifier-free guidance, or bad LoRA settings.
    """
    check_request(velocity, settings, distill_guidance=distill_guidance)
    targets = add_transformer_lora(velocity.transformer, settings.rank, alpha=settings.alpha, targets=settings.targets,
                                   seed=sample_seed(seed, 0))
    student = velocity.conditional_branch() if distill_guidance else velocity
    return student, LoraSettings(settings.rank, settings.alpha, tuple(targets))


@contextlib.contextmanager
def gradient_checkpointing(transformer: nn.Module, enabled: bool) -> Iterator[bool]:
    """Recompute activations in the backward pass while inside (when asked and the transformer supports it).

    Yields whether it is on.
    """
    supported = enabled and bool(getattr(transformer, "_supports_gradient_checkpointing", False))
    if supported:
        transformer.enable_gradient_checkpointing()
    try:
        yield supported
    finally:
        if supported:
            transformer.disable_gradient_checkpointing()


def straighten_pipeline(velocity: Any, pairs: PairData, settings: LoraSettings, *, distill_guidance: bool = False,
                        checkpointing: bool = False, seed: int = 0, **options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Straighten a pipeline's velocity on its teacher ``pairs`` with LoRA adapters on the transformer.

    Args:
        velocity: the pipeline's velocity; its transformer gets the adapters in place.
        pairs: the (guided) teacher's pairs, made before this call, with the per-sample prompt conditioning.
        settings: the LoRA's rank, alpha and targets.
        distill_guidance: train the conditional branch alone (see the module docstring).
        checkpointing: gradient checkpointing of the transformer during training (less memory, about a third more time).
        seed: seeds the adapters and every batch draw.
        **options: the training options of :func:`~bossflow.training.straighten.straighten` (objective,
            steps, batch_size, lr, out_dir, resume, micro_batch, precision, ...).

    Returns:
        ``(student, record)``: the velocity whose transformer holds the trained (EMA) adapters, in eval
        mode, and the run's record (with ``distill_guidance``, ``gradient_checkpointing`` and the targets).
    """
    if pairs.cond is None:
        raise BossflowError("the pipeline's pairs carry no prompt conditioning; make them with the prompt table.")
    student, used = pipeline_student(velocity, settings, distill_guidance=distill_guidance, seed=seed)
    with gradient_checkpointing(velocity.transformer, checkpointing) as checkpointed:
        student, record = straighten(None, pairs, student=student, lora=used, seed=seed, **options)
    record.update(distill_guidance=distill_guidance, gradient_checkpointing=checkpointed)
    return student, record
