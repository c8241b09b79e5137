"""Search a K-step sampling schedule of a model for every requested NFE and write them to one
JSON file. The default, auto, keeps per budget the best of uniform steps, BOSS, OLSS and
refined step and evaluation times on held-out noises; --method bellman is the paper's BOSS
search alone (the BOSS cost matrix on a fine base grid, then dynamic programming).
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import BossflowError
from . import _choices, _pipeline
from ._args import (add_quiet, finite_float, format_times, int_list, non_negative_int, positive_float, positive_int,
                    shape_list, shape_of)

EXAMPLES = """\
examples:
  bossflow schedule --model gmm-2d --nfe 2,4,6,8 --out schedules.json   # auto, the default
  bossflow schedule --model digits --nfe 2,4,6 --family euler --out sched.json  # to straighten
  bossflow schedule --model digits --nfe 4 --family times --out sched.json   # for diffusers/flow_matching
  bossflow schedule --model gmm-64d --method bellman --nfe 4 --samples 512 --grid edm --grid-steps 200
  bossflow schedule --model mypkg.models:make_flow --shape 3,32,32 --nfe 4,6 --method bellman \\
      --cache runs/cost.npz --out runs/sched.json      # resumable: rerun to continue
  bossflow schedule --model digits --nfe 2,4,6 --cache runs/auto.safetensors --out runs/sched.json   # auto, resumable
  bossflow schedule --model gmm-2d --method uniform --nfe 4 --out uniform.json
  bossflow schedule --model diffusers:path/to/sd3 --prompts prompts.txt --guidance-scale 4.5 --nfe 4,6,8 \\
      --family times --out sd3-sigmas.json             # a saved pipeline (README: Your own diffusers pipeline)
  bossflow schedule --model diffusers:path/to/sd3 --lora lightning.safetensors --prompts prompts.txt \\
      --guidance-scale 1 --nfe 3,5 --family times --out lightning.json   # sigmas for someone else's LoRA

auto (default) fits uniform steps, BOSS, OLSS and a refinement of step and evaluation times
(--family euler/times: uniform, BOSS, global-dp and the refinement) on 3/4 of the noises,
keeps per budget the one with the lowest error on the other 1/4 and refits it on all; it
prints what it chose and what it spent in fine trajectories (one fine trajectory =
--grid-steps model evaluations per noise, what bellman spends for all budgets).
--family picks what the schedules must be usable by: any (bossflow's samplers), euler
(Euler steps with evaluation times: bossflow straighten) or times (step times only:
diffusers schedulers, flow_matching's ODESolver, any sampler that takes a time grid).
--effort sets auto's refinement budget: fast spends about half of standard's model
evaluations and was never worse than the best peer in our benchmark either, but gives up
accuracy at NFE 2 (RMSE 0.054 against 0.040 on the 2-D mixture, 0.264 against 0.244 on
Fashion-MNIST); use it for expensive models. thorough spends 2-2.5 times standard's and
was not better overall.

The printed cost is the Bellman path cost (sum of one-step errors per dimension) for
bellman, and the endpoint MSE per dimension against the fine trajectory for global-dp.

A model is a preset (gmm-2d, gmm-64d: exact mixture flows), a shipped model (digits,
digits-boss-2, digits-boss-4, fashion-mnist, gmm-2d-teacher), a model directory written by `bossflow teacher` or
`bossflow straighten`, or module:attribute / path/to/file.py:attribute naming a velocity
model model(x, t) -> v (t = 0 noise, t = 1 data) or a zero-argument factory returning one.
Prefix flow_matching: or torchcfm: (e.g. flow_matching:train.py:model) to wrap a model of
those libraries; see the README's Adapters section for diffusers and other conventions.
"""

HELP = "find few-step sampling schedules for a flow model (auto by default; BOSS with --method bellman)"


OUTPUTS = {"out": "file", "cache": "file"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute (see below)")
    p.add_argument("--nfe", type=int_list, default=[2, 4, 6, 8], metavar="K[,K...]", help="step budgets (default: 2,4,6,8)")
    p.add_argument("--out", help="write the schedules to this JSON file")
    p.add_argument(
        "--method",
        choices=list(_choices.SEARCH_METHODS),
        default=None,
        help="auto (default; bellman for diffusers pipelines: the best of uniform, BOSS, OLSS and refined step/evaluation times per budget on held-out "
        "noises); bellman (BOSS: the cheapest search, one fine trajectory); global-dp, gits, ays, evolution, olss or "
        "refined (see README); uniform, edm and shift write a baseline schedule",
    )
    p.add_argument(
        "--family",
        choices=["any", "euler", "times"],
        default="any",
        help="which schedules to return: any (default; OLSS-type steps included), euler (Euler steps "
        "with evaluation times, what straighten takes) or times (step times only, what diffusers and flow_matching take); "
        "auto searches only that family, another --method is refused when it makes other schedules",
    )
    p.add_argument(
        "--effort",
        choices=list(_choices.EFFORTS),
        default="standard",
        help="for auto: how much its refinement may spend: fast (about half the model evaluations), standard "
        "(default) or thorough (2-2.5 times as many); see below",
    )
    p.add_argument("--grid", choices=["uniform", "edm"], default="uniform", help="base grid family (default: uniform)")
    p.add_argument("--grid-steps", type=positive_int, metavar="N", help="base grid intervals (default: 100; pipelines 40)")
    p.add_argument("--samples", type=positive_int, metavar="B", help="search noises (default: 256; pipelines 64, see benchmarks/bench_samples.py)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="samples integrated at once by bellman's cost matrix (default: 64)")
    p.add_argument(
        "--substeps",
        type=positive_int,
        default=1,
        help="reference sub-steps per grid interval; 1 is the paper's cost (default: 1)",
    )
    p.add_argument("--reference", choices=list(_choices.TEACHER_METHODS), default="euler", help="reference sub-step method (default: euler)")
    p.add_argument("--shape", type=shape_list, metavar="D[,D...]", help="sample shape, for models that do not declare sample_shape")
    p.add_argument("--cache", metavar="PATH",
                   help="resumable checkpoint, reused when finished: bellman's cost matrix (.npz), or auto's journal of "
                   "finished stages (.safetensors); rerun the same command to continue")
    p.add_argument("--device", default="cpu",
                   help="torch device for noise and model: cpu, cuda, cuda:1, ... or auto (CUDA when present; "
                   "under torchrun each rank's own GPU) (default: cpu)")
    p.add_argument("--precision", choices=list(_choices.PRECISIONS), default="fp32",
                   help="model arithmetic: fp32, or bf16 autocast for GPUs (states and costs keep --dtype) (default: fp32)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="state dtype (default: float32)")
    add_quiet(p)
    _add_pipeline_arguments(p.add_argument_group("diffusers pipelines (--model diffusers:DIR)"))


def _add_pipeline_arguments(g: argparse._ArgumentGroup) -> None:
    _pipeline.add_pipeline_arguments(g)
    g.add_argument("--max-calls", type=positive_int, metavar="N", help="stop with a message before exceeding N transformer calls")
    g.add_argument("--lora", metavar="PATH",
                   help="a LoRA (file or folder, e.g. a Lightning/Turbo LoRA) loaded with load_lora_weights and fused "
                   "before the search; recorded in the file")
    g.add_argument("--lora-scale", type=finite_float, default=1.0, metavar="W", help="the LoRA's weight (default: 1)")


def _check_options(args: argparse.Namespace, nfes: list[int]) -> None:
    """Refuse option combinations that the chosen method would ignore."""
    if args.method not in _choices.METHOD_FAMILIES[args.family]:
        makes = "OLSS steps (a linear multistep update)" if args.method == "olss" else "evaluation times"
        raise BossflowError(f"--method {args.method} makes {makes}, not --family {args.family} schedules; "
                            f"use --method auto or bellman with --family {args.family}.")
    if args.effort != "standard" and args.method != "auto":
        raise BossflowError(f"--effort applies to --method auto only; drop it for --method {args.method}.")
    if args.method == "auto" and args.samples < 2:
        raise BossflowError(f"--method auto needs --samples 2 or more (some noises to fit, some to validate), got {args.samples}.")
    if args.method in _choices.SCHEDULE_FAMILIES:
        return
    if nfes[-1] > args.grid_steps:
        raise BossflowError(f"--nfe {nfes[-1]} exceeds --grid-steps {args.grid_steps}; use a finer grid.")
    if args.method != "bellman":
        if args.cache and args.method != "auto":
            raise BossflowError(f"--cache applies to bellman's cost matrix and auto's stages only; drop it for "
                                f"--method {args.method}.")
        if args.reference != "euler" or args.substeps != 1:
            raise BossflowError(
                f"--reference and --substeps set the bellman cost matrix's teacher; drop them for --method {args.method}."
            )


@dataclass
class _Target:
    """What a search runs on: the velocity, its id, shape, ``--cache`` fingerprint, per-sample cond, provenance
    and, for ``--model diffusers:DIR``, the :class:`~bossflow.adapters.pipelines.PipelineModel`."""

    model: Any
    model_id: str
    shape: tuple[int, ...]
    fingerprint: str | None = None
    cond: dict | None = None
    provenance: dict = field(default_factory=dict)
    pipeline: Any = None


def _search_model(args: argparse.Namespace, nfes: list[int]) -> _Target:
    """The model of ``--model`` on ``--device`` in ``--dtype``/``--precision`` (a pipeline: over its prompts)."""
    import torch

    from ..core.cost import model_fingerprint
    from ..core.distributed import Autocast, pick_device
    from ..models.loading import load_model

    if _pipeline.is_pipeline(args):
        found = _pipeline.load(args)
        _pipeline.announce(args, nfes, 2 if found.provenance["cfg"] else 1)
        fingerprint = f"{model_fingerprint(found.model)}+prompts:{found.provenance['prompts_sha256'][:16]}"
        return _Target(_pipeline.budgeted(found, args, nfes), args.model, found.sample_shape, fingerprint, found.cond,
                       {"diffusers": True, **found.provenance}, found)
    loaded = load_model(args.model)
    shape = shape_of(args.shape) or loaded.sample_shape
    if shape is None:
        raise BossflowError(f"model {args.model!r} does not declare sample_shape; pass --shape, e.g. --shape 3,32,32.")
    model = loaded.model
    if isinstance(model, torch.nn.Module):
        model = model.to(pick_device(args.device))
        if args.dtype == "float64":
            model = model.double()
    fingerprint = None
    if args.precision == "bf16":
        fingerprint = f"{model_fingerprint(model)}+bf16-autocast"
        model = Autocast(model)
    return _Target(model, loaded.model_id, tuple(shape), fingerprint)


def _search(args: argparse.Namespace, nfes: list[int]) -> tuple[dict[int, Any], dict[str, Any], _Target | None]:
    """``({nfe: Schedule}, provenance, what it searched)`` for ``--method`` (no target for a baseline family)."""
    import torch

    from ..core._io import exclusive
    from ..core.bellman import bellman_schedules
    from ..core.cost import cost_matrix
    from ..core.distributed import is_main, pick_device
    from ..core.noise import gaussian_noise
    from ..core.schedules import SCHEDULE_FAMILIES, base_grid
    from ..search import SEARCHES, WITH_PROGRESS

    if args.method in SCHEDULE_FAMILIES:
        return {k: SCHEDULE_FAMILIES[args.method](k) for k in nfes}, {"method": args.method}, None
    target = _search_model(args, nfes)
    grid = base_grid(args.grid, args.grid_steps)
    noise = gaussian_noise(args.samples, target.shape, seed=args.seed, dtype=getattr(torch, args.dtype),
                           device=pick_device(args.device))
    provenance = {"model": target.model_id, "base_grid": args.grid, "grid_steps": args.grid_steps, "seed": args.seed,
                  **target.provenance}
    if args.method != "bellman":
        options: dict[str, Any] = {"progress": not args.quiet and is_main()} if args.method in WITH_PROGRESS else {}
        if args.method == "auto":
            options.update(family=args.family, effort=args.effort, checkpoint=args.cache, model_id=target.fingerprint)
        with exclusive(args.cache, "auto journal (--cache)") if args.cache and is_main() else contextlib.nullcontext():
            found = SEARCHES[args.method](target.model, noise, grid, nfes, cond=target.cond, provenance=provenance,
                                          **options)
        return found, _spent(target, provenance), target
    cost = cost_matrix(target.model, noise, grid, batch_size=args.batch_size, substeps=args.substeps,
                       reference=args.reference, cond=target.cond, checkpoint=args.cache, model_id=target.fingerprint,
                       progress=not args.quiet)
    provenance.update(samples=args.samples, substeps=args.substeps, reference=args.reference)
    if args.precision != "fp32":
        provenance.update(precision=args.precision)
    return bellman_schedules(cost, grid, nfes, **provenance), _spent(target, provenance), target


def _spent(target: _Target, provenance: dict) -> dict:
    """``provenance`` with the transformer calls a pipeline search made."""
    calls = getattr(target.model, "calls", None)
    return {**provenance, "transformer_calls": calls} if calls is not None else provenance


def _score_column(schedules: dict[int, Any]) -> tuple[str, dict[int, float | None]] | None:
    """The number column of :func:`print_schedules`: each search's own ``cost``, or for ``auto`` (no cost) the
    held-out RMSE of the candidate it chose; ``None`` when no schedule has either."""
    if any(s.meta.get("cost") is not None for s in schedules.values()):
        return "cost", {k: s.meta.get("cost") for k, s in schedules.items()}
    held = {k: s.meta.get("holdout_rmse", {}).get(s.meta.get("selected")) for k, s in schedules.items()}
    if any(v is not None for v in held.values()):
        return "held-out RMSE", held
    return None


def print_schedules(schedules: dict[int, Any]) -> None:
    """One line per budget: cost (``auto``: the winner's held-out RMSE), step times, evaluation times and what
    ``auto`` chose; then what auto spent. Families and searches without a score print no number column."""
    column = _score_column(schedules)
    width = max(11, len(column[0])) if column else 0
    print(f"{'NFE':>4}  " + (f"{column[0]:>{width}}  " if column else "") + "times")
    for k, sched in schedules.items():
        value = column[1].get(k) if column else None
        number = "" if column is None else (f"{value:{width}.4e}  " if value is not None else f"{'-':>{width}}  ")
        evals = "" if sched.eval_times is None else f"  (evaluated at {format_times(sched.eval_times)})"
        chose = f"  [{sched.meta['selected']}]" if "selected" in sched.meta else ""
        print(f"{k:>4}  {number}{format_times(sched.times)}{evals}{chose}")
    spent = next(iter(schedules.values())).meta
    if "fine_trajectories" in spent:
        print(f"auto spent {spent['fine_trajectories']:.1f} fine trajectories ({spent['model_rows']:,} model rows)")


def run(args: argparse.Namespace) -> int:
    from ..core.distributed import is_main
    from ..core.schedules import save_schedules

    _pipeline.resolve_defaults(args)
    nfes = sorted(set(args.nfe))
    _check_options(args, nfes)
    if not args.out and args.method not in _choices.SCHEDULE_FAMILIES and is_main():
        print("no --out: the schedules are printed, not saved; add --out FILE.json to keep them")
    schedules, provenance, target = _search(args, nfes)
    print_schedules(schedules)
    if "transformer_calls" in provenance:
        print(f"the search made {provenance['transformer_calls']:,} transformer calls")
    if args.out and is_main():
        save_schedules(args.out, schedules.values(), **provenance)
        print(f"wrote {len(schedules)} schedule(s) to {args.out}")
    if target is not None and target.pipeline is not None and is_main():
        _pipeline.holdout_table(target.pipeline, args, schedules)
    return 0
