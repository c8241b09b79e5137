"""Sampling a model along a schedule: :func:`sample` and ``bossflow sample``.

Noise ``i`` of seed ``s`` is the same however the samples are batched
(:func:`bossflow.gaussian_noise`), and each schedule is solved the way it was made for
(:func:`bossflow.search.sample_with`: Euler at its evaluation times, or OLSS's linear steps),
so ``bossflow sample`` reproduces what ``bossflow evaluate`` measures for the same seed.
Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import BossflowError
from .noise import gaussian_noise
from .schedules import SCHEDULE_FAMILIES, Schedule

SUFFIXES = (".png", ".npy", ".npz")
"""What ``--out`` may end with: an image grid or scatter plot, an array, or an array with its noise and times."""


def sample(
    model: Callable[..., Tensor],
    schedule: Schedule,
    n: int,
    *,
    seed: int = 0,
    batch_size: int = 256,
    shape: Sequence[int] | None = None,
    cond: dict | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Tensor:
    """Draw ``n`` samples of ``model`` along ``schedule`` from the noises ``0 .. n - 1`` of ``seed``.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        schedule: the steps (``schedule.nfe`` model evaluations per sample, any solver it carries).
        n: number of samples.
        seed: noise seed; the result does not depend on ``batch_size``.
        batch_size: samples integrated at once.
        shape: shape of one sample; default the model's ``sample_shape``.
        cond: conditioning for every model call; tensors whose first dimension is ``n`` are
            per-sample and are sliced with their batch.
        dtype: state dtype; default the model's parameter dtype, or float64 for parameter-free models.
        progress: show a tqdm progress bar over samples.

    Returns:
        ``(n, *shape)`` samples at ``t = 1``.

    Example:
        >>> import bossflow as bf
        >>> x = sample(bf.models.gmm_2d(), bf.uniform_schedule(4), 10, seed=3)
        >>> tuple(x.shape), x.dtype
        ((10, 2), torch.float64)
    """
    from tqdm.auto import tqdm

    from .bench import model_dtype
    from .search import sample_with
    from .solvers import select_cond

    if not isinstance(schedule, Schedule):
        raise BossflowError(f"schedule must be a bossflow Schedule, got {type(schedule).__name__}.")
    if not isinstance(n, int) or n < 1:
        raise BossflowError(f"the number of samples must be a positive integer, got {n!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BossflowError(f"the batch size must be a positive integer, got {batch_size!r}.")
    if shape is None:
        shape = getattr(model, "sample_shape", None)
        if shape is None:
            raise BossflowError("the model does not declare sample_shape; pass shape=, e.g. shape=(3, 32, 32).")
    shape = tuple(int(s) for s in shape)
    dtype = dtype or model_dtype(model)
    cond = cond or {}
    out = []
    with torch.no_grad(), tqdm(total=n, desc="sample", unit="sample", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            noise = gaussian_noise(stop - start, shape, seed=seed, start=start, dtype=dtype)
            out.append(sample_with(model, noise, schedule, cond=select_cond(cond, slice(start, stop), n)))
            bar.update(stop - start)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Command line

SAMPLE_EXAMPLES = """\
examples:
  bossflow sample --model digits --nfe 4 --out grid.png
  bossflow sample --model runs/digits-boss --schedule runs/digits-sched.json --nfe 2 --out grid.png
  bossflow sample --model gmm-2d --schedule uniform --nfe 8 --n 2000 --out points.npy
  bossflow sample --model gmm-2d --schedule boss.json --nfe 4 --n 500 --out run.npz   # samples, noise and times

A --schedule is a file written by `bossflow schedule` (--nfe picks one of its budgets; not
needed when it holds one) or a family name (uniform, edm, shift) with --nfe; without
--schedule the steps are uniform, and --nfe is required.

--out decides the format: .png draws (C, H, W) samples with C = 1 or 3 as an image grid
(pixels in [-1, 1] shown as black to white) and 2-D samples as a scatter plot; .npy writes
the float32 array (n, *shape); .npz writes 'samples' with the float32 'noise' they came
from, the schedule's 'times' and 'eval_times' (float64) and the 'seed'. Noise i of a seed
is the same whatever --n and --batch-size are.
"""


def add_sample_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sample`` subcommand to an ``argparse`` subparsers object and return its parser."""
    from .cli import _int_list, _non_negative_int, _positive_int

    p = subparsers.add_parser(
        "sample",
        help="sample a model along a schedule; write an image grid (.png) or the arrays (.npy, .npz)",
        description="Draw samples of a model along a schedule file or a baseline family at a given NFE,\n"
        "from seeded noises, and write an image grid or scatter plot (.png) or the samples (.npy, .npz).",
        epilog=SAMPLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute")
    p.add_argument("--schedule", metavar="FILE|FAMILY",
                   help="schedule file or family name (uniform, edm, shift) (default: uniform; needs --nfe)")
    p.add_argument("--nfe", type=_positive_int, metavar="K", help="step budget: picks a schedule of the file, or sizes a family")
    p.add_argument("--n", type=_positive_int, default=64, metavar="N", help="number of samples (default: 64)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed (default: 0)")
    p.add_argument("--out", metavar="PATH",
                   help="output .png, .npy or .npz (default: samples.png for images and 2-D points, else samples.npy)")
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="B", help="samples integrated at once (default: 256)")
    p.add_argument("--shape", type=_int_list, metavar="D[,D...]", help="sample shape, for models that do not declare sample_shape")
    p.add_argument("--per-row", type=_positive_int, metavar="R", help="images per grid row (default: about the square root of --n)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_schedule(spec: str | None, nfe: int | None) -> tuple[str, Schedule]:
    """``(label, schedule)``: the schedule that ``--schedule spec --nfe nfe`` names, labelled by ``spec``.

    Raises:
        BossflowError: no budget for a family, a missing or malformed file, a budget the file
            lacks, or a file with several budgets and no ``nfe``.
    """
    from .evaluate import schedule_sources

    if spec is None:
        if nfe is None:
            raise BossflowError("give --nfe K for K uniform steps, or --schedule FILE (written by `bossflow schedule`).")
        spec = "uniform"
    if spec in SCHEDULE_FAMILIES and not Path(spec).exists() and nfe is None:
        raise BossflowError(f"the baseline family {spec!r} needs a step budget: add --nfe K, e.g. --nfe 4.")
    found = schedule_sources([spec], [nfe] if nfe is not None else None)
    if len(found) > 1:
        raise BossflowError(f"{spec} holds schedules for NFE {[s.nfe for _, s in found]}; pick one with --nfe.")
    return spec, found[0][1]


def _image_kind(shape: tuple[int, ...]) -> str | None:
    """``"grid"`` for (C, H, W) with C in (1, 3), ``"scatter"`` for 2-D points, else ``None``."""
    if len(shape) == 3 and shape[0] in (1, 3):
        return "grid"
    if shape == (2,):
        return "scatter"
    return None


def _check_suffix(out: str | None) -> None:
    if out is not None and Path(out).suffix.lower() not in SUFFIXES:
        raise BossflowError(
            f"--out {out} must end with .png (image grid or scatter plot), .npy (array) or .npz (array, noise and times)."
        )


def _output_path(out: str | None, shape: tuple[int, ...]) -> Path:
    if out is None:
        return Path("samples.png" if _image_kind(shape) else "samples.npy")
    path = Path(out)
    if path.suffix.lower() == ".png" and _image_kind(shape) is None:
        raise BossflowError(
            f"samples of shape {shape} are neither (C, H, W) images with C = 1 or 3 nor 2-D points; "
            f"write them as an array instead, e.g. --out {path.with_suffix('.npy')}."
        )
    return path


def _save_array(path: Path, write: Callable[[io.BytesIO], None]) -> None:
    from ._io import write_atomic

    buf = io.BytesIO()
    write(buf)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def cmd_sample(args: argparse.Namespace) -> int:
    """Run ``bossflow sample``: sample ``--model`` along the schedule and write ``--out``."""
    from .bench import model_dtype
    from .loading import load_model
    from .solvers import NFECounter

    _check_suffix(args.out)
    label, schedule = resolve_schedule(args.schedule, args.nfe)
    loaded = load_model(args.model)
    shape = tuple(args.shape) if args.shape else loaded.sample_shape
    if shape is None:
        raise BossflowError(f"model {args.model!r} does not declare sample_shape; pass --shape, e.g. --shape 3,32,32.")
    path = _output_path(args.out, shape)
    suffix = path.suffix.lower()

    counter = NFECounter(loaded.model)
    started = time.perf_counter()
    samples = sample(counter, schedule, args.n, seed=args.seed, batch_size=args.batch_size, shape=shape,
                     dtype=model_dtype(loaded.model), progress=not args.quiet)
    seconds = time.perf_counter() - started
    array = samples.detach().cpu().to(torch.float32).numpy()

    method = schedule.meta.get("method")
    what = f"{label} NFE {schedule.nfe}" + (f" ({method})" if method and method != label else "")
    if suffix == ".png":
        from .figures import save_image_grid, save_scatter

        title = f"{loaded.model_id}: {args.n} samples, {what}, seed {args.seed}"
        if _image_kind(shape) == "grid":
            per_row = args.per_row or math.ceil(math.sqrt(args.n))
            save_image_grid(array, path, per_row, title=title)
        else:
            save_scatter(array, path, title)
    elif suffix == ".npy":
        _save_array(path, lambda f: np.save(f, array))
    else:
        noise = gaussian_noise(args.n, shape, seed=args.seed).numpy()  # drawn in float32: exactly the noise used
        _save_array(path, lambda f: np.savez(
            f, samples=array, noise=noise, times=np.asarray(schedule.times, dtype=np.float64),
            eval_times=np.asarray(schedule.evaluation_times, dtype=np.float64), seed=np.int64(args.seed),
        ))
    per_sample = counter.samples / args.n
    print(f"wrote {path}: {args.n} samples {tuple(array.shape[1:])} of {loaded.model_id}, {what}, "
          f"{per_sample:g} model evaluations per sample, {seconds:.2f} s")
    return 0


__all__ = ["SAMPLE_EXAMPLES", "SUFFIXES", "add_sample_parser", "cmd_sample", "resolve_schedule", "sample"]
