"""The ``bossflow`` command line: thin over the library.

Bad input prints one line ``bossflow: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from typing import Any, Sequence

from .errors import BossflowError

SCHEDULE_EXAMPLES = """\
examples:
  bossflow schedule --model gmm-2d --nfe 2,4,6,8 --out schedules.json   # auto, the default
  bossflow schedule --model digits --nfe 2,4,6 --family euler --out sched.json  # to straighten
  bossflow schedule --model digits --nfe 4 --family times --out sched.json   # for diffusers/flow_matching
  bossflow schedule --model gmm-64d --method bellman --nfe 4 --samples 512 --grid edm --grid-steps 200
  bossflow schedule --model mypkg.models:make_flow --shape 3,32,32 --nfe 4,6 --method bellman \\
      --cache runs/cost.npz --out runs/sched.json      # resumable: rerun to continue
  bossflow schedule --model gmm-2d --method uniform --nfe 4 --out uniform.json

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
digits-boss, fashion-mnist, gmm-2d-teacher), a model directory written by `bossflow teacher` or
`bossflow straighten`, or module:attribute / path/to/file.py:attribute naming a velocity
model model(x, t) -> v (t = 0 noise, t = 1 data) or a zero-argument factory returning one.
Prefix flow_matching: or torchcfm: (e.g. flow_matching:train.py:model) to wrap a model of
those libraries; see the README's Adapters section for diffusers and other conventions.
"""

DEMO_EXAMPLES = """\
examples:
  bossflow demo                       # full demo, a few minutes on CPU
  bossflow demo --quick --out /tmp/d  # reduced sizes, seconds
"""

EVALUATE_EXAMPLES = """\
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

BENCH_EXAMPLES = """\
examples:
  bossflow bench                                          # all searches, both mixtures, NFE 2..10
  bossflow bench --methods uniform,bellman,global-dp --nfe 2,4
  bossflow bench --methods bellman,auto --effort fast --nfe 2,4,8   # auto with its cheapest refinement
  bossflow bench --models mypkg.flows:make_model --shape 3,32,32 --nfe 4 --out runs/bench
"""


def _int_list(text: str) -> list[int]:
    """Comma-separated integers and ranges: ``2,4,6`` or ``2-10``."""
    values: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            low, sep, high = part.partition("-")
            values += list(range(int(low), int(high) + 1)) if sep and low else [int(part)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers such as 2,4,6 or 2-10, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _str_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .distributed import PRECISIONS
    from .search import SEARCHES
    from .search.auto import EFFORTS

    parser = argparse.ArgumentParser(
        prog="bossflow",
        description="Few-step sampling schedules for flow-matching models (BOSS, ICLR 2024).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "schedule",
        help="find few-step sampling schedules for a flow model (auto by default; BOSS with --method bellman)",
        description="Search a K-step sampling schedule of a model for every requested NFE and write them to one "
        "JSON file. The default, auto, keeps per budget the best of uniform steps, BOSS, OLSS and refined step and "
        "evaluation times on held-out noises; --method bellman is the paper's BOSS search alone (the BOSS cost matrix "
        "on a fine base grid, then dynamic programming).",
        epilog=SCHEDULE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute (see below)")
    p.add_argument("--nfe", type=_int_list, default=[2, 4, 6, 8], metavar="K[,K...]", help="step budgets (default: 2,4,6,8)")
    p.add_argument("--out", help="write the schedules to this JSON file")
    p.add_argument(
        "--method",
        choices=list(SEARCHES),
        default="auto",
        help="auto (default: the best of uniform, BOSS, OLSS and refined step/evaluation times per budget on held-out "
        "noises); bellman (BOSS: the cheapest search, one fine trajectory); global-dp, gits, ays, evolution, olss or "
        "refined (see README); uniform, edm and shift write a baseline schedule",
    )
    p.add_argument(
        "--family",
        choices=["any", "euler", "times"],
        default="any",
        help="for auto: which schedules it may return: any (default; OLSS-type steps included), euler (Euler steps "
        "with evaluation times, what straighten takes) or times (step times only, what diffusers and flow_matching take)",
    )
    p.add_argument(
        "--effort",
        choices=list(EFFORTS),
        default="standard",
        help="for auto: how much its refinement may spend: fast (about half the model evaluations), standard "
        "(default) or thorough (2-2.5 times as many); see below",
    )
    p.add_argument("--grid", choices=["uniform", "edm"], default="uniform", help="base grid family (default: uniform)")
    p.add_argument("--grid-steps", type=_positive_int, default=100, metavar="N", help="base grid intervals (default: 100)")
    p.add_argument("--samples", type=_positive_int, default=256, metavar="B", help="search noises (default: 256)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed (default: 0)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="samples integrated at once by bellman's cost matrix (default: 64)")
    p.add_argument(
        "--substeps",
        type=_positive_int,
        default=1,
        help="reference sub-steps per grid interval; 1 is the paper's cost (default: 1)",
    )
    p.add_argument("--reference", choices=["euler", "heun"], default="euler", help="reference sub-step method (default: euler)")
    p.add_argument("--shape", type=_int_list, metavar="D[,D...]", help="sample shape, for models that do not declare sample_shape")
    p.add_argument("--cache", metavar="PATH", help="cost-matrix checkpoint (.npz): resumable, and reused when finished")
    p.add_argument("--device", default="cpu",
                   help="torch device for noise and model: cpu, cuda, cuda:1, ... or auto (CUDA when present; "
                   "under torchrun each rank's own GPU) (default: cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="model arithmetic: fp32, or bf16 autocast for GPUs (states and costs keep --dtype) (default: fp32)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="state dtype (default: float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser(
        "demo",
        help="compare every schedule search on the mixture flows and the digits teacher; write a report with figures",
        description="Run uniform, EDM, time-shift, BOSS and the other searches on the exact 2-D and 64-D "
        "Gaussian-mixture flows (NFE 2..10) and on the shipped digits teacher (a reduced set), and report endpoint "
        "errors, W2, MMD² and the digits Fréchet distance, with figures (schedules, error vs NFE, cost matrices, "
        "samples). Offline, CPU, a few minutes.",
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--out", default="bossflow-demo", help="output folder (default: bossflow-demo)")
    d.add_argument("--quick", action="store_true", help="reduced sizes (for tests)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    b = sub.add_parser(
        "bench",
        help="run schedule searches side by side on any models",
        description="Run every schedule search (or those given) on each model, score every schedule on fresh "
        "noises (endpoint RMSE against a dopri5 reference, W2 to data) and report search time and model "
        "evaluations. Writes bench.md, bench.json and bench.csv.",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--models", type=_str_list, default=["gmm-2d", "gmm-64d"], metavar="M[,M...]",
                   help="presets or module:attribute specs (default: gmm-2d,gmm-64d)")
    b.add_argument("--methods", type=_str_list, default=list(SEARCHES), metavar="NAME[,NAME...]",
                   help=f"searches to run (default: all: {','.join(SEARCHES)})")
    b.add_argument("--nfe", type=_int_list, default=list(range(2, 11)), metavar="K[,K...]", help="budgets (default: 2..10)")
    b.add_argument("--grid-steps", type=_positive_int, default=100, metavar="N", help="base grid intervals (default: 100)")
    b.add_argument("--search-samples", type=_positive_int, default=256, metavar="B", help="search noises (default: 256)")
    b.add_argument("--eval-samples", type=_positive_int, default=1000, metavar="B", help="evaluation noises (default: 1000)")
    b.add_argument("--seed", type=_non_negative_int, default=0, help="search seed; evaluation uses seed + 1 (default: 0)")
    b.add_argument("--effort", choices=list(EFFORTS), default="standard",
                   help="auto's refinement budget, as for `bossflow schedule` (default: standard)")
    b.add_argument("--shape", type=_int_list, metavar="D[,D...]", help="sample shape for models without sample_shape")
    b.add_argument("--out", default="bossflow-bench", help="output folder (default: bossflow-bench)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "evaluate",
        help="measure schedules on a model: endpoint error, W2, MMD, digits Fréchet distance, NFE, time",
        description="Sample a model along each schedule from the same noises and measure endpoint RMSE against the "
        "dopri5 reference, distances to the data, NFE spent and wall time. Prints a Markdown table and writes "
        "evaluate.md, evaluate.json and evaluate.csv.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--model", required=True, help="preset, shipped teacher, model directory or module:attribute")
    e.add_argument("--schedule", action="append", required=True, metavar="FILE",
                   help="schedule file or family name (uniform, edm, shift); repeat for several")
    e.add_argument("--nfe", type=_int_list, metavar="K[,K...]", help="budgets to keep (default: every one in each file)")
    e.add_argument("--samples", type=_positive_int, default=1000, metavar="N", help="evaluation noises (default: 1000)")
    e.add_argument("--seed", type=_non_negative_int, default=1,
                   help="noise seed; data samples use seed + 1 (default: 1, fresh against `bossflow schedule`'s seed 0)")
    e.add_argument("--batch-size", type=_positive_int, default=500, metavar="B", help="noises sampled at once (default: 500)")
    e.add_argument("--shape", type=_int_list, metavar="D[,D...]", help="sample shape for models without sample_shape")
    e.add_argument("--inception", metavar="PATH", help="FID feature extractor (.pt2 or TorchScript .pt); needs --ref-stats")
    e.add_argument("--ref-stats", metavar="PATH", help="FID reference statistics .npz (mu, sigma); needs --inception")
    e.add_argument("--out", default="bossflow-eval", help="output folder (default: bossflow-eval)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    from .sample import add_sample_parser
    from .straighten import add_straighten_parser
    from .teachers import add_teacher_parser

    add_teacher_parser(sub)
    add_straighten_parser(sub)
    add_sample_parser(sub)
    return parser


def _format_times(times: Sequence[float]) -> str:
    return " ".join(f"{t:.4f}" for t in times)


def cmd_schedule(args: argparse.Namespace) -> int:
    import torch

    from .bellman import bellman_schedules
    from .cost import cost_matrix, model_fingerprint
    from .distributed import Autocast, is_main, pick_device
    from .loading import load_model
    from .noise import gaussian_noise
    from .schedules import SCHEDULE_FAMILIES, base_grid, save_schedules
    from .search import SEARCHES, WITH_PROGRESS

    nfes = sorted(set(args.nfe))
    if nfes[0] < 1:
        raise BossflowError(f"every --nfe must be at least 1, got {nfes[0]}.")
    if args.family != "any" and args.method != "auto":
        raise BossflowError(f"--family applies to --method auto only; drop it for --method {args.method}.")
    if args.effort != "standard" and args.method != "auto":
        raise BossflowError(f"--effort applies to --method auto only; drop it for --method {args.method}.")
    if args.method in SCHEDULE_FAMILIES:
        schedules = {k: SCHEDULE_FAMILIES[args.method](k) for k in nfes}
        costs = {k: None for k in nfes}
        provenance = {"method": args.method}
    else:
        if nfes[-1] > args.grid_steps:
            raise BossflowError(f"--nfe {nfes[-1]} exceeds --grid-steps {args.grid_steps}; use a finer grid.")
        loaded = load_model(args.model)
        shape = tuple(args.shape) if args.shape else loaded.sample_shape
        if shape is None:
            raise BossflowError(f"model {args.model!r} does not declare sample_shape; pass --shape, e.g. --shape 3,32,32.")
        device = pick_device(args.device)
        model = loaded.model
        if isinstance(model, torch.nn.Module):
            model = model.to(device)
        dtype = getattr(torch, args.dtype)
        if isinstance(model, torch.nn.Module) and args.dtype == "float64":
            model = model.double()
        model_id = None
        if args.precision == "bf16":
            model_id = f"{model_fingerprint(model)}+bf16-autocast"
            model = Autocast(model)
        grid = base_grid(args.grid, args.grid_steps)
        noise = gaussian_noise(args.samples, shape, seed=args.seed, dtype=dtype, device=device)
        provenance = {"model": loaded.model_id, "base_grid": args.grid, "grid_steps": args.grid_steps, "seed": args.seed}
        if args.method != "bellman":
            if args.cache:
                raise BossflowError(f"--cache applies to the bellman cost matrix only; drop it for --method {args.method}.")
            if args.reference != "euler" or args.substeps != 1:
                raise BossflowError(
                    f"--reference and --substeps set the bellman cost matrix's teacher; drop them for --method {args.method}."
                )
            options = {"progress": not args.quiet and is_main()} if args.method in WITH_PROGRESS else {}
            if args.method == "auto":
                options.update(family=args.family, effort=args.effort)
            schedules = SEARCHES[args.method](model, noise, grid, nfes, provenance=provenance, **options)
        else:
            cost = cost_matrix(
                model,
                noise,
                grid,
                batch_size=args.batch_size,
                substeps=args.substeps,
                reference=args.reference,
                checkpoint=args.cache,
                model_id=model_id,
                progress=not args.quiet,
            )
            provenance.update(samples=args.samples, substeps=args.substeps, reference=args.reference)
            if args.precision != "fp32":
                provenance.update(precision=args.precision)
            schedules = bellman_schedules(cost, grid, nfes, **provenance)
        costs = {k: s.meta.get("cost") for k, s in schedules.items()}

    print(f"{'NFE':>4}  {'cost':>11}  times")
    for k, sched in schedules.items():
        cost_text = f"{costs[k]:11.4e}" if costs[k] is not None else f"{'-':>11}"
        evals = "" if sched.eval_times is None else f"  (evaluated at {_format_times(sched.eval_times)})"
        chose = f"  [{sched.meta['selected']}]" if "selected" in sched.meta else ""
        print(f"{k:>4}  {cost_text}  {_format_times(sched.times)}{evals}{chose}")
    spent = next(iter(schedules.values())).meta
    if "fine_trajectories" in spent:
        print(f"auto spent {spent['fine_trajectories']:.1f} fine trajectories ({spent['model_rows']:,} model rows)")
    if args.out and is_main():
        save_schedules(args.out, schedules.values(), **provenance)
        print(f"wrote {len(schedules)} schedule(s) to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_summary, run_demo

    report = run_demo(args.out, quick=args.quick, progress=not args.quiet)
    models = ", ".join(report["floors"])
    print(f"# bossflow demo: {models} ({report['seconds']:.0f} s)\n")
    print("endpoint RMSE vs reference solution (lower is better, best per column in bold):\n")
    print(format_summary(report, "rmse"))
    print("\ndistance to data (W2 for the mixtures, digits Fréchet distance for digits):\n")
    print(format_summary(report, "distance"))
    figures = f" and {len(report['figures'])} figures" if report["figures"] else ""
    print(f"\nwrote {args.out}/report.md, report.json, report.csv{figures}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, format_bench, run_bench

    if args.effort != "standard" and "auto" not in args.methods:
        raise BossflowError("--effort sets auto's refinement budget; add auto to --methods or drop --effort.")
    config = BenchConfig(
        models=tuple(args.models),
        methods=tuple(args.methods),
        nfes=tuple(sorted(set(args.nfe))),
        grid_steps=args.grid_steps,
        search_samples=args.search_samples,
        eval_samples=args.eval_samples,
        seed=args.seed,
        shape=tuple(args.shape) if args.shape else None,
        options={"auto": {"effort": args.effort}},
    )
    report = run_bench(config, out_dir=args.out, progress=not args.quiet)
    print(format_bench(report))
    print(f"wrote {args.out}/bench.md, bench.json and bench.csv")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_evaluation

    report = evaluate(
        args.model, args.schedule, nfes=args.nfe, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
        inception=args.inception, ref_stats=args.ref_stats, out_dir=args.out,
        shape=tuple(args.shape) if args.shape else None, progress=not args.quiet,
    )
    print(format_evaluation(report))
    print(f"wrote {args.out}/evaluate.md, evaluate.json and evaluate.csv")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from .teachers import cmd_teacher as run_teacher

    return run_teacher(args)


def cmd_straighten(args: argparse.Namespace) -> int:
    from .straighten import cmd_straighten as run_straighten

    return run_straighten(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import cmd_sample as run_sample

    return run_sample(args)


COMMANDS = {"schedule": cmd_schedule, "demo": cmd_demo, "bench": cmd_bench, "evaluate": cmd_evaluate, "teacher": cmd_teacher,
            "straighten": cmd_straighten, "sample": cmd_sample}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Any:
    """Treat SIGTERM (``kill``, schedulers' pre-emption) like Ctrl-C: long jobs keep their last checkpoint.

    Background jobs started from a non-interactive shell ignore SIGINT, so SIGTERM is how they are
    stopped. Returns the previous handler (``None`` off the main thread), restored when ``main`` ends.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bossflow`` command. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs it; rank 0 prints and writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_sigterm = _stop_on_sigterm()
    joined = False
    where = ""
    try:
        if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:
            from .distributed import init_from_env, rank

            joined = init_from_env()
            where = f" (rank {rank()})" if rank() else ""
        with contextlib.redirect_stdout(io.StringIO()) if where else contextlib.nullcontext():
            return COMMANDS[args.command](args)
    except BossflowError as exc:
        print(f"bossflow: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bossflow: interrupted; finished batches are kept in --cache when one was given.", file=sys.stderr)
        return 130
    except Exception as exc:  # a model or library failure: one line, the traceback on request
        if os.environ.get("BOSSFLOW_DEBUG"):
            raise
        print(
            f"bossflow: error{where}: {type(exc).__name__}: {exc} (set BOSSFLOW_DEBUG=1 for the traceback)".replace("\n", " "),
            file=sys.stderr,
        )
        return 1
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)
        if joined:
            from .distributed import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
