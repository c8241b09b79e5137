"""Resolving a model specification (a preset name or ``module:attribute``) into a velocity model."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.errors import ModelSpecError
from .networks import PRESETS


@dataclass
class LoadedModel:
    """A resolved model.

    Attributes:
        model: the velocity model ``model(x, t, **cond)`` (0 = noise, 1 = data).
        model_id: how the model was named (stored in schedule provenance and cost-matrix checkpoints).
        sample_shape: shape of one sample, when the model declares it (``sample_shape`` attribute).
    """

    model: Callable[..., torch.Tensor]
    model_id: str
    sample_shape: tuple[int, ...] | None


def _import_target(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ModelSpecError(
            f"model {spec!r} is neither a preset ({', '.join(PRESETS)}), a shipped teacher, a model directory, "
            "nor of the form module:attribute."
        )
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ModelSpecError(f"model file {path} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(f"_bossflow_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # user code: report, don't trace back
            raise ModelSpecError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelSpecError(f"cannot import module {module_name!r} for model {spec!r}: {exc}.") from None
        except Exception as exc:
            raise ModelSpecError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"{module_name!r} has no attribute {attr!r} (model {spec!r}).")
        obj = getattr(obj, part)
    return obj


# ``--model LIBRARY:module:attribute``: the attribute is a model in that library's convention,
# wrapped by ``bossflow.adapters.LIBRARY.wrap`` with its defaults.
ADAPTER_PREFIXES = ("flow_matching", "torchcfm")


def load_model(spec: str) -> LoadedModel:
    """Resolve ``spec`` into a velocity model.

    Accepted forms:

    * a preset name: ``gmm-2d``, ``gmm-64d`` (exact mixture flows);
    * a shipped trained teacher (``digits``, ``gmm-2d-teacher``) or a model directory
      (``config.json`` + ``model.safetensors``, as written by ``bossflow teacher``);
    * ``package.module:attribute`` or ``path/to/file.py:attribute``, where the attribute is an
      ``nn.Module`` or callable velocity model, or a zero-argument factory (function or
      class) returning one. A factory is a class, or a function whose parameters all have
      defaults; a function with required parameters is used as the velocity model itself.
      A factory may return a model wrapped by :mod:`bossflow.adapters` (any library, any options);
    * ``flow_matching:module:attribute`` or ``torchcfm:path/to/file.py:attribute``: the same, naming a
      model in that library's convention (or a factory of one), wrapped with
      ``bossflow.adapters.flow_matching.wrap`` / ``bossflow.adapters.torchcfm.wrap`` and their defaults.

    Raises:
        ModelSpecError: the spec cannot be resolved, or does not give a callable model.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("give a model: a preset name or module:attribute.")
    spec = spec.strip()
    if spec in PRESETS:
        model = PRESETS[spec]()
        return LoadedModel(model, spec, tuple(model.sample_shape))
    from .model_dir import load_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(spec)
    if model_dir is not None:
        model, _config = load_model_dir(model_dir)
        return LoadedModel(model, spec, tuple(model.sample_shape))
    prefix, _, target = spec.partition(":")
    if prefix in ADAPTER_PREFIXES and ":" in target:
        import importlib

        adapter = importlib.import_module(f"..adapters.{prefix}", __package__)
        model = _resolve_callable(target)
        try:
            model = adapter.wrap(model)
        except ModelSpecError as exc:
            raise ModelSpecError(f"model {spec!r}: {exc}") from None
    else:
        model = _resolve_callable(spec)
    if isinstance(model, torch.nn.Module):
        model.eval()
    shape = getattr(model, "sample_shape", None)
    return LoadedModel(model, spec, tuple(int(s) for s in shape) if shape is not None else None)


def _resolve_callable(spec: str) -> Callable[..., Any]:
    """The callable named by ``module:attribute`` (a zero-argument factory is called)."""
    obj = _import_target(spec)
    model = obj
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, torch.nn.Module) and _takes_no_arguments(obj)):
        try:
            model = obj()
        except Exception as exc:
            raise ModelSpecError(f"calling the factory {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if not callable(model):
        raise ModelSpecError(f"{spec!r} gave a {type(model).__name__}, which is not a callable velocity model.")
    return model


def _takes_no_arguments(fn: Callable) -> bool:
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in sig.parameters.values()
    )
