"""A schedule as the list of numbers another sampler takes: diffusers, ComfyUI, k-diffusion, flow_matching.

* ``diffusers``: the K ``sigmas=`` of ``pipe(..., sigmas=...)`` (no terminal 0: the scheduler
  appends it). When the schedule was searched on a pipeline, its file records the
  pipeline's scheduler config (and ``mu``); the sigmas are then pre-inverted through that
  scheduler's shift, so that the pipeline as the user saved it steps exactly at the
  schedule's times. Otherwise they are ``1 - t_k``, for a scheduler without shift
  (:func:`bossflow.adapters.diffusers.configure_scheduler`).
* ``comfyui``, ``k-diffusion``: K + 1 model sigmas ``1 - t`` from 1 down to 0, the ``SIGMAS``
  a custom sampler (``SamplerCustom``, ``sample_euler``) steps through as given.
* ``flow-matching``: the K + 1 times of ``ODESolver.sample(time_grid=...)`` (t = 0 noise, t = 1 data).

Schedules with evaluation times or OLSS steps cannot be written this way and are refused.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import ScheduleError
from ..core.schedules import Schedule, as_schedule, step_times_for
from ._optional import require
from .diffusers import schedule_to_sigmas

FORMATS = ("diffusers", "comfyui", "k-diffusion", "flow-matching")
"""The formats :func:`export_schedule` writes."""


def saved_scheduler(schedule: Schedule) -> Any:
    """The ``FlowMatchEulerDiscreteScheduler`` recorded with ``schedule`` (meta ``diffusers_scheduler``), or ``None``."""
    config = schedule.meta.get("diffusers_scheduler")
    if not config:
        return None
    diffusers = require("diffusers", "bossflow.adapters.export")
    return diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)


def export_schedule(schedule: Schedule | Any, fmt: str) -> list[float]:
    """``schedule`` as the numbers ``fmt`` (one of :data:`FORMATS`) takes; see the module docstring.

    Args:
        schedule: a :class:`Schedule`, or its K + 1 step times (tensor, array or list), 0 noise to 1 data.
        fmt: the format.

    Raises:
        ScheduleError: an unknown format, or a schedule with evaluation times or OLSS steps.
    """
    if fmt not in FORMATS:
        raise ScheduleError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    schedule = as_schedule(schedule)
    if "olss" in schedule.meta or schedule.has_eval_times:
        what = "OLSS steps (a linear multistep update)" if "olss" in schedule.meta else "its own evaluation times"
        raise ScheduleError(
            f"the schedule with NFE {schedule.nfe} has {what}, which {fmt} samplers cannot follow; search one of step "
            "times only with `bossflow schedule --family times` (or sample this one with `bossflow sample`)."
        )
    times = step_times_for(schedule, f"a {fmt} sampler", "bossflow sample")
    if fmt == "flow-matching":
        return [float(t) for t in times]
    if fmt in ("comfyui", "k-diffusion"):
        return [float(1.0 - t) for t in times]
    scheduler = saved_scheduler(schedule)
    return schedule_to_sigmas(schedule, scheduler, mu=schedule.meta.get("mu")) if scheduler else schedule_to_sigmas(schedule)


def diffusers_call(schedule: Schedule, sigmas: list[float]) -> str:
    """The one line that uses exported ``sigmas`` with the pipeline the schedule was searched on."""
    meta = schedule.meta
    extra = "".join(f", {name}={meta[name]}" for name in ("height", "width") if meta.get(name))  # mu follows the size
    if meta.get("guidance_scale") is not None:
        flux_cfg = meta.get("pipeline") == "FluxPipeline" and meta.get("cfg")
        extra += f", {'true_cfg_scale' if flux_cfg else 'guidance_scale'}={meta['guidance_scale']:g}"
        if meta.get("cfg") and meta.get("negative_prompt") is not None:
            extra += f", negative_prompt={meta['negative_prompt']!r}"
    text = f"image = pipe(prompt, sigmas={[round(s, 6) for s in sigmas]}{extra}).images[0]"
    if not schedule.meta.get("diffusers_scheduler"):
        text = ("pipe.scheduler = bossflow.adapters.diffusers.configure_scheduler(pipe.scheduler)  "
                "# these sigmas are for a scheduler without shift\n" + text)
    return text
