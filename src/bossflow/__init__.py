"""bossflow: few-step sampling schedules for flow-matching models (BOSS, ICLR 2024).

Time runs from 0 (noise) to 1 (data); a velocity model is ``model(x, t, **cond) -> v``.

The public names below load on first use, so ``import bossflow`` (and ``bossflow --help``)
does not import torch; ``docs/ARCHITECTURE.md`` describes the layers they come from.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _aliases
from ._version import __version__

_aliases.install()

_PUBLIC: dict[str, str] = {
    **dict.fromkeys(("bellman_path", "bellman_paths", "bellman_schedules"), "core.bellman"),
    **dict.fromkeys(("cost_matrix", "load_cost_matrix"), "core.cost"),
    **dict.fromkeys(("BossflowError", "CostMatrixError", "FileFormatError", "ModelSpecError", "ScheduleError"),
                    "core.errors"),
    "endpoint_rmse": "core.metrics",
    "gaussian_noise": "core.noise",
    **dict.fromkeys(("Schedule", "custom_schedule", "edm_schedule", "load_schedules", "save_schedules",
                     "shifted_schedule", "uniform_schedule"), "core.schedules"),
    **dict.fromkeys(("NFECounter", "Trajectory", "euler", "fine_trajectory", "heun", "reference_solve"),
                    "core.solvers"),
    "VelocityModel": "core.velocity",
    **dict.fromkeys(("GaussianMixtureFlow", "TinyUNet", "VelocityMLP"), "models.networks"),
}
"""Public name -> the module (below ``bossflow``) that defines it."""

_SUBPACKAGES = ("adapters", "cli", "core", "data", "evaluation", "models", "search", "training")


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _SUBPACKAGES or f"{__name__}.{name}" in _aliases.MOVED:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_SUBPACKAGES})


__all__ = sorted(_PUBLIC)
