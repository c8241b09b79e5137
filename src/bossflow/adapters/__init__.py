"""Adapters: models and samplers of Meta's ``flow_matching``, ``torchcfm`` and ``diffusers`` in bossflow.

Each adapter converts at the boundary only (DESIGN.md): inside bossflow a model is
``model(x, t, **cond) -> v`` with ``t = 0`` noise and ``t = 1`` data.

* :mod:`bossflow.adapters.flow_matching`: ``wrap``, ``to_flow_matching``, ``time_grid``, ``solve``;
* :mod:`bossflow.adapters.torchcfm`: ``wrap`` (``(t, x)`` or concatenated-time models), ``to_torchcfm``;
* :mod:`bossflow.adapters.diffusers`: ``schedule_to_sigmas``, ``configure_scheduler``, ``wrap`` (transformer + conditioning);
* :mod:`bossflow.adapters.conventions`: ``wrap_velocity`` for any model of a declared time scale,
  direction and prediction type.

Importing them needs none of the three libraries; a function that does needs it raises a
:class:`~bossflow.BossflowError` naming ``pip install bossflow[adapters]``.
"""

from . import conventions, diffusers, flow_matching, torchcfm
from .conventions import wrap_velocity

__all__ = ["conventions", "diffusers", "flow_matching", "torchcfm", "wrap_velocity"]
