"""LoRA adapters on a diffusers transformer: added, saved as ``load_lora_weights`` reads them, or merged.

Everything goes through the ecosystem's own functions: ``transformer.add_adapter`` (diffusers'
PEFT integration) with a ``peft.LoraConfig``, ``peft.utils.get_peft_model_state_dict`` for the
trained layers, the pipeline class's ``save_lora_weights`` for the file (its key prefix and the
adapter's config as metadata), and ``fuse_lora`` / ``unload_lora`` / ``save_pretrained`` for a
merged transformer. The file is then what ``pipe.load_lora_weights(folder)`` takes, as the
LoRAs of diffusers' own training scripts are.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core.errors import BossflowError
from ._optional import require

ADAPTER_NAME = "default"
"""The adapter's name inside the transformer (the name diffusers' save helpers read by default)."""

LORA_FILE = "pytorch_lora_weights.safetensors"
"""The file ``load_lora_weights(folder)`` looks for."""

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
"""Attention projections of the image and text streams, the targets diffusers' SD3 and Flux LoRA scripts use."""


def linear_names(transformer: torch.nn.Module) -> list[str]:
    """Qualified names of the transformer's ``nn.Linear`` modules."""
    return [name for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)]


def resolve_targets(transformer: torch.nn.Module, targets: Sequence[str] | None) -> list[str]:
    """The target names (module-name suffixes) that match ``nn.Linear`` modules: ``targets`` or the defaults present.

    Raises:
        BossflowError: a named target matches no linear layer, or none of the defaults is present.
    """
    names = linear_names(transformer)

    def matches(target: str) -> bool:
        return any(n == target or n.endswith("." + target) for n in names)

    if targets is None:
        found = [t for t in DEFAULT_TARGETS if matches(t)]
        if not found:
            raise BossflowError("this transformer has none of the usual attention projections "
                                f"({', '.join(DEFAULT_TARGETS)}); name the layers to adapt with --lora-targets.")
        return found
    unknown = [t for t in targets if not matches(t)]
    if unknown or not targets:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise BossflowError(f"--lora-targets {', '.join(unknown or targets)} match no linear layer of this transformer; "
                            f"layer names end in {', '.join(leaves)}.")
    return list(targets)


def add_transformer_lora(transformer: torch.nn.Module, rank: int, *, alpha: float | None = None,
                         targets: Sequence[str] | None = None, seed: int = 0) -> list[str]:
    """Freeze ``transformer`` and add trainable float32 LoRA adapters to it in place; the targets used.

    ``B`` starts at zero (the transformer computes what it did until trained); ``A`` is drawn
    from ``seed`` with the global generator left untouched.

    Raises:
        BossflowError: peft missing, a bad rank, or targets that match no linear layer.
    """
    peft = require("peft", "LoRA straightening of a diffusers transformer")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise BossflowError(f"the LoRA rank must be a positive integer, got {rank!r}.")
    used = resolve_targets(transformer, targets)
    config = peft.LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank), target_modules=used,
                             init_lora_weights="gaussian", lora_dropout=0.0, bias="none")
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    for parameter in transformer.parameters():
        if parameter.requires_grad:  # the adapters: trained in float32 whatever the transformer's dtype
            parameter.data = parameter.data.float()
    return used


def save_pipeline_lora(pipeline_class: str, transformer: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """Write the transformer's adapters to ``folder/pytorch_lora_weights.safetensors`` for ``pipeline_class``.

    Written through the class's ``save_lora_weights`` into a temporary folder beside the
    target, then moved into place, so a crash never leaves half a file.

    Returns:
        the file's path.
    """
    diffusers = require("diffusers", "saving a LoRA for a diffusers pipeline")
    from peft.utils import get_peft_model_state_dict

    layers = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    metadata = _json_config(transformer.peft_config[ADAPTER_NAME].to_dict())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".lora-") as scratch:
        getattr(diffusers, pipeline_class).save_lora_weights(
            scratch, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata)
        os.replace(Path(scratch) / LORA_FILE, folder / LORA_FILE)
    return folder / LORA_FILE


def save_merged_transformer(transformer: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """Fuse the adapters into the weights, drop them, and ``save_pretrained`` the transformer to ``folder/transformer``.

    This changes ``transformer`` in place (it is plain afterwards). The folder is written
    beside the target and renamed into place.

    Returns:
        the transformer folder, which ``SD3Transformer2DModel.from_pretrained`` (or the
        pipeline's ``from_pretrained(..., transformer=...)``) loads.
    """
    target = Path(folder) / "transformer"
    if target.exists():
        raise BossflowError(f"{target} already exists; remove it or choose another output folder.")
    transformer.fuse_lora(lora_scale=1.0)
    transformer.unload_lora()
    scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".transformer-"))
    transformer.save_pretrained(scratch)
    os.replace(scratch, target)
    return target


def _json_config(config: dict[str, Any]) -> dict[str, Any]:
    """A peft config dict with its sets as sorted lists (what JSON metadata can hold)."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
