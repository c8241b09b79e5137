"""Fixed keyword conditioning kept inside a wrapper module."""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..core.errors import ModelSpecError


class Conditioning(nn.Module):
    """Keyword arguments kept with a model: tensors become buffers, so ``.to(device)`` moves them and
    they enter the state dict (and so bossflow's model fingerprint: a cost-matrix cache made for
    one prompt is not reused for another); other values are kept as they are.
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._keys: list[str] = []
        self._plain: dict[str, Any] = {}
        for key, value in (values or {}).items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ModelSpecError(f"conditioning names must be keyword-argument names, got {key!r}.")
            if isinstance(value, Tensor):
                try:
                    self.register_buffer(key, value)
                except KeyError:
                    raise ModelSpecError(f"{key!r} cannot name a conditioning tensor; rename it.") from None
            else:
                self._plain[key] = value
            self._keys.append(key)

    def as_dict(self) -> dict[str, Any]:
        """The conditioning as keyword arguments (tensors on the module's device and dtype)."""
        return {k: self._plain[k] if k in self._plain else getattr(self, k) for k in self._keys}

    def keys(self) -> list[str]:
        """The names of the keyword arguments."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def extra_repr(self) -> str:
        return ", ".join(self._keys)
