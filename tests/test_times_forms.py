"""Every public function that takes times (a schedule, a base grid, step times) accepts the same
four forms, a :class:`~bossflow.Schedule`, a tensor, a numpy array or a list, through
``validate_times``, and gives the same result for each; bad times give one ``ScheduleError``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bossflow as bf
from bossflow.adapters import diffusers as bfd
from bossflow.adapters import flow_matching as fm
from bossflow.adapters.export import FORMATS, export_schedule
from bossflow.core.schedules import as_schedule, step_times_for, validate_times
from bossflow.core.solvers import batched_trajectory, rk4, schedule_times, trajectory_batches
from bossflow.errors import ScheduleError
from bossflow.search import SEARCHES, refine_schedule, refit_last_step, sample, sample_with, search
from bossflow.search.ays import ays_interval_costs, interpolate_times
from bossflow.search.ays import snap_to_grid as ays_snap
from bossflow.search.evolution import snap_to_grid as evolution_snap
from bossflow.search.gits import gits_cost_matrix
from bossflow.search.global_dp import global_error_paths

FORMS = ("schedule", "tensor", "array", "list")
MODEL = bf.models.gmm_2d()
NOISE = bf.gaussian_noise(12, (2,), seed=0, dtype=torch.float64)
STEPS = bf.Schedule([0.0, 0.3, 0.7, 1.0])      # 3 Euler steps
GRID = bf.uniform_schedule(8)                  # a small base grid
FAST = {"refined": {"steps": 10, "screen_steps": 5}, "auto": {"refine": {"steps": 10, "screen_steps": 5}}}


def as_form(schedule: bf.Schedule, form: str):
    """``schedule``'s step times in one of the four forms."""
    return {"schedule": schedule, "tensor": torch.tensor(schedule.times), "array": np.array(schedule.times),
            "list": schedule.times.tolist()}[form]


def plain(value):
    """A result as nested Python data, for comparing: schedules by their times and evaluation times."""
    if isinstance(value, bf.Schedule):
        return plain((value.times, value.evaluation_times))
    if isinstance(value, bf.Trajectory):
        return plain((value.times, value.xs, value.vs))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


STEP_CALLS = {  # name -> call on K + 1 step times
    "validate_times": lambda t: validate_times(t),
    "as_schedule": lambda t: as_schedule(t),
    "Schedule": lambda t: bf.Schedule(t),
    "custom_schedule": lambda t: bf.custom_schedule(t),
    "step_times_for": lambda t: step_times_for(t, "a sampler", "bossflow sample"),
    "schedule_times": lambda t: schedule_times(t),
    "euler": lambda t: bf.euler(MODEL, NOISE, t),
    "heun": lambda t: bf.heun(MODEL, NOISE, t),
    "rk4": lambda t: rk4(MODEL, NOISE, t),
    "sample_with": lambda t: sample_with(MODEL, NOISE, t),
    "sample": lambda t: sample(MODEL, t, 5, seed=1),
    "refine_schedule": lambda t: refine_schedule(MODEL, NOISE, t, steps=5, screen_steps=3, late_starts=()),
    "refit_last_step": lambda t: refit_last_step(MODEL, NOISE, bf.euler(MODEL, NOISE, GRID), t),
    "interpolate_times": lambda t: interpolate_times(t, 5),
    "ays.snap_to_grid": lambda t: ays_snap(t, GRID.times),
    "evolution.snap_to_grid": lambda t: evolution_snap(GRID.times, t),
    "flow_matching.time_grid": lambda t: fm.time_grid(t),
    "flow_matching.solve": lambda t: fm.solve(fm.to_flow_matching(MODEL), NOISE, t),
    "diffusers.schedule_to_sigmas": lambda t: bfd.schedule_to_sigmas(t),
    **{f"export_schedule {fmt}": (lambda f: lambda t: export_schedule(t, f))(fmt) for fmt in FORMATS},
}

GRID_CALLS = {  # name -> call on an (N + 1,) base grid
    "fine_trajectory": lambda g: bf.fine_trajectory(MODEL, NOISE, g),
    "batched_trajectory": lambda g: batched_trajectory(MODEL, NOISE, g, batch_size=5),
    "trajectory_batches": lambda g: list(trajectory_batches(MODEL, NOISE, g, batch_size=5)),
    "cost_matrix": lambda g: bf.cost_matrix(MODEL, NOISE, g),
    "bellman_schedules": lambda g: bf.bellman_schedules(bf.cost_matrix(MODEL, NOISE, GRID), g, [2, 3]),
    "gits_cost_matrix": lambda g: gits_cost_matrix(MODEL, NOISE, g),
    "ays_interval_costs": lambda g: ays_interval_costs(MODEL, NOISE, g),
    "global_error_paths": lambda g: global_error_paths(MODEL, NOISE, g, 3),
    "search": lambda g: search(MODEL, 2, g, NOISE, method="bellman"),
    **{f"SEARCHES[{name!r}]": (lambda n: lambda g: SEARCHES[n](MODEL, NOISE, g, [2, 3], **FAST.get(n, {})))(name)
       for name in SEARCHES},
}


@pytest.mark.parametrize("name", list(STEP_CALLS))
def test_step_times_in_every_form(name):
    if name == "flow_matching.solve":
        pytest.importorskip("flow_matching")
    call = STEP_CALLS[name]
    results = [plain(call(as_form(STEPS, form))) for form in FORMS]
    assert all(r == results[0] for r in results[1:])


@pytest.mark.parametrize("name", list(GRID_CALLS))
def test_base_grid_in_every_form(name):
    call = GRID_CALLS[name]
    results = [plain(call(as_form(GRID, form))) for form in FORMS]
    assert all(r == results[0] for r in results[1:])


@pytest.mark.parametrize("name", ["cost_matrix", "bellman_schedules", "fine_trajectory", "search"])
@pytest.mark.parametrize("bad, message", [
    ("0,1", "must be a Schedule, a tensor, a numpy array or a list of numbers, got str"),
    ({"times": [0, 1]}, "got dict"),
    ([0.0, 0.5, 0.5, 1.0], "strictly increasing"),
    (torch.tensor([0.0, float("nan"), 1.0]), "non-finite"),
    (np.array([0.1, 1.0]), "start at 0"),
])
def test_bad_grid_is_one_sentence(name, bad, message):
    with pytest.raises(ScheduleError, match=message) as info:
        GRID_CALLS[name](bad)
    text = str(info.value)
    assert "\n" not in text and text.endswith(".") and text.startswith("base grid")


@pytest.mark.parametrize("name", ["euler", "sample_with", "sample", "export_schedule diffusers", "flow_matching.time_grid"])
def test_bad_steps_are_one_sentence(name):
    with pytest.raises(ScheduleError, match="must start at 0") as info:
        STEP_CALLS[name](torch.tensor([0.2, 0.5, 1.0]))
    assert "\n" not in str(info.value)


def test_readme_call_with_a_schedule_as_grid():
    """The README's own call: a Schedule as the base grid of the cost matrix and of the DP."""
    grid = bf.uniform_schedule(8)
    cost = bf.cost_matrix(MODEL, NOISE, grid)
    assert cost.shape == (9, 9)
    assert bf.bellman_schedules(cost, grid, [4])[4].times.tolist() == bf.bellman_schedules(cost, grid.times, [4])[4].times.tolist()
