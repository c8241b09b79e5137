"""The searches without a search of their own, behind the search interface: the baseline families and BOSS.

``uniform``, ``edm`` and ``shift`` ignore the model and noise; ``bellman`` is the paper's
search: the BOSS cost matrix of ``noise`` on ``grid`` (:func:`bossflow.cost_matrix`), then
the Bellman DP for every budget at once. Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ..core.bellman import bellman_schedules
from ..core.cost import cost_matrix
from ..core.schedules import SCHEDULE_FAMILIES, Schedule
from .registry import SearchFunction


def family_search(name: str) -> SearchFunction:
    """The search interface around the baseline family ``name`` (a key of ``SCHEDULE_FAMILIES``)."""

    def family_schedules(
        model: Any, noise: Tensor, grid: Any, nfes: list[int], *, cond: dict | None = None,
        provenance: dict | None = None, **options: Any,
    ) -> dict[int, Schedule]:
        """A baseline family: no search, model and noise unused."""
        return {int(k): SCHEDULE_FAMILIES[name](int(k), **options).with_meta(**(provenance or {}), method=name) for k in nfes}

    family_schedules.__name__ = f"{name}_schedules"
    return family_schedules


def boss_schedules(
    model: Callable[..., Tensor], noise: Tensor, grid: Any, nfes: list[int], *,
    cond: dict | None = None, provenance: dict | None = None,
    **options: Any,
) -> dict[int, Schedule]:
    """BOSS (Nguyen et al., ICLR 2024): cost matrix on ``grid`` from ``noise``, then the Bellman DP.

    ``options`` go to :func:`bossflow.cost_matrix` (``batch_size``, ``substeps``, ``checkpoint``, ...).
    """
    cost = cost_matrix(model, noise, grid, cond=cond, **options)
    meta = {**(provenance or {}), "samples": int(noise.shape[0])}
    return bellman_schedules(cost, grid, list(nfes), **meta)
