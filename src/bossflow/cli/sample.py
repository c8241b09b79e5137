"""Draw samples of a model along a schedule file or a baseline family at a given NFE,
from seeded noises, and write an image grid or scatter plot (.png) or the samples (.npy, .npz).
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..core.errors import BossflowError
from . import _choices
from ._args import add_quiet, non_negative_int, positive_int, shape_list, shape_of

SUFFIXES = (".png", ".npy", ".npz")
"""What ``--out`` may end with: an image grid or scatter plot, an array, or an array with its noise and times."""

EXAMPLES = """\
examples:
  bossflow sample --model digits --nfe 4 --out grid.png
  bossflow sample --model digits-boss-2 --out grid.png      # a straightened model, along its own schedule
  bossflow sample --model runs/digits-boss/nfe-4 --out grid.png
  bossflow sample --model gmm-2d --schedule uniform --nfe 8 --n 2000 --out points.npy
  bossflow sample --model gmm-2d --schedule boss.json --nfe 4 --n 500 --out run.npz   # samples, noise and times

A --schedule is a file written by `bossflow schedule` (--nfe picks one of its budgets; not
needed when it holds one) or a family name (uniform, edm, shift) with --nfe; without
--schedule a straightened model samples along the schedule it was trained along (its
schedules.json), any other model takes uniform steps and needs --nfe.

--out decides the format: .png draws (C, H, W) samples with C = 1 or 3 as an image grid
(pixels in [-1, 1] shown as black to white) and 2-D samples as a scatter plot; .npy writes
the float32 array (n, *shape); .npz writes 'samples' with the float32 'noise' they came
from, the schedule's 'times' and 'eval_times' (float64) and the 'seed'. Noise i of a seed
is the same whatever --n and --batch-size are.
"""

HELP = "sample a model along a schedule; write an image grid (.png) or the arrays (.npy, .npz)"


OUTPUTS = {"out": "file"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute")
    p.add_argument("--schedule", metavar="FILE|FAMILY",
                   help="schedule file or family name (uniform, edm, shift) (default: uniform; needs --nfe)")
    p.add_argument("--nfe", type=positive_int, metavar="K", help="step budget: picks a schedule of the file, or sizes a family")
    p.add_argument("--n", type=positive_int, default=64, metavar="N", help="number of samples (default: 64)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed (default: 0)")
    p.add_argument("--out", metavar="PATH",
                   help="output .png, .npy or .npz (default: samples.png for images and 2-D points, else samples.npy)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B", help="samples integrated at once (default: 256)")
    p.add_argument("--shape", type=shape_list, metavar="D[,D...]", help="sample shape, for models that do not declare sample_shape")
    p.add_argument("--per-row", type=positive_int, metavar="R", help="images per grid row (default: about the square root of --n)")
    add_quiet(p)


def resolve_schedule(spec: str | None, nfe: int | None) -> tuple[str, Any]:
    """``(label, schedule)``: the schedule that ``--schedule spec --nfe nfe`` names, labelled by ``spec``.

    Raises:
        BossflowError: no budget for a family, a missing or malformed file, a budget the file
            lacks, or a file with several budgets and no ``nfe``.
    """
    from ..evaluation.evaluate import schedule_sources

    if spec is None:
        if nfe is None:
            raise BossflowError("give --nfe K for K uniform steps, or --schedule FILE (written by `bossflow schedule`).")
        spec = "uniform"
    if spec in _choices.SCHEDULE_FAMILIES and not Path(spec).exists() and nfe is None:
        raise BossflowError(f"the baseline family {spec!r} needs a step budget: add --nfe K, e.g. --nfe 4.")
    found = schedule_sources([spec], [nfe] if nfe is not None else None)
    if len(found) > 1:
        raise BossflowError(f"{spec} holds schedules for NFE {[s.nfe for _, s in found]}; pick one with --nfe.")
    return spec, found[0][1]


def _own_schedules(model: str) -> str | None:
    """The ``schedules.json`` a straightened model directory carries (what it was trained along), if any."""
    from ..models.model_dir import resolve_model_dir

    folder = resolve_model_dir(model)
    path = folder / "schedules.json" if folder is not None else None
    return str(path) if path is not None and path.is_file() else None


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
    from ..core._io import write_atomic

    buf = io.BytesIO()
    write(buf)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def run(args: argparse.Namespace) -> int:
    """Sample ``--model`` along the schedule and write ``--out``."""
    import numpy as np
    import torch

    from ..core.noise import gaussian_noise
    from ..core.solvers import NFECounter
    from ..core.velocity import model_dtype
    from ..models.loading import load_model
    from ..search.sampling import sample

    _check_suffix(args.out)
    label, schedule = resolve_schedule(args.schedule or _own_schedules(args.model), args.nfe)
    loaded = load_model(args.model)
    shape = shape_of(args.shape) or loaded.sample_shape
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
        from ..evaluation.figures import save_image_grid, save_scatter

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
