"""diffusers: bossflow schedules as ``sigmas`` for ``FlowMatchEulerDiscreteScheduler``, transformers as velocity models.

diffusers' flow-matching models run in ``sigma = 1 - t`` (``sigma = 1`` noise, ``sigma = 0``
data) and predict ``noise - data = dx/dsigma``, so bossflow's velocity is
``v(x, t) = -model(x, sigma = 1 - t)``. SD3-style transformers take ``timestep = 1000 sigma``,
Flux-style ones ``sigma`` itself (their pipelines pass ``timestep / 1000``).

Schedules. ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=[...])`` takes the K step
starts ``sigma_k = 1 - t_k`` and appends the final ``0`` itself; it then takes Euler steps
``x + (sigma_{k+1} - sigma_k) * model_output``, exactly ``bossflow.euler``. But it first
*shifts* custom sigmas (``shift``, or ``use_dynamic_shifting`` with the pipeline's ``mu``),
and may stretch or replace them (``shift_terminal``, Karras/exponential/beta sigmas). Two ways
to get our times exactly:

* :func:`configure_scheduler` returns a copy of the scheduler with every such option off;
  pass ``schedule_to_sigmas(schedule)`` to the pipeline;
* or keep the scheduler and pass ``schedule_to_sigmas(schedule, scheduler, mu=...)``, which
  pre-inverts its shift so that the shifted sigmas are ours.

A schedule with evaluation times cannot be honoured (the scheduler evaluates the model at
the step starts) and is refused.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..core.errors import ModelSpecError, ScheduleError
from ..core.velocity import broadcast_time
from ..core.schedules import Schedule, step_times_for
from ._cond import Conditioning
from ._optional import require

# Transformers whose pipelines pass ``timestep / 1000`` (sigma in [0, 1]); others take ``1000 sigma``.
SIGMA_TIMESTEP_MODELS = frozenset(
    {
        "FluxTransformer2DModel",
        "Flux2Transformer2DModel",
        "ChromaTransformer2DModel",
        "QwenImageTransformer2DModel",
        "LongCatImageTransformer2DModel",
        "OvisImageTransformer2DModel",
    }
)

# Scheduler options that replace, stretch or randomise the sigmas they are given.
_UNSUPPORTED_OPTIONS = {
    "use_karras_sigmas": "replaces custom sigmas by Karras sigmas",
    "use_exponential_sigmas": "replaces custom sigmas by exponential sigmas",
    "use_beta_sigmas": "replaces custom sigmas by beta sigmas",
    "invert_sigmas": "inverts the sigmas (Mochi)",
    "shift_terminal": "stretches the sigmas to end at shift_terminal",
    "stochastic_sampling": "re-noises every step instead of taking Euler steps",
}


def _step_times(schedule: Schedule | Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    return step_times_for(schedule, "diffusers' FlowMatchEulerDiscreteScheduler",
                          "bossflow.euler(bossflow.adapters.diffusers.wrap(transformer, ...), x0, schedule)")


def _check_scheduler(scheduler: Any) -> None:
    diffusers = require("diffusers", "bossflow.adapters.diffusers")
    if not isinstance(scheduler, diffusers.FlowMatchEulerDiscreteScheduler):
        raise ScheduleError(
            f"bossflow schedules take Euler steps; a {type(scheduler).__name__} does not, use a "
            "FlowMatchEulerDiscreteScheduler (FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config))."
        )


def configure_scheduler(scheduler: Any) -> Any:
    """A copy of a ``FlowMatchEulerDiscreteScheduler`` that uses custom sigmas exactly as given.

    Sets ``shift=1``, ``use_dynamic_shifting=False`` and turns off ``shift_terminal``,
    Karras/exponential/beta sigmas, ``invert_sigmas`` and ``stochastic_sampling``; the rest of
    the config is kept. Use it as ``pipe.scheduler = configure_scheduler(pipe.scheduler)``, then
    ``pipe(..., sigmas=schedule_to_sigmas(schedule))``.

    Raises:
        BossflowError: diffusers is not installed.
        ScheduleError: ``scheduler`` is not a ``FlowMatchEulerDiscreteScheduler``.
    """
    _check_scheduler(scheduler)
    return type(scheduler).from_config(
        scheduler.config,
        shift=1.0,
        use_dynamic_shifting=False,
        shift_terminal=None,
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        invert_sigmas=False,
        stochastic_sampling=False,
    )


def schedule_to_sigmas(
    schedule: Schedule | Tensor | np.ndarray | Sequence[float],
    scheduler: Any = None,
    *,
    mu: float | None = None,
) -> list[float]:
    """The ``sigmas`` to pass to ``set_timesteps`` / a pipeline so that a schedule's times are used.

    Without ``scheduler``: the K step starts ``1 - t_k`` (``t_0 = 0`` gives ``sigma = 1``); the
    scheduler appends the final ``0``, and must not shift them (see :func:`configure_scheduler`).
    With ``scheduler``: those sigmas pre-inverted through its shift, so that after its
    ``set_timesteps`` its sigmas are ``1 - t_k`` (up to float32 rounding). Every diffusers shift
    has the form ``sigma' = m / (m + 1/sigma - 1)``, with ``m = shift`` (static), ``exp(mu)``
    (dynamic, exponential) or ``mu`` (dynamic, linear); its inverse is
    ``sigma = sigma' / (sigma' + m (1 - sigma'))``.

    Args:
        schedule: a :class:`~bossflow.Schedule` without evaluation times, or its K + 1 times.
        scheduler: the ``FlowMatchEulerDiscreteScheduler`` that will receive the sigmas, or ``None``.
        mu: the dynamic-shift parameter the pipeline will pass (needed when the scheduler uses
            ``use_dynamic_shifting``; diffusers computes it from the image size with ``calculate_shift``).

    Returns:
        K sigmas, decreasing from 1.

    Raises:
        ScheduleError: the schedule carries evaluation times, the scheduler replaces or stretches
            custom sigmas, or ``mu`` is missing for a dynamically shifting scheduler.

    Example:
        >>> import bossflow as bf
        >>> schedule_to_sigmas(bf.Schedule([0.0, 0.5, 0.75, 1.0]))
        [1.0, 0.5, 0.25]
    """
    sigmas = 1.0 - _step_times(schedule)[:-1]
    if scheduler is None:
        return sigmas.tolist()
    _check_scheduler(scheduler)
    config = scheduler.config
    for option, what in _UNSUPPORTED_OPTIONS.items():
        if config.get(option, None):
            raise ScheduleError(
                f"this scheduler's {option} {what}, so no sigmas given to it can be ours; use "
                "bossflow.adapters.diffusers.configure_scheduler(scheduler) and schedule_to_sigmas(schedule)."
            )
    if config.get("use_dynamic_shifting", False):
        if mu is None:
            raise ScheduleError(
                "this scheduler shifts sigmas dynamically (use_dynamic_shifting), so pass the pipeline's mu "
                "(diffusers' calculate_shift of the image size), or use configure_scheduler(scheduler)."
            )
        m = math.exp(mu) if config.get("time_shift_type", "exponential") == "exponential" else float(mu)
    else:
        m = float(getattr(scheduler, "shift", config.get("shift", 1.0)))
    if not (math.isfinite(m) and m > 0):
        raise ScheduleError(f"the scheduler's shift factor {m!r} is not a positive number.")
    return (sigmas / (sigmas + m * (1.0 - sigmas))).tolist()


def scheduler_times(scheduler: Any) -> np.ndarray:
    """The bossflow times ``1 - sigma`` (K + 1, float64) a scheduler will step through after ``set_timesteps``."""
    return 1.0 - scheduler.sigmas.detach().cpu().double().numpy()


def default_timestep_scale(transformer: Any) -> float:
    """1 for Flux-style transformers (they take ``sigma``), 1000 for the rest (SD3: ``1000 sigma``)."""
    return 1.0 if type(transformer).__name__ in SIGMA_TIMESTEP_MODELS else 1000.0


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """A floating-point tensor in ``dtype``; anything else unchanged."""
    return value.to(dtype) if isinstance(value, Tensor) and value.is_floating_point() else value


def _batched(value: Any, batch: int) -> Any:
    """A conditioning tensor of batch 1 expanded to ``batch`` rows; anything else unchanged."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == 1 and batch != 1:
        return value.expand(batch, *value.shape[1:])
    return value


class DiffusersVelocity(nn.Module):
    """A diffusers flow transformer plus fixed conditioning, as a bossflow velocity model (see :func:`wrap`).

    Attributes:
        transformer: the wrapped transformer.
        cond: keyword arguments of every call (``encoder_hidden_states``, ``pooled_projections``, ...);
            tensors are buffers, so ``.to(device)`` moves them and they are part of the state dict.
        negative_cond: the unconditional branch for classifier-free guidance, or ``None``.
        guidance_scale: classifier-free guidance scale (used with ``negative_cond``).
        timestep_scale: ``timestep = timestep_scale * sigma``.
        sample_shape: shape of one latent, when known.

    ``per_sample`` names conditioning that comes with each call rather than in ``cond`` (a
    search's per-sample prompt embeddings), ``shared`` conditioning that both guidance
    branches use (Flux's ``img_ids``, ``txt_ids``, ``guidance``); ``negative_cond`` must then
    have exactly the keys of ``cond`` and ``per_sample``, less ``shared``.
    """

    def __init__(
        self,
        transformer: nn.Module,
        cond: dict,
        *,
        negative_cond: dict | None = None,
        guidance_scale: float = 1.0,
        timestep_scale: float | None = None,
        sample_shape: Sequence[int] | None = None,
        per_sample: Sequence[str] = (),
        shared: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not callable(transformer):
            raise ModelSpecError(f"the transformer must be callable, got {type(transformer).__name__}.")
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale)):
            raise ModelSpecError(f"guidance_scale must be a number, got {guidance_scale!r}.")
        if guidance_scale != 1.0 and negative_cond is None:
            raise ModelSpecError("classifier-free guidance needs negative_cond (the unconditional embeddings).")
        branch_keys = (set(cond) | set(per_sample)) - set(shared)
        if negative_cond is not None and set(negative_cond) != branch_keys:
            raise ModelSpecError(
                f"negative_cond must have the keys of cond ({', '.join(sorted(branch_keys))}), got {', '.join(sorted(negative_cond))}."
            )
        scale = default_timestep_scale(transformer) if timestep_scale is None else timestep_scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ModelSpecError(f"timestep_scale must be a positive number (1000 or 1), got {scale!r}.")
        self.transformer = transformer
        self.cond = Conditioning(cond)
        self.negative_cond = None if negative_cond is None else Conditioning(negative_cond)
        self.guidance_scale = float(guidance_scale)
        self.timestep_scale = float(scale)
        if sample_shape is not None:
            self.sample_shape = tuple(int(s) for s in sample_shape)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``(B, *shape)`` at latents ``x`` ``(B, *shape)`` and bossflow times ``t`` ``(B,)``.

        Per-call ``cond`` overrides the fixed conditioning (of the conditional branch).
        """
        batch = x.shape[0]
        t = broadcast_time(t, x)
        # The state keeps its dtype (float32, say); a half-precision transformer gets its own dtype.
        dtype = getattr(self.transformer, "dtype", x.dtype)
        hidden = x.to(dtype)
        timestep = ((1.0 - t) * self.timestep_scale).to(torch.promote_types(dtype, torch.float32))
        kwargs = {k: _batched(_cast(v, dtype), batch) for k, v in {**self.cond.as_dict(), **cond}.items()}
        if self.negative_cond is None:
            out = self.transformer(hidden_states=hidden, timestep=timestep, return_dict=False, **kwargs)[0]
        else:
            # Classifier-free guidance in one batch, unconditional first, as diffusers' pipelines do.
            # Per-sample tensors are stacked [negative, positive]; a per-call value without a negative is shared.
            negative = {k: _batched(_cast(v, dtype), batch) for k, v in self.negative_cond.as_dict().items()}
            joint = {
                k: torch.cat([negative.get(k, v), v]) if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == batch else v
                for k, v in kwargs.items()
            }
            both = self.transformer(
                hidden_states=torch.cat([hidden, hidden]), timestep=torch.cat([timestep, timestep]), return_dict=False,
                **joint,
            )[0]
            uncond, text = both.chunk(2)
            out = uncond + self.guidance_scale * (text - uncond)
        # diffusers predicts noise - data = dx/dsigma; bossflow's velocity is dx/dt = -dx/dsigma.
        return -out.to(x.dtype)

    def conditional_branch(self) -> DiffusersVelocity:
        """The conditional branch alone (no classifier-free guidance), sharing this transformer and conditioning.

        What a pipeline computes with ``guidance_scale=1``: one transformer call per velocity.
        """
        return DiffusersVelocity(self.transformer, self.cond.as_dict(), timestep_scale=self.timestep_scale,
                                 sample_shape=getattr(self, "sample_shape", None))

    def extra_repr(self) -> str:
        return f"timestep_scale={self.timestep_scale:g}, guidance_scale={self.guidance_scale:g}"


def wrap(
    transformer: nn.Module,
    *,
    negative_cond: dict | None = None,
    guidance_scale: float = 1.0,
    timestep_scale: float | None = None,
    sample_shape: Sequence[int] | None = None,
    **cond: Any,
) -> DiffusersVelocity:
    """Wrap a diffusers flow transformer and its conditioning as a bossflow velocity model.

    The transformer is called as ``transformer(hidden_states=x, timestep=timestep_scale * (1 - t),
    **cond, return_dict=False)[0]`` and its output (``noise - data``) negated. Conditioning
    tensors of batch 1 are expanded to the batch of ``x``; other values pass unchanged.

    Args:
        transformer: e.g. ``SD3Transformer2DModel`` or ``FluxTransformer2DModel`` (``pipe.transformer``).
        negative_cond: unconditional conditioning (same keys as ``cond``) for classifier-free guidance.
        guidance_scale: ``uncond + guidance_scale * (cond - uncond)``; 1 means no guidance.
        timestep_scale: ``timestep = timestep_scale * sigma``; default 1 for Flux-style transformers
            (:data:`SIGMA_TIMESTEP_MODELS`), 1000 otherwise (SD3).
        sample_shape: shape of one latent, e.g. ``(16, 128, 128)`` for SD3 at 1024 px.
        **cond: the conditioning, e.g. ``encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled_prompt_embeds`` (SD3), plus ``txt_ids``, ``img_ids`` and
            ``guidance`` for Flux (with packed latents as ``x``).

    Returns:
        A :class:`DiffusersVelocity` (an ``nn.Module``).

    Raises:
        ModelSpecError: inconsistent guidance options or a bad timestep scale.
    """
    return DiffusersVelocity(
        transformer,
        cond,
        negative_cond=negative_cond,
        guidance_scale=guidance_scale,
        timestep_scale=timestep_scale,
        sample_shape=sample_shape,
    )
