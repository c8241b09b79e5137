"""torchcfm models in bossflow, and bossflow models where torchcfm code expects its ``(t, x)`` convention.

torchcfm uses bossflow's time convention (``t = 0`` noise, ``t = 1`` data, velocity ``dx/dt``;
``ConditionalFlowMatcher`` regresses ``x_1 - x_0``) but two call conventions:

* ``"tx"``: ``model(t, x, **kwargs)``, time first, as ``torchcfm.models.unet.UNetModel.forward(t, x, y=None)``,
  the vector fields given to ``torchdyn.core.NeuralODE`` and ``torchdiffeq.odeint(func, x0, t)``;
* ``"concat"``: ``model(torch.cat([x, t[:, None]], 1))`` on flat ``(B, D)`` data, as
  ``torchcfm.models.MLP(dim, time_varying=True)`` is trained in torchcfm's 2-D examples
  (``torchcfm.utils.torch_wrapper`` turns it into a ``"tx"`` module for torchdyn).

:func:`wrap` makes a bossflow velocity model of either; :func:`to_torchcfm` gives a bossflow
model the ``(t, x)`` call, for ``torchdiffeq.odeint`` (``method="euler"`` with ``t`` = our
times takes exactly our K steps) or ``torchdyn``'s ``NeuralODE(..., solver="euler")``.
Neither needs torchcfm installed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from ..core.errors import ModelSpecError
from ..core.velocity import broadcast_time
from ._cond import Conditioning
from ._wrapper import ModelWrapper

Call = Literal["tx", "concat"]
CALLS: tuple[str, ...] = ("tx", "concat")


def _is_torchcfm_mlp(model: Any) -> bool:
    module = sys.modules.get("torchcfm.models.models")  # a torchcfm model exists only if torchcfm was imported
    return module is not None and isinstance(model, getattr(module, "MLP", ()))


def _is_torch_wrapper(model: Any) -> bool:
    module = sys.modules.get("torchcfm.utils")
    return module is not None and isinstance(model, getattr(module, "torch_wrapper", ()))


class TorchCFMVelocity(ModelWrapper):
    """A torchcfm-style model seen as a bossflow velocity model (see :func:`wrap`).

    Attributes:
        model: the wrapped model.
        call: ``"tx"`` or ``"concat"``.
        scalar_time: whether a ``"tx"`` model gets a 0-dim time (one call per distinct time in the batch).
        sample_shape: shape of one sample, when known.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        call: Call = "tx",
        *,
        scalar_time: bool = False,
        sample_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, "the torchcfm model", sample_shape)
        if call not in CALLS:
            raise ModelSpecError(f"call must be one of {', '.join(CALLS)}, got {call!r}.")
        if scalar_time and call != "tx":
            raise ModelSpecError("scalar_time applies to call='tx' models only.")
        self.call = call
        self.scalar_time = bool(scalar_time)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``(B, *shape)`` at ``x`` ``(B, *shape)`` and times ``t`` ``(B,)``."""
        t = broadcast_time(t, x)
        if self.call == "concat":
            flat = x.reshape(x.shape[0], -1)
            return self.model(torch.cat([flat, t[:, None]], dim=1), **cond).reshape(x.shape)
        if not self.scalar_time:
            return self.model(t, x, **cond)
        # One call per distinct time (solvers give one time per batch; straightening gives many).
        values, inverse = torch.unique(t, return_inverse=True)
        if values.numel() == 1:
            return self.model(values[0], x, **cond)
        out = torch.empty_like(x)
        for k, value in enumerate(values):
            rows = (inverse == k).nonzero().squeeze(1)
            out[rows] = self.model(value, x[rows], **_rows(cond, rows, x.shape[0])).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"call={self.call}, scalar_time={self.scalar_time}"


def _rows(cond: dict, rows: Tensor, n: int) -> dict:
    return {k: v[rows] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n else v for k, v in cond.items()}


class BossflowForTorchCFM(ModelWrapper):
    """A bossflow velocity model with torchcfm's ``forward(t, x, *args, **kwargs)``.

    ``t`` may be 0-dim (``torchdiffeq``, ``torchdyn``) or ``(B,)``. Like torchcfm's
    ``torch_wrapper``, extra positional and keyword arguments (torchdyn's ``args``) are
    ignored; fixed conditioning is given once, as ``cond``.
    """

    def __init__(self, model: Callable[..., Tensor], cond: dict | None = None) -> None:
        super().__init__(model, "the bossflow model")
        self.cond = Conditioning(cond)

    def forward(self, t: Tensor | float, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.model(x, broadcast_time(t, x), **self.cond.as_dict())


def wrap(
    model: Callable[..., Tensor],
    *,
    call: Call | None = None,
    scalar_time: bool = False,
    sample_shape: Sequence[int] | None = None,
) -> Callable[..., Tensor]:
    """Wrap a torchcfm-style model as a bossflow velocity model ``v(x, t, **cond)``.

    Args:
        model: ``model(t, x, **cond)`` (``call="tx"``) or ``model(cat([x, t[:, None]], 1))`` (``call="concat"``).
        call: the call convention; default ``"concat"`` for ``torchcfm.models.MLP``, else ``"tx"``.
            A ``torchcfm.utils.torch_wrapper`` is unwrapped to its MLP (its ``t.repeat`` only takes a 0-dim time).
        scalar_time: give a ``"tx"`` model a 0-dim time, as torchdyn does (one call per distinct time
            in the batch); default a ``(B,)`` time, as ``ConditionalFlowMatcher`` training does.
        sample_shape: shape of one sample; default the model's ``sample_shape`` attribute, if any.

    Returns:
        A :class:`TorchCFMVelocity` (an ``nn.Module``); a model made by :func:`to_torchcfm` is unwrapped instead.

    Raises:
        ModelSpecError: ``call`` is unknown, or ``scalar_time`` is asked of a ``"concat"`` model.
    """
    if isinstance(model, BossflowForTorchCFM) and len(model.cond) == 0 and call in (None, "tx") and sample_shape is None:
        return model.model
    if call is None and _is_torch_wrapper(model):
        model, call = model.model, "concat"
    if call is None:
        call = "concat" if _is_torchcfm_mlp(model) else "tx"
    return TorchCFMVelocity(model, call, scalar_time=scalar_time, sample_shape=sample_shape)


def to_torchcfm(model: Callable[..., Tensor], cond: dict | None = None) -> nn.Module:
    """A bossflow velocity model as a torchcfm/torchdyn/torchdiffeq vector field ``f(t, x)``.

    Args:
        model: bossflow velocity model ``model(x, t, **cond)``.
        cond: fixed conditioning for every call.

    Returns:
        An ``nn.Module`` with ``forward(t, x, *args, **kwargs)``.

    Example:
        >>> import torch, torchdiffeq, bossflow as bf
        >>> flow = bf.models.gmm_2d()
        >>> x0 = torch.randn(5, 2, dtype=torch.float64)
        >>> schedule = bf.Schedule([0.0, 0.4, 0.9, 1.0])
        >>> x1 = torchdiffeq.odeint(to_torchcfm(flow), x0, torch.tensor(schedule.times), method="euler")[-1]
        >>> torch.allclose(x1, bf.euler(flow, x0, schedule))
        True
    """
    return BossflowForTorchCFM(model, cond)
