"""The import paths of bossflow before its layers had folders, kept working.

``import bossflow.cost`` (or ``from bossflow.schedules import Schedule``) gives the very module
that now lives at ``bossflow.core.cost``: the same object, so attributes set on one are seen
through the other. ``python -m bossflow.classifier`` runs what the old module's ``__main__``
ran. Nothing is imported until an old path is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED: dict[str, str] = {
    "bossflow.errors": "bossflow.core.errors",
    "bossflow._io": "bossflow.core._io",
    "bossflow.schedules": "bossflow.core.schedules",
    "bossflow.noise": "bossflow.core.noise",
    "bossflow.solvers": "bossflow.core.solvers",
    "bossflow.cost": "bossflow.core.cost",
    "bossflow.bellman": "bossflow.core.bellman",
    "bossflow.metrics": "bossflow.core.metrics",
    "bossflow.distributed": "bossflow.core.distributed",
    "bossflow.checkpoints": "bossflow.models.model_dir",
    "bossflow.loading": "bossflow.models.loading",
    "bossflow.pairs": "bossflow.training.pairs",
    "bossflow.straighten": "bossflow.training.straighten",
    "bossflow.teachers": "bossflow.training.teachers",
    "bossflow.classifier": "bossflow.evaluation.classifier",
    "bossflow.evaluate": "bossflow.evaluation.evaluate",
    "bossflow.bench": "bossflow.evaluation.bench",
    "bossflow.figures": "bossflow.evaluation.figures",
    "bossflow.demo": "bossflow.evaluation.demo",
    "bossflow.sample": "bossflow.search.sampling",
}
"""Old module path -> where the module lives now."""

RUN_AS_MAIN: dict[str, str] = {"bossflow.classifier": "bossflow.cli.classifier"}
"""Old paths that were run with ``python -m``: the module whose code now does that."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, main: str) -> None:
        self.target, self.main = target, main

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target ran when it was imported; only its ``__spec__``, which importing overwrote, is put back."""
        module.__spec__ = self.target_spec

    def get_code(self, fullname: str):  # used by ``python -m`` (runpy)
        spec = importlib.util.find_spec(self.main)
        return spec.loader.get_code(self.main)


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED:
            return None
        loader = _AliasLoader(MOVED[fullname], RUN_AS_MAIN.get(fullname, MOVED[fullname]))
        return importlib.machinery.ModuleSpec(fullname, loader)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
