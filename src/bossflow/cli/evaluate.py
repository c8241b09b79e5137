"""Sample a model along each schedule from the same noises and measure endpoint RMSE against
the dopri5 reference, distances to the data, NFE spent and wall time. Prints a Markdown
table and writes evaluate.md, evaluate.json and evaluate.csv.
"""

from __future__ import annotations

import argparse

from ._args import add_quiet, int_list, non_negative_int, positive_int, shape_list, shape_of

EXAMPLES = """\
examples:
  bossflow schedule --model gmm-2d --method bellman --nfe 2,4,6 --out boss.json
  bossflow evaluate --model gmm-2d --schedule boss.json --schedule uniform --nfe 2,4,6
  bossflow evaluate --model digits --schedule boss-digits.json --samples 500 --out runs/eval
  bossflow evaluate --model digits --schedule boss-digits.json \\
      --inception inception.pt2 --ref-stats digits-inception.npz      # real FID, offline

A --schedule is a file written by `bossflow schedule` (all its budgets, or those in --nfe)
or a baseline family name (uniform, edm, shift; needs --nfe). Measures: endpoint RMSE
against the dopri5 solution of the same noises; W2 (exact up to 2000 samples, else sliced)
and MMD² (Gaussian kernel, median-heuristic bandwidth, biased estimate) to data (exact
mixture samples for gmm-2d/gmm-64d, the real digits for the digits teacher); for digits,
the Fréchet distance of the shipped digits classifier's features; NFE counted; wall time.

FID needs two local files, since no Inception weights ship offline: --inception, a
torch.export (.pt2) or TorchScript (.pt) module mapping (B, C, H, W) float32 images in
[0, 1] to (B, F) features, and --ref-stats, an .npz with 'mu' (F,) and 'sigma' (F, F) of
the real images' features under the same module.
"""

HELP = "measure schedules on a model: endpoint error, W2, MMD, digits Fréchet distance, NFE, time"


OUTPUTS = {"out": "folder"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute")
    e.add_argument("--schedule", action="append", required=True, metavar="FILE",
                   help="schedule file or family name (uniform, edm, shift); repeat for several")
    e.add_argument("--nfe", type=int_list, metavar="K[,K...]", help="budgets to keep (default: every one in each file)")
    e.add_argument("--samples", type=positive_int, default=1000, metavar="N", help="evaluation noises (default: 1000)")
    e.add_argument("--seed", type=non_negative_int, default=1,
                   help="noise seed; data samples use seed + 1 (default: 1, fresh against `bossflow schedule`'s seed 0)")
    e.add_argument("--batch-size", type=positive_int, default=500, metavar="B", help="noises sampled at once (default: 500)")
    e.add_argument("--shape", type=shape_list, metavar="D[,D...]", help="sample shape for models without sample_shape")
    e.add_argument("--inception", metavar="PATH", help="FID feature extractor (.pt2 or TorchScript .pt); needs --ref-stats")
    e.add_argument("--ref-stats", metavar="PATH", help="FID reference statistics .npz (mu, sigma); needs --inception")
    e.add_argument("--out", default="bossflow-eval", help="output folder (default: bossflow-eval)")
    add_quiet(e)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate, format_evaluation

    report = evaluate(
        args.model, args.schedule, nfes=args.nfe, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
        inception=args.inception, ref_stats=args.ref_stats, out_dir=args.out,
        shape=shape_of(args.shape), progress=not args.quiet,
    )
    print(format_evaluation(report))
    print(f"wrote {args.out}/evaluate.md, evaluate.json and evaluate.csv")
    return 0
