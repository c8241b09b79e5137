"""Train a velocity network by conditional flow matching on the linear path
(t = 0 noise, t = 1 data) with AdamW, gradient clipping, EMA weights and checkpoints.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..training.presets import TEACHER_PRESETS
from ._args import add_quiet, non_negative_int, positive_float, positive_int

EXAMPLES = """\
examples:
  bossflow teacher digits --out runs/digits-teacher            # a few minutes on a CPU
  bossflow teacher digits --out runs/digits-teacher --resume   # continue after an interruption
  bossflow teacher gmm-2d --out runs/gmm-teacher --steps 1000 --seed 1
  bossflow teacher fashion-mnist --out runs/fmnist --threads 1     # long: rerun with --resume to go on
  bossflow schedule --model runs/digits-teacher --family euler --nfe 2,4,6 --out runs/digits-sched.json

The output folder is a model directory (config.json + model.safetensors, the EMA weights)
that every --model option accepts; checkpoint.safetensors beside them makes the run
resumable. Training is seeded: the same command on the same machine and thread count
gives the same weights, with or without interruptions.
"""

HELP = "train a flow-matching teacher on built-in data (digits, gmm-2d, fashion-mnist)"

DESCRIPTION = (
    __doc__ + "\npresets:\n" + "\n".join(f"  {name:<8} {preset.description}" for name, preset in TEACHER_PRESETS.items())
)


def _defaults(attr: str) -> str:
    return ", ".join(f"{name} {getattr(preset, attr)}" for name, preset in TEACHER_PRESETS.items())


OUTPUTS = {"out": "folder"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", choices=list(TEACHER_PRESETS), help="what to train")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory (also holds the checkpoint)")
    p.add_argument("--steps", type=positive_int, metavar="N", help=f"optimizer steps (default: {_defaults('steps')})")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw (default: 0)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help=f"samples per step (default: {_defaults('batch_size')})")
    p.add_argument("--lr", type=positive_float, help=f"AdamW learning rate (default: {_defaults('lr')})")
    p.add_argument("--checkpoint-every", type=non_negative_int, metavar="N",
                   help=f"steps between checkpoints, 0 for none (default: {_defaults('checkpoint_every')})")
    p.add_argument("--data", metavar="DIR",
                   help="folder of the data files (fashion-mnist: the IDX files; default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_quiet(p)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces ``args``, recorded in the model's ``config.json``."""
    words = ["bossflow", "teacher", args.preset, "--out", str(args.out)]
    for flag, value in (("--steps", args.steps), ("--seed", args.seed), ("--batch-size", args.batch_size),
                        ("--lr", args.lr), ("--checkpoint-every", args.checkpoint_every), ("--data", args.data),
                        ("--threads", args.threads)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def _or_default(value: Any, default: Any) -> Any:
    return value if value is not None else default


def run(args: argparse.Namespace) -> int:
    """Train the preset and write the model directory ``--out``."""
    from pathlib import Path

    import torch

    from ..core._io import read_json
    from ..models.model_dir import CONFIG_NAME, WEIGHTS_NAME, file_size_text
    from ..training.teachers import train_teacher

    preset = TEACHER_PRESETS[args.preset]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data, data_info = preset.load_data(args.data)
    steps = _or_default(args.steps, preset.steps)
    try:
        train_teacher(
            data, architecture=preset.architecture, arch_kwargs=preset.arch_kwargs, steps=steps,
            batch_size=_or_default(args.batch_size, preset.batch_size), lr=_or_default(args.lr, preset.lr),
            seed=args.seed, out_dir=args.out,
            checkpoint_every=_or_default(args.checkpoint_every, preset.checkpoint_every), resume=args.resume,
            ema_decay=preset.ema_decay, progress=not args.quiet, weights_dtype=preset.weights_dtype,
            data_info=data_info, provenance={"preset": args.preset, "command": command_line(args)},
        )
    except KeyboardInterrupt:
        print(f"bossflow: interrupted; the last checkpoint in {args.out} is kept: rerun with --resume to continue.",
              file=sys.stderr)
        return 130
    out = Path(args.out)
    training = read_json(out / CONFIG_NAME, "model config")["training"]
    size = file_size_text((out / WEIGHTS_NAME).stat().st_size)
    print(f"trained {args.preset} teacher for {steps} steps in {training['wall_seconds']:.0f} s, "
          f"final loss {training['final_loss']:.4f}")
    print(f"wrote {out / CONFIG_NAME} and {out / WEIGHTS_NAME} ({size}, {preset.weights_dtype})")
    return 0
