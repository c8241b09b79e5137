"""``bossflow straighten --model diffusers:DIR``: the pipeline's teacher pairs, LoRA training, the LoRA file
that ``pipe.load_lora_weights`` takes, and the held-out table before and after."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..core.errors import BossflowError
from . import _pipeline

DEFAULTS = {"samples": (None, 256), "batch_size": (256, 16), "grid_steps": (None, 40), "pair_batch_size": (256, 8),
            "lora_rank": (None, 16), "pair_solver": ("auto", "euler"), "grid_power": (None, 1.0)}
"""Option -> (default for model directories, default for pipelines): a pipeline run must fit a GPU budget."""
OPTIONS = ("prompts", "prompt", "negative_prompt", "guidance_scale", "height", "width", "variant", "holdout_prompts",
           "distill_guidance", "merge", "gradient_checkpointing")
"""Options that only a pipeline takes."""
SHARD_SIZE = 32
"""Noises per pair shard of a pipeline: a killed run loses at most this many fine trajectories."""
RECORD_NAME = "bossflow_lora.json"
"""What the output folder says of the LoRA: how it was made and how to use it."""
OBJECTIVES = ("boss", "rollout")
"""The objectives a pipeline LoRA is trained with (reflow needs no schedule, but the LoRA is for one)."""


def add_arguments(g: argparse._ArgumentGroup) -> None:
    """The pipeline options of ``straighten``."""
    _pipeline.add_pipeline_arguments(g)
    g.add_argument("--distill-guidance", action="store_true",
                   help="train the conditional branch alone to give the guided velocity: half the calls; then "
                   "call the pipeline with guidance_scale=1")
    g.add_argument("--merge", action="store_true",
                   help="also write OUT/transformer, a full transformer with the LoRA merged in")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the transformer's activations in the backward pass (less memory, about 1/3 more time)")


def check(args: argparse.Namespace) -> list[Any]:
    """Refuse what a pipeline straightening cannot do before anything loads; the schedules to straighten along."""
    from ..adapters.lora import LORA_FILE
    from ..core.schedules import check_euler_schedule
    from ..evaluation.evaluate import schedule_sources
    from ..models.model_dir import CONFIG_NAME

    if args.objective not in OBJECTIVES:
        raise BossflowError(f"--objective {args.objective} is not for pipelines; use boss (default) or rollout.")
    if args.schedule is None:
        raise BossflowError("a pipeline LoRA is straightened along a schedule: pass --schedule FILE "
                            "(from `bossflow schedule --model diffusers:DIR --family times`).")
    if args.weights_dtype != "float32":
        raise BossflowError("--weights-dtype applies to model directories; a LoRA file keeps its adapters' float32.")
    schedules = [s for _, s in schedule_sources([args.schedule], args.nfe)]
    for schedule in schedules:
        check_euler_schedule(schedule, "a diffusers scheduler")
        if schedule.has_eval_times:
            raise BossflowError(f"the schedule with NFE {schedule.nfe} has evaluation times, which a diffusers scheduler "
                                "cannot follow; search with `bossflow schedule --family times`.")
    out = Path(args.out)
    if (out / CONFIG_NAME).exists():
        raise BossflowError(f"{out} holds a model directory; choose another output folder for the LoRA.")
    check_out_folder(out, LORA_FILE, "a LoRA", args.resume)
    if args.merge and (out / "transformer").exists():
        raise BossflowError(f"{out / 'transformer'} already exists; remove it or drop --merge.")
    return schedules


def _settings(args: argparse.Namespace, target: Any) -> Any:
    """The LoRA settings, checked against the loaded transformer (and guidance) before any pair is made."""
    from ..training.pipeline_lora import check_request
    from ..training.straighten import LoraSettings

    targets = tuple(t for t in args.lora_targets.split(",") if t) if args.lora_targets else None
    settings = LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets)
    check_request(target.model, settings, distill_guidance=args.distill_guidance)
    return settings


def check_out_folder(out: Path, product: str, what: str, resume: bool) -> None:
    """Refuse an ``--out`` that already holds a finished ``product`` file (``what``) without a checkpoint to resume,
    or a straightening checkpoint without ``--resume`` (model directories and LoRA folders alike)."""
    from ..training.straighten import CHECKPOINT_NAME

    if (out / product).exists() and not (out / CHECKPOINT_NAME).exists():
        raise BossflowError(f"{out} already holds {what} and no checkpoint to resume; choose another output folder.")
    if (out / CHECKPOINT_NAME).exists() and not resume:
        raise BossflowError(f"{out} already holds a straightening checkpoint; pass --resume to continue it, "
                            "or choose another output folder.")


def announce(args: argparse.Namespace, target: Any, schedules: list[Any]) -> None:
    """Print the transformer calls of the pairs, the training and the held-out table before any of them runs."""
    from ..training.pairs import reference_grid, state_times

    cfg = 2 if target.provenance["cfg"] else 1
    grid = reference_grid(state_times(schedules), args.grid_steps, args.grid_power)
    per_interval = args.substeps * (2 if args.pair_solver == "heun" else 1)
    pairs = args.samples * (grid.size - 1) * per_interval * cfg
    student_calls = (1 if args.distill_guidance else cfg) * (max(s.nfe for s in schedules) if args.objective == "rollout" else 1)
    training = args.steps * args.batch_size * student_calls
    holdout = args.holdout_samples * (_pipeline.FINE_STEPS + 2 * sum(s.nfe for s in schedules)) * cfg
    print(f"teacher pairs: {pairs:,} transformer calls ({args.samples} noises x {grid.size - 1} steps"
          f"{f' x {per_interval}' if per_interval > 1 else ''}"
          f"{' x 2 (CFG)' if cfg == 2 else ''}; cached in shards of {SHARD_SIZE}, resumable)")
    print(f"training: {training:,} transformer forward and backward passes ({args.steps} steps x {args.batch_size} rows"
          f"{' x 2 (CFG)' if student_calls == 2 else ''}); held-out table: {holdout:,} calls")


def make_pairs(args: argparse.Namespace, target: Any, schedules: list[Any]) -> Any:
    """The guided teacher's pairs along ``schedules``, float16 shards in ``--pairs`` (default OUT/pairs), read from
    the shards batch by batch (streamed) in one process."""
    import torch

    from ..core.conditioning import IndexedCond
    from ..core.distributed import world_size
    from ..training.pairs import teacher_pairs

    index = torch.arange(args.samples) % len(target.prompts)  # sample i keeps prompt i mod P however many are made
    cond = IndexedCond(target.prompt_embeds, index)
    return teacher_pairs(
        target.model, schedules, target.sample_shape, samples=args.samples, seed=args.seed, grid_steps=args.grid_steps,
        grid_power=args.grid_power, substeps=args.substeps, method=args.pair_solver, batch_size=args.pair_batch_size,
        shard_size=SHARD_SIZE, cond=cond,
        cache_dir=args.pairs if args.pairs is not None else Path(args.out) / "pairs", model_id=args.model,
        storage_dtype=torch.float16, state_dtype=torch.float32, stream=world_size() == 1, progress=not args.quiet,
    )


def holdout_endpoints(args: argparse.Namespace, target: Any, schedules: list[Any]) -> dict[str, Any] | None:
    """The base pipeline's fine solution and K-step endpoints on the held-out noises (seed ``--seed`` + 1)."""
    import torch

    from ..core.noise import gaussian_noise
    from ..evaluation.holdout import fine_endpoints, schedule_endpoints

    if target.holdout_cond is None:
        return None
    device = next(target.model.parameters()).device
    noise = gaussian_noise(args.holdout_samples, target.sample_shape, seed=args.seed + 1, device=device)
    fine = fine_endpoints(target.model, noise, target.holdout_cond, _pipeline.FINE_STEPS)
    base = schedule_endpoints(target.model, noise, target.holdout_cond, schedules)
    return {"noise": noise, "reference": fine, "base": base}


def holdout_table(args: argparse.Namespace, target: Any, student: Any, before: dict[str, Any] | None,
                  schedules: list[Any]) -> list[dict[str, Any]]:
    """Print and return each budget's held-out RMSE without and with the LoRA, against the base pipeline's fine solution."""
    from ..core.metrics import endpoint_rmse
    from ..evaluation.holdout import schedule_endpoints

    if before is None:
        return []
    after = schedule_endpoints(student, before["noise"], target.holdout_cond, schedules)
    rows = []
    for schedule in schedules:
        k = schedule.nfe
        base, lora = (endpoint_rmse(before["base"][k], before["reference"]), endpoint_rmse(after[k], before["reference"]))
        rows.append({"nfe": k, "base_rmse": base, "lora_rmse": lora})
    _pipeline.print_holdout(
        args, "the training prompts", f"the base pipeline's {_pipeline.FINE_STEPS} Euler steps, along the schedule",
        [("NFE", 4, "d"), ("without LoRA", 12, ".4f"), ("with LoRA", 9, ".4f"), ("without / with", 14, ".2f")],
        [[row["nfe"], row["base_rmse"], row["lora_rmse"], row["base_rmse"] / row["lora_rmse"]] for row in rows])
    return rows


def export(args: argparse.Namespace, target: Any, student: Any, record: dict, schedules: list[Any],
           rows: list[dict[str, Any]]) -> None:
    """The LoRA file, the schedules it was trained for (exportable as sigmas), the record; ``--merge``: a transformer."""
    from ..adapters.lora import save_merged_transformer, save_pipeline_lora

    out = Path(args.out)
    saved = _write_schedules(args, target, schedules)
    lora_file = save_pipeline_lora(target.provenance["pipeline"], student.transformer, out)
    usage = _write_record(args, target, record, saved, rows)
    print(f"wrote {lora_file} (LoRA rank {record['lora']['rank']} on {', '.join(record['lora']['targets'])}), "
          f"{out / 'schedules.json'} and {out / RECORD_NAME}")
    if args.merge:
        print(f"wrote {save_merged_transformer(student.transformer, out)} (the LoRA merged into the transformer)")
    nfe = min(saved)
    call = usage[nfe].replace("\n", "\n  ")
    print(f'\nuse it:\n  pipe.load_lora_weights("{out}")\n  {call}   # NFE {nfe}; `bossflow export '
          f"{out / 'schedules.json'} --nfe K` for the others")


def _write_schedules(args: argparse.Namespace, target: Any, schedules: list[Any]) -> dict[int, Any]:
    """``OUT/schedules.json``: the schedules with the pipeline's provenance (guidance 1 when distilled), as reloaded."""
    from ..core.schedules import Schedule, load_schedules, save_schedules

    provenance = {**target.provenance, "lora_folder": str(args.out), "straightened_from": args.schedule}
    if args.distill_guidance:
        provenance.update(guidance_scale=1.0, cfg=False, negative_prompt=None,
                          distilled_guidance_scale=target.provenance["guidance_scale"])
    kept = [Schedule(s.times, **{k: s.meta[k] for k in ("method", "selected", "cost") if k in s.meta}) for s in schedules]
    path = Path(args.out) / "schedules.json"
    save_schedules(path, kept, **provenance)
    return load_schedules(path)


def _write_record(args: argparse.Namespace, target: Any, record: dict, saved: dict[int, Any],
                  rows: list[dict[str, Any]]) -> dict[int, str]:
    """``OUT/bossflow_lora.json``: how the LoRA was made and how to call it; the ``pipe(...)`` line per budget."""
    from .._version import __version__
    from ..adapters.export import diffusers_call, export_schedule
    from ..core._io import write_json_atomic

    sigmas = {k: export_schedule(s, "diffusers") for k, s in saved.items()}
    calls = {k: diffusers_call(saved[k], sigmas[k]) for k in saved}
    argv = ["bossflow", "straighten", *sys.argv[2:]] if len(sys.argv) > 2 and sys.argv[1] == "straighten" else None
    first = next(iter(saved.values())).meta
    write_json_atomic(Path(args.out) / RECORD_NAME, {
        "format": "bossflow.pipeline-lora/1", "bossflow": __version__, "pipeline": target.provenance["pipeline"],
        "pipeline_path": target.provenance["pipeline_path"], "guidance_scale": first["guidance_scale"],
        "sigmas": {str(k): v for k, v in sigmas.items()}, "calls": {str(k): v for k, v in calls.items()},
        "holdout": rows, "training": {k: v for k, v in record.items() if k != "pairs"},
        **({"command": shlex.join(argv)} if argv else {}),
    })
    return calls


def run(args: argparse.Namespace) -> int:
    """Pairs, held-out reference, training, held-out table and the LoRA folder ``--out``."""
    from ..core.distributed import is_main
    from ..training.pipeline_lora import straighten_pipeline

    schedules = check(args)
    target = _pipeline.load(args, samples=1)
    settings = _settings(args, target)
    announce(args, target, schedules)
    pairs = make_pairs(args, target, schedules)
    before = holdout_endpoints(args, target, schedules)
    try:
        student, record = straighten_pipeline(
            target.model, pairs, settings, distill_guidance=args.distill_guidance,
            checkpointing=args.gradient_checkpointing, seed=args.seed, objective=args.objective, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
            ema_decay=args.ema_decay, distance=args.distance, out_dir=args.out, checkpoint_every=args.checkpoint_every,
            resume=args.resume, micro_batch=args.micro_batch, precision=args.precision, progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(f"bossflow: interrupted; the pairs and the last checkpoint in {args.out} are kept: rerun with --resume "
              "to continue.", file=sys.stderr)
        return 130
    print(f"straightened {args.model} along NFE {', '.join(str(s.nfe) for s in schedules)} for {args.steps} steps in "
          f"{record['wall_seconds']:.0f} s, final loss {record['final_loss']:.4g}")
    if is_main():  # rank 0 scores and writes
        rows = holdout_table(args, target, student, before, schedules)
        export(args, target, student, record, schedules, rows)
    return 0

