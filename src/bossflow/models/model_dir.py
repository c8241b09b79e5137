"""Model directories: a trained velocity network as ``config.json`` + ``model.safetensors``.

A model directory holds

* ``config.json``: ``{"format": "bossflow.model/1", "architecture": "VelocityMLP" | "TinyUNet",
  "kwargs": {...}, "sample_shape": [...], "weights_dtype": "float32" | "float16", "data": ...,
  "training": {...}}``. ``kwargs`` are the constructor arguments of the architecture;
  ``data`` and ``training`` are provenance (what the model learned from, and the command
  and settings that trained it);
* ``model.safetensors``: the ``state_dict`` of the network (safetensors, never a pickle).

Networks are built only from the fixed :data:`ARCHITECTURES` table, never by importing a
name found in a file. Loaded models are float32, in eval mode, and carry ``sample_shape``.
Both files are written atomically, weights first, so ``config.json`` appearing marks a
complete directory.

Trained teachers ship inside the package (:data:`SHIPPED`); :func:`shipped_model_dir`
finds them and :func:`resolve_model_dir` turns a user's ``--model`` value into a directory.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core._io import read_json, write_atomic, write_json_atomic
from ..core.errors import FileFormatError, ModelSpecError
from .networks import TinyUNet, VelocityMLP

MODEL_FORMAT = "bossflow.model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ARCHITECTURES: dict[str, type[nn.Module]] = {"VelocityMLP": VelocityMLP, "TinyUNet": TinyUNet}
"""The only networks a model directory may name: architecture name -> class."""

WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}
"""Storage dtypes of ``model.safetensors``; weights are always loaded as float32."""

SHIPPED: dict[str, str] = {"digits": "weights/digits", "gmm-2d-teacher": "weights/gmm-2d-teacher",
                           "digits-boss-2": "weights/digits-boss-2", "digits-boss-4": "weights/digits-boss-4",
                           "fashion-mnist": "weights/fashion-mnist"}
"""Teachers shipped with the package: name -> folder inside the ``bossflow`` package."""


def build_model(architecture: str, kwargs: dict[str, Any], *, seed: int = 0) -> nn.Module:
    """Construct ``ARCHITECTURES[architecture](**kwargs)``, float32, initialised from ``seed``.

    The initial weights come from a generator seeded here; torch's global generator is
    left exactly as it was.

    Raises:
        ModelSpecError: unknown architecture, or arguments it does not accept.
    """
    if architecture not in ARCHITECTURES:
        raise ModelSpecError(
            f"unknown architecture {architecture!r}; a bossflow model directory names one of {', '.join(ARCHITECTURES)}."
        )
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelSpecError(f"the arguments of {architecture} must be a JSON object, got {kwargs!r}.")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ARCHITECTURES[architecture](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelSpecError(f"cannot build {architecture} with arguments {kwargs}: {exc}.") from None


def _check_sample_shape(sample_shape: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(sample_shape, (list, tuple))
        or not sample_shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sample_shape)
    ):
        raise FileFormatError(f"{where}: sample_shape must be a non-empty list of positive integers, got {sample_shape!r}.")
    return tuple(sample_shape)


def save_model_dir(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    architecture: str,
    kwargs: dict[str, Any],
    sample_shape: tuple[int, ...] | list[int],
    weights_dtype: str = "float32",
    **meta: Any,
) -> Path:
    """Write ``model`` as a model directory (``config.json`` + ``model.safetensors``), atomically.

    Args:
        model: an instance of ``ARCHITECTURES[architecture]`` built with ``kwargs``.
        path: the directory (created if needed; existing files are replaced).
        architecture: key of :data:`ARCHITECTURES`.
        kwargs: constructor arguments (JSON values) that rebuild ``model``.
        sample_shape: shape of one sample, e.g. ``(1, 8, 8)``.
        weights_dtype: ``"float32"``, or ``"float16"`` to halve the file (weights are rounded).
        meta: further JSON provenance stored in the config, e.g. ``data=...``, ``training=...``.

    Returns:
        The directory path.
    """
    import safetensors.torch

    path = Path(path)
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ModelSpecError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}.")
    shape = list(_check_sample_shape(list(sample_shape), "save_model_dir"))
    reserved = sorted(set(meta) & {"format", "architecture", "kwargs", "sample_shape", "weights_dtype"})
    if reserved:
        raise ModelSpecError(f"metadata may not set {', '.join(reserved)}; those fields describe the network itself.")
    reference = build_model(architecture, dict(kwargs))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    state = model.state_dict()
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        raise ModelSpecError(f"the model's weights do not match {architecture}({kwargs}); pass the arguments it was built with.")
    dtype = WEIGHTS_DTYPES[weights_dtype]
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in state.items()}
    blob = safetensors.torch.save(tensors, metadata={"format": MODEL_FORMAT})
    config = {
        "format": MODEL_FORMAT,
        "architecture": architecture,
        "kwargs": dict(kwargs),
        "sample_shape": shape,
        "weights_dtype": weights_dtype,
        **meta,
    }
    write_atomic(path / WEIGHTS_NAME, lambda f: f.write(blob))
    try:
        write_json_atomic(path / CONFIG_NAME, config)
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(f"model metadata must be plain JSON values (no NaN): {exc}.") from None
    return path


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` of a model directory (no weights are loaded).

    Raises:
        FileFormatError: the directory or its config is missing, unreadable, or not ``bossflow.model/1``.
        ModelSpecError: the config names an unknown architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"model directory {path} does not exist; check the path.")
    if not path.is_dir():
        raise FileFormatError(
            f"{path} is not a directory; a bossflow model is a directory holding {CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    if not (path / CONFIG_NAME).is_file():
        raise FileFormatError(
            f"{path} has no {CONFIG_NAME}; a bossflow model directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
            "(as written by `bossflow teacher`)."
        )
    config = read_json(path / CONFIG_NAME, "model config")
    where = f"model config {path / CONFIG_NAME}"
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise FileFormatError(f"{where} is not a bossflow model (format {found!r}, expected {MODEL_FORMAT!r}).")
    for key in ("architecture", "kwargs", "sample_shape"):
        if key not in config:
            raise FileFormatError(f"{where} lacks the field {key!r}; rewrite it with bossflow.checkpoints.save_model_dir.")
    if config["architecture"] not in ARCHITECTURES:
        raise ModelSpecError(
            f"{where} names architecture {config['architecture']!r}; bossflow builds only {', '.join(ARCHITECTURES)}."
        )
    if not isinstance(config["kwargs"], dict):
        raise FileFormatError(f"{where}: kwargs must be a JSON object.")
    _check_sample_shape(config["sample_shape"], where)
    if config.get("weights_dtype", "float32") not in WEIGHTS_DTYPES:
        raise FileFormatError(f"{where}: weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}.")
    return config


def load_model_dir(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model directory written by :func:`save_model_dir`.

    Returns:
        ``(model, config)``: the float32 network in eval mode, with a ``sample_shape``
        attribute, and the parsed ``config.json``.

    Raises:
        FileFormatError: missing, corrupt or foreign directory, config or weights.
        ModelSpecError: the config names an unknown architecture or bad arguments.
    """
    import safetensors.torch

    path = Path(path)
    config = read_model_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileFormatError(f"{path} has no {WEIGHTS_NAME}; the model directory is incomplete, write it again.")
    try:
        tensors = safetensors.torch.load(weights.read_bytes())
    except OSError as exc:
        raise FileFormatError(f"cannot read {weights}: {exc.strerror or exc}.") from None
    except Exception as exc:  # safetensors raises its own SafetensorError on damaged files
        raise FileFormatError(f"{weights} is not a valid safetensors file ({exc}); the file is damaged, write it again.") from None
    model = build_model(config["architecture"], config["kwargs"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise FileFormatError(
            f"{weights} does not hold the weights of {config['architecture']}({config['kwargs']}): {detail}."
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise FileFormatError(
                f"{weights}: weight {name!r} has shape {tuple(tensor.shape)}, the config's "
                f"{config['architecture']} needs {tuple(expected[name].shape)}."
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FileFormatError(f"{weights}: weight {name!r} holds NaN or infinite values.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.eval()
    model.sample_shape = tuple(config["sample_shape"])
    return model, config


def shipped_model_dir(name: str) -> Path:
    """The directory of a teacher shipped with bossflow (a key of :data:`SHIPPED`).

    Raises:
        ModelSpecError: ``name`` is not a shipped model.
        FileFormatError: the install lacks the shipped files (package data not installed).
    """
    if name not in SHIPPED:
        raise ModelSpecError(f"no shipped model named {name!r}; shipped models: {', '.join(SHIPPED)}.")
    folder = resources.files("bossflow.models").joinpath(*SHIPPED[name].split("/"))
    path = Path(str(folder))
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise FileFormatError(
            f"the shipped model {name!r} is missing from this install ({path}); reinstall bossflow "
            "from a wheel or source tree that includes its package data."
        )
    return path


def resolve_model_dir(spec: str | os.PathLike) -> Path | None:
    """The model directory a ``--model`` value names, or ``None`` when it names none.

    A shipped name (``digits``, ``gmm-2d-teacher``) gives the shipped directory; an existing
    directory gives itself. Anything else (presets, ``module:attribute``) gives ``None``.
    """
    text = os.fspath(spec)
    if text in SHIPPED:
        return shipped_model_dir(text)
    path = Path(text)
    return path if path.is_dir() else None


def round_weights(model: nn.Module, weights_dtype: str) -> nn.Module:
    """Round every floating parameter and buffer of ``model`` through ``weights_dtype`` in place.

    Makes an in-memory model equal to what :func:`load_model_dir` gives back after saving.
    """
    dtype = WEIGHTS_DTYPES[weights_dtype]
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).to(tensor.dtype))
    return model


def file_size_text(n_bytes: int) -> str:
    """``n_bytes`` as a short human-readable size (``"372 KB"``)."""
    if n_bytes < 1000:
        return f"{n_bytes} B"
    exponent = min(int(math.log(n_bytes, 1000)), 3)
    return f"{n_bytes / 1000**exponent:.0f} {['B', 'KB', 'MB', 'GB'][exponent]}"

