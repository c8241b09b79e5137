"""Straighten a flow along its schedule (BOSS, Nguyen et al. 2024), so that a few Euler steps
land where its fine solution lands. By default each budget gets its own student trained on
its own K-step rollout from the noise against the teacher's fine solution (pseudo-Huber,
cosine decay), the largest budget first and each smaller one starting from the previous
student, the schedule's step and evaluation times trained with the weights (--no-learn-times
keeps them); --objective boss regresses v(x_a, s_a) on (x_b - x_a) / (t_b - t_a) for
teacher states at consecutive schedule times (the paper), blend matches the rollout's state
after every step, reflow is the baseline (Liu et al. 2022) on the same couplings. Full fine-tuning, or LoRA
adapters (peft) with --lora-rank. AdamW, gradient clipping, EMA weights, seeded, resumable.
A saved diffusers pipeline (--model diffusers:DIR, SD3 or Flux) is straightened into a LoRA
file that pipe.load_lora_weights(OUT) loads, trained as the pipeline evaluates its
transformer (both classifier-free guidance branches).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..core.errors import BossflowError
from . import _choices, _pipeline, _pipeline_lora
from ._args import add_quiet, decay, grid_power, int_list, non_negative_float, non_negative_int, positive_float, positive_int

EXAMPLES = """\
examples:
  bossflow schedule --model digits --family euler --nfe 2,4 --out runs/digits-sched.json
  bossflow straighten --model digits --schedule runs/digits-sched.json --out runs/digits-boss --threads 2
      # one student per budget: runs/digits-boss/nfe-4, then nfe-2 started from it
  bossflow sample --model runs/digits-boss/nfe-2 --out grid.png       # along the schedule it was trained for
  bossflow straighten ... --no-learn-times          # keep the schedule's times (default: trained with the weights)
  bossflow straighten ... --objective boss --distance mse --lr-schedule constant --lr 1e-4 --budgets mixed
      # the paper's recipe: per-step targets, one model for every budget
  bossflow straighten --model digits --schedule runs/digits-sched.json --lora-rank 8 --out runs/digits-lora
  bossflow straighten --model digits --schedule runs/digits-sched.json --objective reflow --out runs/digits-reflow
  bossflow straighten ... --resume                  # continue after an interruption
  bossflow straighten ... --device auto --precision bf16 --micro-batch 16   # a GPU, large images

  # a saved diffusers pipeline into a LoRA (search its schedule first, step times only):
  bossflow schedule --model diffusers:path/to/sd3 --prompts prompts.txt --guidance-scale 4 --nfe 2,4 \\
      --family times --out s.json
  bossflow straighten --model diffusers:path/to/sd3 --prompts prompts.txt --guidance-scale 4 --schedule s.json \\
      --lora-rank 16 --steps 2000 --out sd3-boss-lora --device cuda --precision bf16
  # then: pipe.load_lora_weights("sd3-boss-lora"); pipe(prompt, sigmas=..., guidance_scale=4)

The default recipe (the winners of benchmarks/bench_straighten_payoff.py at equal compute, with
the trajectory count of the README's full-length runs):
the rollout objective (the student's own K Euler steps from the noise, its endpoint against
the teacher's fine solution), the schedule's times trained with the weights, pseudo-Huber
distance, AdamW at 1e-3 with cosine decay to 0, batch 256, EMA 0.999, 4,700 steps, one
student per budget chained from the largest budget down, pairs from 131,072 trajectories of
20 Heun steps (or 65,536 of 100 Euler steps where Heun is the less accurate on the teacher):
students memorise their pairs, so teacher trajectories buy more than optimizer steps.

Pairs: the teacher's fine solutions from --samples seeded noises, kept at the schedule times.
--pair-solver auto measures, on 64 noises against a 400-call Heun solution, whether 20 Heun
steps on a grid denser towards the data (40 calls) beat 100 uniform Euler steps (100 calls)
on this teacher, and takes the cheaper one unless it is less accurate; euler and heun name
one (their grid set by --grid-steps, --grid-power, --substeps). They are cached in --pairs
(default OUT/pairs) and reused by every run given the same folder, teacher and times, e.g. a
run and its reflow baseline. With several budgets in the file (or --nfe 2,4) each budget gets
its own student in OUT/nfe-K, the largest first, each smaller one starting from the student
before it (--budgets separate: each from the teacher; mixed: one for all in OUT, as in the
paper). A student's folder is a model directory (config.json + model.safetensors, EMA
weights, LoRA merged) that every --model option accepts, plus schedules.json (the schedule
it was straightened along, its times as learned unless --no-learn-times; `bossflow sample` uses it
by default) and checkpoint.safetensors (for --resume).

Pipelines: the pairs are the pipeline's own guided fine solutions for (prompt, noise) pairs
(noise i takes prompt i mod P), in float16 shards of 32 noises in OUT/pairs; OUT then holds
pytorch_lora_weights.safetensors (diffusers' LoRA format for that pipeline), schedules.json
(with the pipeline's scheduler, so `bossflow export OUT/schedules.json --nfe K` gives the
sigmas to pass), bossflow_lora.json (how it was made, the sigmas, the held-out table) and
checkpoint.safetensors. Pipeline defaults: --samples 256, --pair-solver euler, --grid-steps 40, --batch-size 16,
--pair-batch-size 8, --lora-rank 16 (attention projections). The held-out table compares the
schedule's K steps with and without the LoRA against the base pipeline's 100-step solution.
"""

HELP = "fine-tune a model so few Euler steps along its schedule land on its fine solution (BOSS; reflow baseline)"


DEFAULTS = {"steps": (4700, 2000), "objective": ("rollout", "boss"), "distance": ("pseudo-huber", "mse"),
            "lr_schedule": ("cosine", "constant"), "budgets": ("chained", "mixed")}
"""The recipe's defaults, option -> (model directories, pipelines): the winners of
benchmarks/bench_straighten_payoff.py for models (steps: the sample passes of 2,350 steps of
512 at batch 256); pipelines keep per-step targets (a rollout holds K transformer passes'
activations) until a pipeline benchmark says otherwise."""
SAMPLES = {"euler": 65536, "heun": 131072}
"""Default teacher trajectories of model directories by the pairs' solver: about 6.5 million teacher calls either way."""
FULL_LR, LORA_LR = 1e-3, 5e-3
"""Learning rates of model directories under the default recipe (full fine-tuning, LoRA)."""

BUDGETS = ("chained", "separate", "mixed")
"""``--budgets``: how several budgets are straightened (a student each, chained or from the teacher, or one for all)."""
OUTPUTS = {"out": "folder", "pairs": "folder"}
"""Output options -> what they name, checked writable before the command runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the teacher: a shipped model (digits, fashion-mnist, gmm-2d-teacher, "
                   "digits-boss-2), a model directory, or diffusers:DIR (a saved SD3/Flux pipeline, into a LoRA)")
    p.add_argument("--schedule", metavar="FILE", help="schedule file from `bossflow schedule` (optional with --objective reflow)")
    p.add_argument("--nfe", type=int_list, metavar="K[,K...]", help="budgets of the file to straighten along (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory (also holds checkpoint and pairs)")
    p.add_argument("--objective", choices=list(_choices.OBJECTIVES),
                   help="rollout (default: the student's own K-step endpoint error; pipelines: boss), boss (the "
                   "paper's per-step targets), blend (the rollout's state after every step), or the reflow baseline")
    p.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps per student (default: 4700; pipelines 2000)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="pairs per step (default: 256; pipelines 16)")
    p.add_argument("--lr", type=positive_float,
                   help=f"AdamW learning rate (default: {FULL_LR:g} full, {LORA_LR:g} LoRA; pipelines 1e-3)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--grad-clip", type=positive_float, default=1.0, help="maximum gradient norm (default: 1)")
    p.add_argument("--ema-decay", type=decay, default=0.999, help="EMA decay of the exported weights (default: 0.999)")
    p.add_argument("--distance", choices=list(_choices.DISTANCES),
                   help="training distance (default: pseudo-huber; pipelines mse)")
    p.add_argument("--lr-schedule", choices=list(_choices.LR_SCHEDULES),
                   help="learning rate over the run: cosine decay to 0 (default; pipelines constant) or constant")
    p.add_argument("--learn-times", action=argparse.BooleanOptionalAction,
                   help="train the schedule's step and evaluation times with the weights through the rollout; the "
                   "exported schedules.json holds the learned times (default: on with --objective rollout, off with "
                   "--budgets mixed and for pipelines)")
    p.add_argument("--step-sampling", choices=list(_choices.STEP_SAMPLINGS), default="uniform",
                   help="boss only: draw each schedule's steps uniformly, or by the teacher's Euler error on them "
                   "(default: uniform)")
    p.add_argument("--budgets", choices=list(BUDGETS),
                   help="with several budgets: one student per budget in OUT/nfe-K, the largest budget first and "
                   "each smaller one starting from the previous student (chained, the default), or each from the "
                   "teacher (separate); or one student for all in OUT (mixed, as in the paper; pipelines: one "
                   "LoRA); reflow trains one")
    p.add_argument("--lora-rank", type=positive_int, metavar="R",
                   help="train LoRA adapters of rank R instead of every weight (pipelines: always LoRA, default 16)")
    p.add_argument("--lora-alpha", type=positive_float, metavar="A", help="LoRA alpha (default: the rank)")
    p.add_argument("--lora-targets", metavar="NAME[,NAME...]",
                   help="modules to adapt (default: every nn.Linear and nn.Conv2d; pipelines: the attention projections "
                   "to_q, to_k, to_v, to_out.0 and their add_* text-stream twins)")
    p.add_argument("--samples", type=positive_int, metavar="N",
                   help="teacher trajectories (default: 131072 with heun pairs, 65536 with euler; pipelines 256)")
    p.add_argument("--pairs", metavar="DIR", help="pair cache folder, shareable between runs (default: OUT/pairs)")
    p.add_argument("--pair-solver", choices=list(_choices.PAIR_SOLVERS),
                   help="the teacher's fine solution: euler (100 uniform steps, 100 calls per noise), heun (20 steps "
                   "denser towards the data, 40 calls), or auto: heun unless it is less accurate than euler on 64 "
                   "noises against a 400-call solution (default: auto; pipelines euler, 40 steps)")
    p.add_argument("--grid-steps", type=positive_int, metavar="N",
                   help="intervals of the fine grid of --pair-solver euler or heun, merged with the schedule times "
                   "(default: 100 euler, 20 heun; pipelines 40)")
    p.add_argument("--grid-power", type=grid_power, metavar="P",
                   help="fine grid 1 - (1 - i/N)^P of --pair-solver euler or heun: 1 uniform, above 1 denser towards "
                   "the data (default: 1 euler, 1.5 heun)")
    p.add_argument("--substeps", type=positive_int, default=1, metavar="S", help="solver sub-steps per grid interval (default: 1)")
    p.add_argument("--pair-batch-size", type=positive_int, metavar="B", help="noises integrated at once (default: 256; pipelines 8)")
    p.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32",
                   help="storage dtype of the exported weights (default: float32; float16 halves the file)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the noises, LoRA init and batches (default: 0)")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=250, metavar="N",
                   help="steps between checkpoints, 0 for none (default: 250)")
    p.add_argument("--device", default="cpu",
                   help="torch device for pairs and training: cpu, cuda, cuda:1 or auto (default: cpu)")
    p.add_argument("--precision", choices=list(_choices.PRECISIONS), default="fp32",
                   help="training arithmetic: fp32, or bf16 autocast for GPUs (weights, optimizer, EMA and the "
                   "teacher's pairs stay float32) (default: fp32)")
    p.add_argument("--micro-batch", type=positive_int, metavar="M",
                   help="rows per forward/backward pass, gradients accumulated over --batch-size: bounds memory "
                   "for large images without changing the step (default: the whole batch)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_quiet(p, "no progress bars")
    _pipeline_lora.add_arguments(p.add_argument_group("diffusers pipelines (--model diffusers:DIR)"))


def _schedules(path: str | None, nfes: list[int] | None, objective: str) -> list[Any]:
    """The Euler schedules ``--schedule path --nfe nfes`` names (every one in the file without ``nfes``)."""
    from ..core.schedules import check_euler_schedule
    from ..evaluation.evaluate import schedule_sources

    if path is None:
        if objective != "reflow":
            raise BossflowError(f"--objective {objective} straightens along a schedule: pass --schedule FILE "
                                "(from `bossflow schedule --family euler`).")
        if nfes:
            raise BossflowError("--nfe picks budgets of --schedule; pass the schedule file too.")
        return []
    schedules = [schedule for _, schedule in schedule_sources([path], nfes)]
    for schedule in schedules:
        check_euler_schedule(schedule, "straightening")
    return schedules


def _lora(args: argparse.Namespace) -> Any:
    """The ``LoraSettings`` of ``--lora-rank/--lora-alpha/--lora-targets``, or ``None`` for full fine-tuning."""
    from ..training.straighten import LoraSettings

    if args.lora_rank is None:
        if args.lora_alpha is not None or args.lora_targets:
            raise BossflowError("--lora-alpha and --lora-targets need --lora-rank.")
        return None
    targets = tuple(t for t in args.lora_targets.split(",") if t) if args.lora_targets else None
    return LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha, targets=targets)


def _teacher_folder(args: argparse.Namespace) -> Path:
    """The teacher's model directory."""
    from ..models.model_dir import resolve_model_dir

    folder = resolve_model_dir(args.model)
    if folder is None:
        raise BossflowError(
            f"--model {args.model!r} is not a model directory; straightening needs a trained network saved as a model "
            "directory (a shipped teacher such as digits, or the output of `bossflow teacher`)."
        )
    return folder


def _export(args: argparse.Namespace, out: Path, student: Any, record: dict, config: dict, schedules: list[Any],
            lora: Any) -> None:
    """Write the student's model directory ``out`` (and the schedules it was straightened along) and report."""
    from .._version import __version__
    from ..core.schedules import save_schedules
    from ..models.model_dir import CONFIG_NAME, WEIGHTS_NAME, file_size_text, save_model_dir

    argv = ["bossflow", "straighten", *sys.argv[2:]] if len(sys.argv) > 2 and sys.argv[1] == "straighten" else None
    training = {**record, "teacher": str(args.model), "teacher_training": config.get("training"),
                "schedule_file": args.schedule, "bossflow": __version__,
                **({"command": shlex.join(argv)} if argv else {})}
    save_model_dir(student, out, architecture=config["architecture"], kwargs=config["kwargs"],
                   sample_shape=config["sample_shape"], weights_dtype=args.weights_dtype, data=config.get("data"),
                   training=training)
    if schedules:
        save_schedules(out / "schedules.json", schedules, straightened=str(out), teacher=str(args.model))
    size = file_size_text((out / WEIGHTS_NAME).stat().st_size)
    budgets = f" along NFE {', '.join(str(s.nfe) for s in schedules)}" if schedules else ""
    learned = " (times learned: " + "; ".join(
        f"NFE {s.nfe} t={[round(float(t), 3) for t in s.times]} s={[round(float(v), 3) for v in s.evaluation_times]}"
        for s in schedules) + ")" if record.get("learned_schedule") else ""
    print(f"straightened {args.model} ({args.objective}{', LoRA rank %d' % lora.rank if lora else ''}){budgets} "
          f"for {args.steps} steps in {record['wall_seconds']:.0f} s, final loss {record['final_loss']:.4g}{learned}")
    print(f"wrote {out / CONFIG_NAME} and {out / WEIGHTS_NAME} ({size})"
          + (f"; schedules in {out / 'schedules.json'}" if schedules else ""))


def _students(args: argparse.Namespace, schedules: list[Any]) -> list[tuple[Path, list[Any]]]:
    """``(output folder, schedules)`` of every student to train, in training order: one per budget in
    ``OUT/nfe-K`` with ``--budgets chained`` (largest budget first) or ``separate`` and several budgets,
    else (reflow too: it ignores the budgets) one in ``OUT``; each folder checked first."""
    from ..models.model_dir import CONFIG_NAME

    out = Path(args.out)
    if args.budgets != "mixed" and len(schedules) > 1 and args.objective != "reflow":
        ordered = sorted(schedules, key=lambda s: -s.nfe) if args.budgets == "chained" else schedules
        students = [(out / f"nfe-{s.nfe}", [s]) for s in ordered]
    else:
        students = [(out, schedules)]
    if args.learn_times and args.objective != "rollout":
        raise BossflowError(f"--learn-times trains the times through the student's rollout: use --objective rollout, "
                            f"not {args.objective}.")
    if args.step_sampling != "uniform" and args.objective != "boss":
        raise BossflowError(f"--step-sampling {args.step_sampling} picks the steps of --objective boss, not of {args.objective}.")
    if args.learn_times and any(len(group) > 1 for _, group in students):
        raise BossflowError("--learn-times trains the times of one schedule per student; drop --budgets mixed "
                            "or pick one budget with --nfe K.")
    for folder, _ in students:
        _pipeline_lora.check_out_folder(folder, CONFIG_NAME, "a model", args.resume)
    return students


def _refuse_model_only_options(args: argparse.Namespace) -> None:
    """Refuse the recipe options a pipeline LoRA does not take yet (it trains one LoRA for all budgets)."""
    given = [name for name, on in (("--learn-times", args.learn_times), ("--step-sampling error", args.step_sampling != "uniform"),
                                   ("--lr-schedule cosine", args.lr_schedule != "constant"),
                                   (f"--budgets {args.budgets}", args.budgets != "mixed"),
                                   ("--pair-solver auto", args.pair_solver == "auto")) if on]
    if given:
        raise BossflowError(f"{', '.join(given)} apply to model directories only; a pipeline is straightened into one "
                            "LoRA for all its budgets, from --pair-solver euler (the default) or heun pairs.")


def _learned_meta(schedule: Any) -> dict[str, Any]:
    """The provenance of times learned from ``schedule``: its own, less what described its search's result."""
    kept = {k: v for k, v in schedule.meta.items() if k not in ("indices", "cost")}
    return {**kept, "method": "learned", "learned_from": schedule.meta.get("method")}


def run(args: argparse.Namespace) -> int:
    """Pairs, training, and the exported model directory ``--out``."""
    import torch

    from ..core.distributed import is_main, pick_device
    from ..core.schedules import Schedule
    from ..models.model_dir import load_model_dir
    from ..training.pairs import teacher_pairs
    from ..training.straighten import add_lora, learned_schedule, straighten

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _pipeline.resolve_defaults(args, {**_pipeline_lora.DEFAULTS, **DEFAULTS}, _pipeline_lora.OPTIONS)
    if _pipeline.is_pipeline(args):
        _refuse_model_only_options(args)
        return _pipeline_lora.run(args)
    if args.lr is None:
        args.lr = LORA_LR if args.lora_rank is not None else FULL_LR
    if args.learn_times is None:  # the default recipe trains the times wherever the rollout runs one schedule per student
        args.learn_times = args.objective == "rollout" and args.budgets != "mixed"
    teacher, config = load_model_dir(_teacher_folder(args))
    teacher = teacher.to(pick_device(args.device))
    schedules = _schedules(args.schedule, args.nfe, args.objective)
    students = _students(args, schedules)
    lora = _lora(args)
    if lora is not None:
        add_lora(teacher, lora)  # check the settings and peft before generating pairs
    out = Path(args.out)
    schedules_or_ends = schedules or [Schedule([0.0, 1.0])]
    pairs_dir = args.pairs if args.pairs is not None else out / "pairs"
    solver = _pair_solver(args, teacher, tuple(config["sample_shape"]), schedules_or_ends, pairs_dir)
    if args.samples is None:
        args.samples = SAMPLES[solver.method]
    pairs = teacher_pairs(
        teacher, schedules_or_ends, tuple(config["sample_shape"]), samples=args.samples, seed=args.seed,
        grid_steps=solver.grid_steps, grid_power=solver.grid_power, substeps=args.substeps, method=solver.method,
        batch_size=args.pair_batch_size, cache_dir=pairs_dir, model_id=str(args.model), progress=not args.quiet,
    )
    previous = None  # --budgets chained: the student each next (smaller) budget starts from
    for folder, group in students:
        try:
            student, record = straighten(
                teacher, pairs.select([s.nfe for s in group]) if group else pairs, objective=args.objective,
                steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                grad_clip=args.grad_clip, ema_decay=args.ema_decay, lora=lora, distance=args.distance, seed=args.seed,
                out_dir=folder, checkpoint_every=args.checkpoint_every, resume=args.resume,
                micro_batch=args.micro_batch, precision=args.precision, progress=not args.quiet,
                lr_schedule=args.lr_schedule, learn_times=args.learn_times, step_sampling=args.step_sampling,
                init=previous[1] if previous is not None else None,
            )
        except KeyboardInterrupt:
            print(f"bossflow: interrupted; the last checkpoint in {folder} is kept: rerun with --resume to continue.",
                  file=sys.stderr)
            return 130
        if is_main():  # rank 0 writes the model directory and reports
            if args.learn_times:
                group = [learned_schedule(record, **_learned_meta(group[0]))]
            record |= _started_from(previous, record["wall_seconds"])
            _export(args, folder, student, record, config, group, lora)
        if args.budgets == "chained":
            previous = (folder, student, record.get("chain_wall_seconds", record["wall_seconds"]))
    return 0


def _pair_solver(args: argparse.Namespace, teacher: Any, shape: tuple[int, ...], schedules: list[Any],
                 pairs_dir: Path) -> Any:
    """The teacher's fine solution for the pairs: the preset ``--pair-solver`` names (its grid overridable), or with
    ``auto`` the one the pairs folder was made with, else the one :func:`choose_pair_solver` measures best."""
    from ..core.distributed import is_main
    from ..training.pair_solver import PAIR_SOLVERS, PairSolver, cached_pair_solver, choose_pair_solver
    from ..training.pairs import state_times

    if args.pair_solver != "auto":
        preset = PAIR_SOLVERS[args.pair_solver]
        return PairSolver(preset.method, args.grid_steps or preset.grid_steps,
                          preset.grid_power if args.grid_power is None else args.grid_power)
    if args.grid_steps is not None or args.grid_power is not None or args.substeps != 1:
        raise BossflowError("--grid-steps, --grid-power and --substeps set the fine solution of --pair-solver euler or "
                            "heun; with --pair-solver auto (the default) name one of them too.")
    name = cached_pair_solver(pairs_dir)
    if name is None:
        name, errors = choose_pair_solver(teacher, shape, state_times(schedules), seed=args.seed)
        if not args.quiet and is_main():
            print(f"pair solver: {name} (RMSE on 64 noises against a 400-call Heun solution: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()) + ")")
    return PAIR_SOLVERS[name]


def _started_from(previous: tuple[Path, Any, float] | None, seconds: float) -> dict[str, Any]:
    """What a chained student's record says it started from, and the training time of the chain up to it (its own
    ``seconds`` and those of every student before it)."""
    if previous is None:
        return {}
    return {"started_from": str(previous[0]), "chain_wall_seconds": round(previous[2] + seconds, 1)}
