"""A ComfyUI custom node: the ``SIGMAS`` of a bossflow schedule file, for ``SamplerCustom``.

ComfyUI finds custom nodes in ``ComfyUI/custom_nodes/<folder>/__init__.py``; with bossflow
installed in ComfyUI's Python, that file needs one line::

    from bossflow.adapters.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

The node outputs K + 1 sigmas ``1 - t`` from 1 down to 0 (:func:`bossflow.adapters.export.export_schedule`,
format ``comfyui``): a custom sampler steps through them as given, so the model's own time
shift is not applied again. Importing this module needs neither ComfyUI nor diffusers.
"""

from __future__ import annotations

from typing import Any


class BossflowSigmas:
    """ComfyUI node ``bossflow sigmas``: read a schedule file, pick a budget, output ``SIGMAS``."""

    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "schedule_file": ("STRING", {"default": "schedules.json"}),
                "nfe": ("INT", {"default": 4, "min": 1, "max": 1000}),
            }
        }

    def sigmas(self, schedule_file: str, nfe: int) -> tuple[Any]:
        """``(sigmas,)``: a ``(nfe + 1,)`` float32 tensor from 1 to 0 for the schedule with ``nfe`` steps."""
        import torch

        from ..core.errors import ScheduleError
        from ..core.schedules import load_schedules
        from .export import export_schedule

        schedules = load_schedules(schedule_file)
        if nfe not in schedules:
            raise ScheduleError(f"{schedule_file} has schedules for NFE {sorted(schedules)}, not {nfe}.")
        return (torch.tensor(export_schedule(schedules[nfe], "comfyui"), dtype=torch.float32),)


NODE_CLASS_MAPPINGS = {"BossflowSigmas": BossflowSigmas}
NODE_DISPLAY_NAME_MAPPINGS = {"BossflowSigmas": "bossflow sigmas"}
