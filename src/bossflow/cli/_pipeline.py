"""``--model diffusers:DIR`` on the command line: the pipeline options, prompts and loading shared by
``schedule`` and ``straighten``; for ``schedule``, its cost announced and the held-out table."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.errors import BossflowError
from ._args import non_negative_int, positive_float, positive_int

PREFIX = "diffusers:"
PIPELINE_OPTIONS = ("prompts", "prompt", "negative_prompt", "guidance_scale", "height", "width", "variant",
                    "max_calls", "holdout_prompts", "lora")
"""Options that only a pipeline takes (``--holdout-samples`` has a default and is ignored elsewhere)."""
DEFAULTS = {"method": ("auto", "bellman"), "samples": (256, 64), "grid_steps": (100, 40)}
"""Option -> (default for other models, default for pipelines): a pipeline search must fit a GPU budget."""
FINE_STEPS = 100
"""Euler steps of the held-out reference solution."""


def is_pipeline(args: argparse.Namespace) -> bool:
    return args.model.startswith(PREFIX)


def add_pipeline_arguments(g: argparse._ArgumentGroup) -> None:
    """The options of a pipeline's prompts, guidance, image size, weights and held-out table."""
    g.add_argument("--prompts", metavar="FILE", help="prompt file, UTF-8, one prompt per line (blank lines ignored)")
    g.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt; repeat for several (with or without --prompts)")
    g.add_argument("--negative-prompt", metavar="TEXT",
                   help="the unconditional prompt of classifier-free guidance (default: '' for SD3; Flux: true CFG only when given)")
    g.add_argument("--guidance-scale", type=positive_float, metavar="G",
                   help="guidance as the pipeline applies it (default: SD3 7.0, Flux 3.5); CFG counts two transformer calls")
    g.add_argument("--height", type=positive_int, metavar="PX", help="image height in pixels (default: the pipeline's)")
    g.add_argument("--width", type=positive_int, metavar="PX", help="image width in pixels (default: the pipeline's)")
    g.add_argument("--variant", metavar="NAME", help="weights variant to load, e.g. fp16")
    g.add_argument("--holdout-prompts", metavar="FILE",
                   help="prompts for the held-out table (default: the search prompts, on fresh noises)")
    g.add_argument("--holdout-samples", type=non_negative_int, default=8, metavar="B",
                   help="held-out noises of the table printed at the end (default: 8; 0 for none)")


def resolve_defaults(args: argparse.Namespace, defaults: dict[str, tuple[Any, Any]] = DEFAULTS,
                     options: tuple[str, ...] = PIPELINE_OPTIONS) -> None:
    """Fill the options left unset with ``defaults`` for this kind of model; refuse pipeline ``options`` elsewhere.

    ``defaults``: option -> (default for other models, default for pipelines).
    """
    pipeline = is_pipeline(args)
    for name, (plain, for_pipeline) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, for_pipeline if pipeline else plain)
    if not pipeline:
        given = [f"--{n.replace('_', '-')}" for n in options if getattr(args, n) not in (None, [], False)]
        if given:
            raise BossflowError(f"{', '.join(given)} apply to --model diffusers:DIR (a saved pipeline) only.")


def prompts_of(args: argparse.Namespace) -> list[str]:
    """The search prompts: ``--prompts`` then every ``--prompt``."""
    from ..adapters.pipelines import read_prompts

    prompts = (read_prompts(args.prompts) if args.prompts else []) + [p.strip() for p in args.prompt or [] if p.strip()]
    if not prompts:
        raise BossflowError("a pipeline search needs prompts: --prompts FILE (one per line) or --prompt TEXT.")
    return prompts


def load(args: argparse.Namespace, samples: int | None = None) -> Any:
    """The :class:`~bossflow.adapters.pipelines.PipelineModel` of ``--model diffusers:DIR``: ``samples`` (default
    ``--samples``) search noises on the search prompts and ``--holdout-samples`` held-out ones (seed ``--seed`` + 1),
    all encoded at once; ``--lora`` fused first when the command has it."""
    import torch

    from ..adapters.pipelines import pipeline_model, read_prompts
    from ..core.distributed import pick_device

    if args.quiet:
        _quiet_loading()
    return pipeline_model(
        args.model[len(PREFIX):], prompts_of(args), samples=samples or args.samples, seed=args.seed,
        negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale, height=args.height, width=args.width,
        device=pick_device(args.device), dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32,
        variant=args.variant, holdout_samples=args.holdout_samples, holdout_seed=args.seed + 1,
        holdout_prompts=read_prompts(args.holdout_prompts) if args.holdout_prompts else None,
        lora=getattr(args, "lora", None), lora_scale=getattr(args, "lora_scale", 1.0),
    )


def _quiet_loading() -> None:
    """No loading bars from diffusers and transformers (``--quiet``)."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def planned_calls(args: argparse.Namespace, calls_per_row: int) -> int:
    """Transformer calls of one fine trajectory per noise (what bellman spends for every budget at once)."""
    substeps = args.substeps * (2 if args.reference == "heun" else 1)
    return args.samples * args.grid_steps * substeps * calls_per_row


def expected_calls(args: argparse.Namespace, nfes: list[int], calls_per_row: int) -> int:
    """The calls a search is expected to make: bellman one fine trajectory, the others about 7 per budget."""
    return planned_calls(args, calls_per_row) * (1 if args.method == "bellman" else 7 * len(nfes))


def holdout_calls(args: argparse.Namespace, nfes: list[int], calls_per_row: int) -> int:
    """Transformer calls of the held-out table: the fine reference, then each budget searched and default."""
    return args.holdout_samples * (FINE_STEPS + 2 * sum(nfes)) * calls_per_row


def announce(args: argparse.Namespace, nfes: list[int], calls_per_row: int) -> None:
    """Print what the search will cost before it starts; refuse a bellman search that cannot fit ``--max-calls``."""
    one = planned_calls(args, calls_per_row)
    cfg = " (classifier-free guidance: 2 calls per velocity)" if calls_per_row == 2 else ""
    if args.method == "bellman":
        print(f"the search makes {one:,} transformer calls{cfg}: {args.samples} noises x {args.grid_steps} steps")
        if args.max_calls is not None and one > args.max_calls:
            raise BossflowError(f"bellman needs {one:,} transformer calls, more than --max-calls {args.max_calls:,}; "
                                "lower --samples or --grid-steps, or raise --max-calls.")
    else:
        print(f"one fine trajectory per noise is {one:,} transformer calls{cfg}; {args.method} spends several "
              f"(auto: about 7 per budget with --effort standard, 4 with fast), so about "
              f"{expected_calls(args, nfes, calls_per_row):,} for NFE {','.join(map(str, nfes))}")
    if args.holdout_samples:
        print(f"then the held-out table makes {holdout_calls(args, nfes, calls_per_row):,} more "
              f"({args.holdout_samples} noises, {FINE_STEPS}-step reference; --holdout-samples 0 to skip it)")


def budgeted(target: Any, args: argparse.Namespace, nfes: list[int]) -> Any:
    """The pipeline's velocity counting its transformer calls, stopping at ``--max-calls``, printing a time estimate."""
    from ..adapters.pipelines import TransformerBudget

    calls_per_row = 2 if target.provenance["cfg"] else 1
    expected = expected_calls(args, nfes, calls_per_row)

    def report(seconds_per_call: float) -> None:
        total = seconds_per_call * expected
        when = f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"
        print(f"first batch: {seconds_per_call * 1e3:.2f} ms per transformer call, about {when} for {expected:,} calls",
              flush=True)

    return TransformerBudget(target.model, calls_per_row, max_calls=args.max_calls, report=report)


def holdout_table(target: Any, args: argparse.Namespace, schedules: dict[int, Any]) -> None:
    """Print each budget's held-out latent RMSE beside the pipeline's own default schedule at the same NFE.

    ``target`` is the :class:`~bossflow.adapters.pipelines.PipelineModel` the search ran on; its
    held-out noises use seed ``--seed`` + 1.
    """
    import torch

    from ..core.distributed import pick_device
    from ..core.noise import gaussian_noise
    from ..evaluation.holdout import holdout_rows, scheduler_schedule

    if target.holdout_cond is None:
        return
    seed = args.seed + 1
    noise = gaussian_noise(args.holdout_samples, target.sample_shape, seed=seed, dtype=getattr(torch, args.dtype),
                           device=pick_device(args.device))
    usable = {k: s for k, s in schedules.items() if "olss" not in s.meta and not s.has_eval_times}
    defaults = {k: scheduler_schedule(target.scheduler, k, target.mu) for k in usable}
    rows = holdout_rows(target.model, noise, target.holdout_cond, usable, defaults, fine_steps=FINE_STEPS)
    print_holdout(args, "the search prompts", f"{FINE_STEPS} Euler steps",
                  [("NFE", 4, "d"), ("searched", 9, ".4f"), ("pipeline default", 16, ".4f"),
                   ("default / searched", 18, ".2f")],
                  [[row["nfe"], row["rmse"], row["default_rmse"], row["gain"]] for row in rows])


def print_holdout(args: argparse.Namespace, prompts: str, against: str, columns: list[tuple[str, int, str]],
                  rows: list[list[Any]]) -> None:
    """Print a held-out table: what it was scored on, then ``columns`` (title, width, format) of ``rows``.

    Args:
        prompts: how to name the prompts when ``--holdout-prompts`` is not given.
        against: the reference the latent RMSE is measured against.
    """
    where = f"held-out prompts ({args.holdout_prompts})" if args.holdout_prompts else prompts
    print(f"\nheld-out: {args.holdout_samples} fresh noises (seed {args.seed + 1}) on {where}; latent RMSE against "
          f"{against}")
    print("  ".join(f"{title:>{width}}" for title, width, _ in columns))
    for row in rows:
        print("  ".join(f"{value:{width}{spec}}" for (_, width, spec), value in zip(columns, row)))
