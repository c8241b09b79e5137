"""Write one schedule of a schedule file as the numbers another sampler takes: the sigmas of
diffusers' pipe(sigmas=...), ComfyUI's SIGMAS and k-diffusion's sigmas (1 - t, ending in 0),
or flow_matching's time_grid. A JSON list, on stdout or in --out.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.errors import BossflowError
from ._args import positive_int

EXAMPLES = """\
examples:
  bossflow export sd3-sigmas.json --nfe 4 --format diffusers          # the list for pipe(sigmas=...)
  bossflow export sd3-sigmas.json --nfe 4 --format comfyui --out sigmas.json
  bossflow export fm.json --nfe 8 --format flow-matching              # ODESolver's time_grid

diffusers: when the file was searched on a pipeline (bossflow schedule --model diffusers:DIR),
the sigmas are pre-inverted through that pipeline's scheduler shift as it was saved, so pass
them to the pipeline unchanged, at the same height and width; otherwise they are 1 - t for a
scheduler without shift (bossflow.adapters.diffusers.configure_scheduler). Schedules with
evaluation times or OLSS steps have no such form: search with --family times.
"""

HELP = "write a schedule as diffusers sigmas, ComfyUI/k-diffusion SIGMAS or a flow_matching time grid"

FORMATS = ("diffusers", "comfyui", "k-diffusion", "flow-matching")
"""``bossflow.adapters.export.FORMATS``."""


OUTPUTS = {"out": "file"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("schedule", metavar="FILE", help="schedule file written by `bossflow schedule`")
    p.add_argument("--nfe", type=positive_int, metavar="K", help="the budget to export (needed when the file holds several)")
    p.add_argument("--format", choices=FORMATS, default="diffusers", help="what to write (default: diffusers)")
    p.add_argument("--out", metavar="PATH", help="write the JSON list here (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from ..adapters.export import diffusers_call, export_schedule
    from ..core._io import write_atomic
    from ..core.schedules import load_schedules

    schedules = load_schedules(args.schedule)
    if args.nfe is None and len(schedules) > 1:
        raise BossflowError(f"{args.schedule} holds schedules for NFE {sorted(schedules)}; pick one with --nfe.")
    nfe = args.nfe if args.nfe is not None else next(iter(schedules))
    if nfe not in schedules:
        raise BossflowError(f"{args.schedule} has no schedule with NFE {nfe}; it has {sorted(schedules)}.")
    values = export_schedule(schedules[nfe], args.format)
    text = json.dumps(values)
    if args.out:
        write_atomic(args.out, lambda f: f.write((text + "\n").encode("utf-8")))
        print(f"wrote {len(values)} {args.format} values for NFE {nfe} to {args.out}")
    else:
        print(text)
    if args.format == "diffusers":
        print(diffusers_call(schedules[nfe], values), file=sys.stderr if not args.out else sys.stdout)
    return 0
