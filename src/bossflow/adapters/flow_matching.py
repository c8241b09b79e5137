"""Meta's ``flow_matching`` library: its velocity models in bossflow, and our schedules in its ``ODESolver``.

``flow_matching`` uses bossflow's time convention (``t = 0`` noise, ``t = 1`` data, velocity
``dx/dt``) and calls every model as ``model(x=x, t=t, **extras)``: its ``ODESolver`` passes a
0-dim ``t``, its training loops a ``(B,)`` one. So the adapter only changes the call:

* :func:`wrap`: a ``flow_matching`` model (``ModelWrapper`` or any module taking ``x=``, ``t=``)
  as a bossflow velocity model, for ``cost_matrix``, the searches and ``straighten``;
* :func:`to_flow_matching`: a bossflow velocity model as a model ``ODESolver`` can call;
* :func:`time_grid` / :func:`solve`: a bossflow schedule as the ``time_grid`` of
  ``ODESolver.sample(..., method="euler", step_size=None)``, which then takes exactly K Euler
  steps and evaluates the model at ``times[:-1]``, i.e. the same K NFE as ``bossflow.euler``.

Only :func:`solve` needs ``flow_matching`` installed. Models trained with noise or data
prediction on the CondOT path go through :func:`bossflow.adapters.conventions.wrap_velocity`,
e.g. ``wrap_velocity(lambda x, t, **c: model(x=x, t=t, **c), prediction="data")``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core.velocity import broadcast_time
from ..core.schedules import Schedule, step_times_for
from ._cond import Conditioning
from ._wrapper import ModelWrapper
from ._optional import require


class FlowMatchingVelocity(ModelWrapper):
    """A ``flow_matching`` model ``model(x=x, t=t, **extras)`` seen as a bossflow velocity model.

    Attributes:
        model: the wrapped model.
        extras: keyword arguments passed to every call (a class label, a text embedding, ...), tensors
            held as buffers; per-call conditioning overrides them.
        sample_shape: shape of one sample, when known.
    """

    def __init__(
        self, model: Callable[..., Tensor], extras: dict | None = None, sample_shape: Sequence[int] | None = None
    ) -> None:
        super().__init__(model, "the flow_matching model", sample_shape)
        self.extras = Conditioning(extras)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``(B, *shape)`` at ``x`` ``(B, *shape)`` and times ``t`` ``(B,)`` (passed on as ``(B,)``)."""
        return self.model(x=x, t=broadcast_time(t, x), **{**self.extras.as_dict(), **cond})


class BossflowForFlowMatching(ModelWrapper):
    """A bossflow velocity model callable as ``model(x=x, t=t, **extras)`` with a 0-dim or ``(B,)`` ``t``.

    ``flow_matching``'s ``ODESolver`` accepts any such callable (a ``ModelWrapper`` is not required).
    """

    def __init__(self, model: Callable[..., Tensor]) -> None:
        super().__init__(model, "the bossflow model")

    def forward(self, x: Tensor, t: Tensor | float, **extras: Any) -> Tensor:
        return self.model(x, broadcast_time(t, x), **extras)


def wrap(
    model: Callable[..., Tensor], *, extras: dict | None = None, sample_shape: Sequence[int] | None = None
) -> Callable[..., Tensor]:
    """Wrap a ``flow_matching`` velocity model as a bossflow velocity model ``v(x, t, **cond)``.

    Args:
        model: a ``flow_matching.utils.ModelWrapper`` or any module called as ``model(x=x, t=t, **extras)``
            that returns the velocity (CondOT or any other affine path: the ODE is the same).
        extras: fixed keyword arguments for every call (what ``ODESolver.sample(**model_extras)`` would pass).
        sample_shape: shape of one sample; default the model's ``sample_shape`` attribute, if any.

    Returns:
        A :class:`FlowMatchingVelocity` (an ``nn.Module``); a model made by :func:`to_flow_matching`
        is unwrapped instead.
    """
    if isinstance(model, BossflowForFlowMatching) and not extras and sample_shape is None:
        return model.model
    return FlowMatchingVelocity(model, extras=extras, sample_shape=sample_shape)


def to_flow_matching(model: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """A bossflow velocity model (a straightened one, say) as a model for ``flow_matching``'s ``ODESolver``.

    A model made by :func:`wrap` (without extras) is unwrapped instead.
    """
    if isinstance(model, FlowMatchingVelocity) and len(model.extras) == 0:
        return model.model
    return BossflowForFlowMatching(model)


def time_grid(
    schedule: Schedule | Tensor | np.ndarray | Sequence[float],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A schedule as the ``time_grid`` of ``ODESolver.sample(..., method="euler", step_size=None)``.

    With ``step_size=None`` the fixed-grid Euler solver of ``torchdiffeq`` (which ``ODESolver`` calls)
    steps exactly from one grid time to the next, evaluating the model at ``times[:-1]``: K NFE.
    (``torchdiffeq`` casts the grid to the dtype of ``x_init``.)

    Args:
        schedule: a :class:`~bossflow.Schedule` or its K + 1 times.
        device: device of the returned tensor (give ``x_init.device``).
        dtype: dtype of the returned tensor.

    Returns:
        ``(K + 1,)`` times from 0 to 1.

    Raises:
        ScheduleError: the times are malformed, or the schedule carries evaluation times.

    Example:
        >>> import bossflow as bf
        >>> time_grid(bf.Schedule([0.0, 0.3, 1.0])).tolist()
        [0.0, 0.3, 1.0]
    """
    times = step_times_for(schedule, "flow_matching's ODESolver",
                           "bossflow.euler(bossflow.adapters.flow_matching.wrap(model), x0, schedule)")
    return torch.tensor(times, dtype=dtype, device=device)


def solve(
    model: Callable[..., Tensor],
    x_init: Tensor,
    schedule: Schedule | Tensor | np.ndarray | Sequence[float],
    *,
    return_intermediates: bool = False,
    enable_grad: bool = False,
    **model_extras: Any,
) -> Tensor:
    """Sample with ``flow_matching``'s ``ODESolver`` (Euler) along a bossflow schedule: K NFE.

    Args:
        model: a ``flow_matching`` model, called ``model(x=x, t=t, **model_extras)``; a bossflow model
            goes through :func:`to_flow_matching` first.
        x_init: ``(B, *shape)`` noise at ``t = 0``.
        schedule: a :class:`~bossflow.Schedule` (without evaluation times) or its K + 1 times.
        return_intermediates: return all K + 1 states ``(K + 1, B, *shape)`` instead of the last.
        enable_grad: keep the autograd graph.
        **model_extras: passed to every model call.

    Returns:
        ``(B, *shape)`` samples at ``t = 1`` (or the states at every schedule time).

    Raises:
        BossflowError: ``flow_matching`` is not installed.
        ScheduleError: the schedule carries evaluation times.
    """
    grid = time_grid(schedule, device=x_init.device)
    solver_module = require("flow_matching.solver", "bossflow.adapters.flow_matching.solve")
    solver = solver_module.ODESolver(velocity_model=model)
    return solver.sample(
        x_init=x_init,
        step_size=None,
        method="euler",
        time_grid=grid,
        return_intermediates=return_intermediates,
        enable_grad=enable_grad,
        **model_extras,
    )
