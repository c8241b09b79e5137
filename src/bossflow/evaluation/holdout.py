"""Schedules scored on held-out noises (and prompts) of a pipeline, beside the pipeline's own default schedule.

The score is the endpoint RMSE in latent space against a fine Euler solution of the same
noises (``fine_steps`` uniform steps, t = 0 noise to t = 1 data); the default schedule is
what the pipeline's scheduler, as saved, steps through for the same number of steps at this
resolution (its shift and ``mu`` applied). A straightened LoRA is scored the same way, its
endpoints against the base pipeline's fine solution (:func:`fine_endpoints`, :func:`schedule_endpoints`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.metrics import endpoint_rmse
from ..core.schedules import Schedule, uniform_schedule
from ..core.solvers import euler
from ..search.sampling import sample_with


def scheduler_schedule(scheduler: Any, nfe: int, mu: float | None = None) -> Schedule:
    """The ``nfe``-step schedule a diffusers flow scheduler takes by default (its sigmas as ``t = 1 - sigma``)."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(nfe, **({"mu": mu} if mu is not None else {}))
    times = np.clip(1.0 - fresh.sigmas.detach().cpu().double().numpy(), 0.0, 1.0)
    if times[0] < 1e-6:  # float32 sigma 1 - eps: the pipeline starts from pure noise
        times[0] = 0.0
    return Schedule(times, method="pipeline default")


def fine_endpoints(model: Any, noise: Tensor, cond: Mapping[str, Tensor], fine_steps: int = 100) -> Tensor:
    """``(B, *shape)``: the endpoints of ``fine_steps`` uniform Euler steps from ``noise`` ``(B, *shape)``."""
    with torch.no_grad():
        return euler(model, noise, uniform_schedule(fine_steps), cond=dict(cond))


def schedule_endpoints(model: Any, noise: Tensor, cond: Mapping[str, Tensor],
                       schedules: Sequence[Schedule]) -> dict[int, Tensor]:
    """``{nfe: (B, *shape)}``: the endpoints of each schedule's own sampler from ``noise`` ``(B, *shape)``."""
    with torch.no_grad():
        return {s.nfe: sample_with(model, noise, s, cond=dict(cond)) for s in schedules}


def holdout_rows(model: Any, noise: Tensor, cond: Mapping[str, Tensor], schedules: Mapping[int, Schedule],
                 defaults: Mapping[int, Schedule], *, fine_steps: int = 100) -> list[dict[str, Any]]:
    """One row per budget: ``{"nfe", "rmse", "default_rmse", "gain"}`` on ``noise`` ``(B, *shape)`` and its ``cond``.

    ``gain`` is ``default_rmse / rmse`` (above 1: the searched schedule is better).
    """
    with torch.no_grad():
        reference = euler(model, noise, uniform_schedule(fine_steps), cond=dict(cond))
        rows = []
        for nfe, schedule in schedules.items():
            rmse = endpoint_rmse(sample_with(model, noise, schedule, cond=dict(cond)), reference)
            default = endpoint_rmse(euler(model, noise, defaults[nfe], cond=dict(cond)), reference)
            rows.append({"nfe": nfe, "rmse": rmse, "default_rmse": default, "gain": default / rmse if rmse > 0 else float("inf")})
    return rows
