"""The velocity-model contract every layer relies on, and the helpers that only need it.

Time convention: ``t = 0`` is noise ``x_0 ~ N(0, I)``, ``t = 1`` is data, and a model
gives the velocity of ``dx/dt = v(x, t)``. Every solver and search in bossflow calls
``model(x, t, **cond)`` with ``x`` of shape ``(B, *shape)`` and ``t`` a float tensor of
shape ``(B,)`` in the dtype of ``x``; nothing else is assumed of a model.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class VelocityModel(Protocol):
    """Anything callable as ``model(x, t, **cond) -> v``.

    Args:
        x: ``(B, *shape)`` states.
        t: ``(B,)`` times in [0, 1] (0 = noise, 1 = data), same dtype as ``x``.
        cond: conditioning passed through unchanged (class labels, embeddings, ...).

    Returns:
        ``(B, *shape)`` velocities ``dx/dt``.
    """

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor: ...


def broadcast_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Return ``t`` as a ``(B,)`` tensor on the device and in the dtype of ``x``.

    Accepts a Python float, a 0-dim tensor (as Meta's ``flow_matching`` passes) or a ``(B,)`` tensor.
    """
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def model_dtype(model: Callable[..., Tensor]) -> torch.dtype:
    """The dtype to run a model in: its parameters' (trained networks), else float64 (exact flows, functions)."""
    if isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        if params:
            return params[0].dtype
    return torch.float64
