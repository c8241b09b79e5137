"""Lazy imports of the optional libraries the adapters talk to."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..core.errors import BossflowError

# import name -> what to install
_PACKAGES = {
    "flow_matching": "flow_matching",
    "torchcfm": "torchcfm",
    "diffusers": "diffusers",
    "peft": "peft",
}
_EXTRAS = {"peft": "lora"}
"""Packages with an extra of their own (the rest come with ``bossflow[adapters]``)."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"diffusers"``) or raise a :class:`BossflowError` saying what to install.

    Args:
        module: dotted module name; its top-level package names the library.
        feature: what needed it, for the message (e.g. ``"bossflow.adapters.diffusers.configure_scheduler"``).
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = _PACKAGES.get(top, top)
        extra = _EXTRAS.get(top, "adapters")
        raise BossflowError(
            f"{feature} needs the {package} package ({exc}); install it with `pip install {package}` "
            f"(or `pip install bossflow[{extra}]`)."
        ) from None
