"""What every adapter's wrapper module starts with: the wrapped callable and the sample shape it declares."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from ..core.errors import ModelSpecError


class ModelWrapper(nn.Module):
    """An ``nn.Module`` holding ``model`` (so ``.to(device)`` and state dicts reach it) and its ``sample_shape``.

    Args:
        model: the callable being wrapped.
        what: what ``model`` is, for the error message (``"the torchcfm model"``).
        sample_shape: shape of one sample; default the model's own ``sample_shape``, if any.

    Raises:
        ModelSpecError: ``model`` is not callable.
    """

    def __init__(self, model: Callable[..., Tensor], what: str, sample_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise ModelSpecError(f"{what} must be callable, got {type(model).__name__}.")
        self.model = model
        shape = sample_shape if sample_shape is not None else getattr(model, "sample_shape", None)
        if shape is not None:
            self.sample_shape = tuple(int(s) for s in shape)
