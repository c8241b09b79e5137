"""Schedule searches under one interface: baselines, BOSS, and the searches that go beyond it.

Every method is a function

    method_schedules(model, noise, grid, nfes, *, cond=None, provenance=None, **options)
        -> {nfe: Schedule}

that finds schedules for several budgets at once (the DPs get every budget from one pass),
registered by name in :data:`SEARCHES`. :func:`search` is the one-budget form. The shared
arguments mean the same in every search (each search's docstring adds only what is its own):

* ``model``: velocity model ``model(x, t, **cond)``, ``t`` of shape ``(rows,)``; ``t = 0`` is noise, ``t = 1`` data;
* ``noise``: ``(B, *shape)`` search noises at ``t = 0``;
* ``grid``: ``(N + 1,)`` base grid times from 0 to 1, which grid searches pick their times from;
* ``nfes``: step budgets, each in ``1..N``;
* ``cond``: conditioning for every model call; tensors whose first dimension is ``B`` follow their samples;
* ``provenance``: metadata stored in every schedule (model id, seed, ...); the search's own keys win on clashes.

Every search raises :class:`~bossflow.CostMatrixError` for an empty or impossible budget list
(a budget outside ``1..N``) and :class:`~bossflow.BossflowError` for bad noise, grid or options.

``auto`` (:func:`bossflow.search.auto.auto_schedules`), the default of ``bossflow schedule``,
combines the others: it fits uniform, BOSS, OLSS and a short refinement on part of the
noises and returns, per budget, the one that does best on the rest, refitted on all.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ..core.errors import BossflowError
from ..core.schedules import Schedule
from .auto import auto_schedules, refit_last_step
from .ays import ays_schedules
from .baselines import boss_schedules, family_search
from .evolution import evolution_schedules
from .gits import gits_schedules
from .global_dp import global_error_paths, global_error_schedules
from .olss import olss_schedules, olss_solve
from .refine import refine_schedule, refined_schedules
from .registry import SEARCHES, WITH_PROGRESS
from .sampling import sample, sample_with

SEARCHES.update({
    "uniform": family_search("uniform"),
    "edm": family_search("edm"),
    "shift": family_search("shift"),
    "bellman": boss_schedules,
    "global-dp": global_error_schedules,
    "gits": gits_schedules,
    "ays": ays_schedules,
    "evolution": evolution_schedules,
    "olss": olss_schedules,
    "refined": refined_schedules,
    "auto": auto_schedules,
})


def search(
    model: Callable[..., Tensor],
    nfe: int,
    grid: Any,
    noise: Tensor,
    method: str = "bellman",
    **options: Any,
) -> Schedule:
    """Find one ``nfe``-step schedule with the search ``method`` (a key of :data:`SEARCHES`).

    Args:
        model: velocity model ``model(x, t, **cond)``.
        nfe: step budget.
        grid: ``(N + 1,)`` base grid times, 0 to 1.
        noise: ``(B, *shape)`` search noises.
        method: search name.
        options: passed to the method (``cond``, ``provenance`` and method options).

    Example:
        >>> import torch, bossflow as bf
        >>> noise = bf.gaussian_noise(32, (2,), dtype=torch.float64)
        >>> s = search(bf.models.gmm_2d(), 3, bf.uniform_schedule(20).times, noise, method="global-dp")
        >>> s.nfe, s.meta["method"]
        (3, 'global-dp')
    """
    if method not in SEARCHES:
        raise BossflowError(f"unknown search method {method!r}; choose one of {', '.join(SEARCHES)}.")
    return SEARCHES[method](model, noise, grid, [nfe], **options)[nfe]


__all__ = [
    "SEARCHES",
    "WITH_PROGRESS",
    "auto_schedules",
    "ays_schedules",
    "boss_schedules",
    "evolution_schedules",
    "gits_schedules",
    "global_error_paths",
    "global_error_schedules",
    "olss_schedules",
    "olss_solve",
    "refine_schedule",
    "refined_schedules",
    "refit_last_step",
    "sample_with",
    "sample",
    "search",
]
