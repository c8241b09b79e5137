"""``python -m bossflow.classifier [NAME] --out DIR``: train a feature classifier and write it to DIR.

The classifiers give the Fréchet distances of ``bossflow evaluate``, ``bench`` and ``demo``
(:mod:`bossflow.evaluation.classifier`); the shipped ones were written with the examples below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from bossflow.cli import _choices  # absolute: this code also runs as `python -m bossflow.classifier`
from bossflow.cli._args import Parser, non_negative_int, positive_int
from bossflow.core.errors import BossflowError

EXAMPLES = """\
examples:
  python -m bossflow.classifier --out src/bossflow/models/weights/digits-classifier
  python -m bossflow.classifier fashion-mnist --out src/bossflow/models/weights/fashion-mnist-classifier
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m bossflow.classifier",
        description="Train a feature classifier (default: digits) and write it to DIR.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", default="digits", choices=list(_choices.FEATURE_CLASSIFIERS),
                        help="which classifier (default: digits)")
    parser.add_argument("--out", required=True, help="output folder (the shipped one: src/bossflow/models/weights/NAME-classifier)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="training seed (default: 0)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the classifier's config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bossflow.evaluation.classifier import FEATURE_CLASSIFIERS, WEIGHTS_NAME, save_classifier, train_classifier

    args = build_parser().parse_args(argv)
    spec = FEATURE_CLASSIFIERS[args.name]
    overrides = {"seed": args.seed} | ({} if args.epochs is None else {"epochs": args.epochs})
    config = spec.config_type(**overrides)
    try:
        model, info = train_classifier(args.name, config)
    except BossflowError as exc:
        print(f"bossflow: error: {exc}", file=sys.stderr)
        return 2
    save_classifier(args.out, model, config, info)
    size = (Path(args.out) / WEIGHTS_NAME).stat().st_size
    print(json.dumps({k: info[k] for k in ("train_accuracy", "test_accuracy", "wall_seconds")}), f"weights {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
