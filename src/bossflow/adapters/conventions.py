"""Plain torch models in another convention: time scale, direction and prediction type, declared once.

bossflow's contract (DESIGN.md): ``model(x, t, **cond) -> v`` with ``t`` in [0, 1], ``t = 0``
noise, ``t = 1`` data, and ``v = dx/dt``. :func:`wrap_velocity` turns a model trained in
another convention into that contract. Three options describe the foreign model:

* ``time_scale``: the model takes its own time ``s`` (see ``direction``) multiplied by this
  (``1`` for times in [0, 1], ``1000`` for DDPM-style timesteps in [0, 1000]).
* ``direction``: ``"noise_to_data"`` if the model's time 0 is noise (``s = t``, as in
  rectified flow, Meta's ``flow_matching`` and ``torchcfm``); ``"data_to_noise"`` if its time
  0 is data (``s = 1 - t``, diffusers' ``sigma``).
* ``prediction``: what the model outputs. ``"velocity"``: ``dx/ds`` in its own time, so
  ``v = out`` (noise to data) or ``v = -out`` (data to noise: diffusers' ``noise - data``).
  ``"noise"``: the noise ``x_0``; ``"data"``: the data ``x_1``. These two assume the linear
  path ``x_t = (1 - t) x_0 + t x_1`` (rectified flow / CondOT), on which ``v = x_1 - x_0``:

      noise prediction:  x_0 = x_t - t v        =>  v = (x_t - x_0) / t
      data prediction:   x_1 = x_t + (1 - t) v  =>  v = (x_1 - x_t) / (1 - t)

  Neither depends on ``direction`` beyond the time fed to the model.

Singular points. Noise prediction carries no information about ``v`` at ``t = 0`` (there
``x_t = x_0``: predicting the noise is trivial) and the formula divides by ``t``; data
prediction is singular at ``t = 1`` (``x_t = x_1``) and divides by ``1 - t``. Euler starts
every schedule at ``t = 0``, so a noise-prediction model is always asked there. The wrapper
evaluates such a model at the nearest safe time instead, ``max(t, t_eps)`` for noise
prediction and ``min(t, 1 - t_eps)`` for data prediction, and converts with that same time:
for a perfect model this returns the true velocity at ``t_eps`` (resp. ``1 - t_eps``), an
``O(t_eps)`` change of time. Near its singular end such a model's error is multiplied by
``1 / t`` (resp. ``1 / (1 - t)``), so few-step schedules for it should not lean on that end.
Velocity models have no singular point and are evaluated at ``t`` as given.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

from torch import Tensor

from ..core.errors import ModelSpecError
from ..core.velocity import broadcast_time
from ._wrapper import ModelWrapper

Direction = Literal["noise_to_data", "data_to_noise"]
Prediction = Literal["velocity", "noise", "data"]
DIRECTIONS: tuple[str, ...] = ("noise_to_data", "data_to_noise")
PREDICTIONS: tuple[str, ...] = ("velocity", "noise", "data")


def check_convention(time_scale: float, direction: str, prediction: str, t_eps: float) -> None:
    """Raise :class:`ModelSpecError` unless the options name a known convention."""
    if direction not in DIRECTIONS:
        raise ModelSpecError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}.")
    if prediction not in PREDICTIONS:
        raise ModelSpecError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}.")
    if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
        raise ModelSpecError(f"time_scale must be a positive number (1 or 1000, say), got {time_scale!r}.")
    if not (isinstance(t_eps, (int, float)) and 0 < t_eps < 0.5):
        raise ModelSpecError(f"t_eps must be a number in (0, 0.5), got {t_eps!r}.")


def safe_time(t: Tensor, prediction: str, t_eps: float) -> Tensor:
    """Move ``t`` ``(B,)`` off the singular end of ``prediction`` (see the module docstring)."""
    if prediction == "noise":
        return t.clamp(min=t_eps)
    if prediction == "data":
        return t.clamp(max=1.0 - t_eps)
    return t


def model_time(t: Tensor, direction: str, time_scale: float) -> Tensor:
    """The time a foreign model expects, ``(B,)``, for bossflow times ``t`` ``(B,)``."""
    s = t if direction == "noise_to_data" else 1.0 - t
    return s * time_scale


def to_velocity(out: Tensor, x: Tensor, t: Tensor, prediction: str, direction: str) -> Tensor:
    """Convert a foreign model's output into bossflow's velocity ``dx/dt``.

    Args:
        out: ``(B, *shape)`` model output (velocity in the model's own time, noise or data).
        x: ``(B, *shape)`` states.
        t: ``(B,)`` bossflow times the model was evaluated at (already off any singular end).
        prediction: ``"velocity"``, ``"noise"`` or ``"data"``.
        direction: ``"noise_to_data"`` or ``"data_to_noise"``.

    Returns:
        ``(B, *shape)`` velocity in the dtype of ``x``.
    """
    out = out.to(x.dtype)
    if prediction == "velocity":
        return out if direction == "noise_to_data" else -out
    tb = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    if prediction == "noise":
        return (x - out) / tb
    return (out - x) / (1.0 - tb)


class ConventionVelocity(ModelWrapper):
    """A model of a declared convention, seen as a bossflow velocity model (see :func:`wrap_velocity`).

    Attributes:
        model: the wrapped model, called as ``model(x, time, **cond)``.
        time_scale, direction, prediction, t_eps: the declared convention.
        sample_shape: shape of one sample, when known.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        *,
        time_scale: float = 1.0,
        direction: Direction = "noise_to_data",
        prediction: Prediction = "velocity",
        t_eps: float = 1e-3,
        sample_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, "the model to wrap", sample_shape)
        check_convention(time_scale, direction, prediction, t_eps)
        self.time_scale = float(time_scale)
        self.direction = direction
        self.prediction = prediction
        self.t_eps = float(t_eps)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``(B, *shape)`` at states ``x`` ``(B, *shape)`` and bossflow times ``t`` ``(B,)``."""
        t = safe_time(broadcast_time(t, x), self.prediction, self.t_eps)
        out = self.model(x, model_time(t, self.direction, self.time_scale), **cond)
        return to_velocity(out, x, t, self.prediction, self.direction)

    def extra_repr(self) -> str:
        return f"time_scale={self.time_scale:g}, direction={self.direction}, prediction={self.prediction}"


def wrap_velocity(
    model: Callable[..., Tensor],
    time_scale: float = 1.0,
    direction: Direction = "noise_to_data",
    prediction: Prediction = "velocity",
    *,
    t_eps: float = 1e-3,
    sample_shape: Sequence[int] | None = None,
) -> ConventionVelocity:
    """Wrap ``model(x, time, **cond)`` of a declared convention as a bossflow velocity model.

    The result is an ``nn.Module`` (so ``.to``, ``.double``, ``cost_matrix`` and ``straighten``
    work on it) calling ``model`` positionally; give a lambda for other signatures, e.g.
    ``wrap_velocity(lambda x, s: net(s, x), 1000, "data_to_noise", "noise")``.

    Args:
        model: the foreign model (``nn.Module`` or function).
        time_scale: factor on the model's time (1 for [0, 1], 1000 for [0, 1000]).
        direction: ``"noise_to_data"`` (model time 0 is noise) or ``"data_to_noise"`` (time 0 is data).
        prediction: ``"velocity"``, ``"noise"`` or ``"data"`` (the last two on the linear path).
        t_eps: distance kept from the singular end of noise or data prediction (module docstring).
        sample_shape: shape of one sample; default the model's ``sample_shape`` attribute, if any.

    Returns:
        A velocity model ``v(x, t, **cond)`` (0 = noise, 1 = data).

    Raises:
        ModelSpecError: an option is not one of the documented values.

    Example:
        >>> import torch, bossflow as bf
        >>> flow = bf.models.gmm_2d()
        >>> eps_model = lambda x, s: x - (s / 1000)[:, None] * flow(x, s / 1000)
        >>> wrapped = wrap_velocity(eps_model, time_scale=1000, prediction="noise")
        >>> x, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.3, dtype=torch.float64)
        >>> torch.allclose(wrapped(x, t), flow(x, t))
        True
    """
    return ConventionVelocity(
        model, time_scale=time_scale, direction=direction, prediction=prediction, t_eps=t_eps, sample_shape=sample_shape
    )
