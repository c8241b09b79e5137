"""bossflow: few-step sampling schedules for flow-matching models (BOSS, ICLR 2024).

Time runs from 0 (noise) to 1 (data); a velocity model is ``model(x, t, **cond) -> v``.
"""

from .bellman import bellman_path, bellman_paths, bellman_schedules
from .cost import cost_matrix, load_cost_matrix
from .errors import BossflowError, CostMatrixError, FileFormatError, ModelSpecError, ScheduleError
from .metrics import endpoint_rmse
from .models import GaussianMixtureFlow, TinyUNet, VelocityMLP, VelocityModel
from .noise import gaussian_noise
from .schedules import (
    Schedule,
    custom_schedule,
    edm_schedule,
    load_schedules,
    save_schedules,
    shifted_schedule,
    uniform_schedule,
)
from .solvers import NFECounter, Trajectory, euler, fine_trajectory, heun, reference_solve

__version__ = "0.1.0"

__all__ = [
    "BossflowError",
    "CostMatrixError",
    "FileFormatError",
    "GaussianMixtureFlow",
    "ModelSpecError",
    "NFECounter",
    "Schedule",
    "ScheduleError",
    "TinyUNet",
    "Trajectory",
    "VelocityMLP",
    "VelocityModel",
    "bellman_path",
    "bellman_paths",
    "bellman_schedules",
    "cost_matrix",
    "custom_schedule",
    "edm_schedule",
    "endpoint_rmse",
    "euler",
    "fine_trajectory",
    "gaussian_noise",
    "heun",
    "load_cost_matrix",
    "load_schedules",
    "reference_solve",
    "save_schedules",
    "shifted_schedule",
    "uniform_schedule",
]
