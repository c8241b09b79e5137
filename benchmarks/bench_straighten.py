"""Straightening on real trained teachers: BOSS (full, LoRA; per budget and mixed) vs reflow at equal steps.

What it measures
  For each teacher (the shipped ``digits`` TinyUNet; a Fashion-MNIST teacher with
  ``--fashion DIR``): Bellman schedules for NFE 2, 4, 6 (cost matrix on a 100-step uniform
  grid, 512 search noises, seed 0); teacher pairs from 16,384 noises (seed 0, states of the
  100-step Euler solution at the schedule times); then these students, every one trained
  for the same number of AdamW steps (batch 128, EMA 0.999):

  * ``BOSS full, NFE k``: one model per budget, trained on that schedule's steps only;
  * ``BOSS full, mixed``: one model for NFE 2, 4, 6 at once (as the paper);
  * ``BOSS LoRA r8, NFE 2`` and ``mixed``: rank-8 adapters on every Linear/Conv2d, merged;
  * ``rollout full, NFE 2``: the end-to-end objective (the student's own 2-step endpoint error);
  * ``reflow``: the reflow objective on the same teacher couplings (Liu et al. 2022);
  * ``... + re-searched``: the mixed BOSS model with Bellman schedules searched again on itself;
  * ``auto-euler full, NFE k`` (k = 2, 4): one model per budget straightened along the schedule
    of ``auto --family euler`` (step times and per-step evaluation times, searched on the same
    512 noises; the loss evaluates the model at ``s_a``), with its own teacher pairs; the
    teacher along those schedules is scored too (``teacher, auto-euler``). Issue 8 asks
    whether straightening along such a schedule beats straightening along Bellman's.

  Every model samples 2,000 fresh noises (seed 1) along the schedules and is scored by
  (a) the Fréchet distance on the shipped classifier's features as a ratio of the teacher's
  100-step Euler value (FD×), (b) endpoint RMSE against the teacher's 100-step Euler
  solution from the same noises (the paper's measure: a model can drift off its teacher and
  still score a low FD), (c) exact W2 (POT) on pixels against the real images.

Targets (issue 7)
  Straightened at 2 NFE: FD× ≤ 1.2 and RMSE ≤ 0.07, ahead of reflow on both; at 4 NFE:
  FD× ≤ 1.0 and RMSE ≤ 0.04.

Command
  python benchmarks/bench_straighten.py                      # digits: about an hour on one CPU thread
  python benchmarks/bench_straighten.py --fashion runs/fmnist --only fashion --steps 1000 --batch-size 64 \
      --samples 4096 --eval-samples 1000 --variants boss-full-nfe-2,boss-full-mixed-2-4-6,reflow

Trained students, pairs and scores are kept in ``--out`` (default ``bench-out/straighten``):
a rerun reuses them and only trains what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import bossflow as bf
from bossflow._io import write_json_atomic
from bossflow.checkpoints import CONFIG_NAME, load_model_dir, resolve_model_dir, save_model_dir
from bossflow.classifier import dataset_frechet_distance
from bossflow.metrics import wasserstein2
from bossflow.pairs import PairData, teacher_pairs
from bossflow.schedules import load_schedules, save_schedules
from bossflow.search import SEARCHES
from bossflow.straighten import LoraSettings, straighten

from _common import machine_line, markdown_table

NFES = (2, 4, 6)
AUTO_NFES = (2, 4)
"""Budgets straightened along ``auto --family euler``'s schedules."""


def real_images(name: str, n: int) -> torch.Tensor:
    if name == "digits":
        from bossflow.data.digits import load_digits

        return load_digits()
    from bossflow.data.fashion_mnist import load_fashion_mnist

    images = load_fashion_mnist(split="test")
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:n]]


def variants(steps: int, lora_rank: int) -> list[tuple[str, dict]]:
    """``(label, settings)`` of every student: budgets, objective, LoRA."""
    out = [(f"BOSS full, NFE {k}", {"nfes": [k]}) for k in NFES]
    out.append(("BOSS full, mixed 2/4/6", {"nfes": list(NFES)}))
    out += [(f"BOSS LoRA r{lora_rank}, NFE {k}", {"nfes": [k], "lora": lora_rank}) for k in (2,)]
    out.append((f"BOSS LoRA r{lora_rank}, mixed 2/4/6", {"nfes": list(NFES), "lora": lora_rank}))
    out.append(("rollout full, NFE 2", {"nfes": [2], "objective": "rollout"}))
    out.append(("reflow", {"nfes": list(NFES), "objective": "reflow"}))
    out += [(f"auto-euler full, NFE {k}", {"nfes": [k], "schedules": "auto-euler"}) for k in AUTO_NFES]
    return out


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")


def train_or_load(teacher, config, pairs, label, settings, steps, out: Path, batch_size: int = 128):
    folder = out / slug(label)
    if (folder / CONFIG_NAME).exists():
        model, saved = load_model_dir(folder)
        return model, saved["training"]
    lora = LoraSettings(rank=settings["lora"]) if "lora" in settings else None
    student, record = straighten(
        teacher, pairs.select(settings["nfes"]), objective=settings.get("objective", "boss"), steps=steps,
        batch_size=batch_size, lr=settings.get("lr", 1e-3 if lora else 3e-4), lora=lora, seed=0, out_dir=folder,
        checkpoint_every=500, resume=True, progress=False,
    )
    save_model_dir(student, folder, architecture=config["architecture"], kwargs=config["kwargs"],
                   sample_shape=config["sample_shape"], data=config.get("data"), training=record)
    return student, record


def auto_euler_schedules(name, spec, teacher, shape, grid, out: Path, args) -> tuple[dict, PairData]:
    """``auto --family euler``'s schedules for :data:`AUTO_NFES` (kept in ``out``) and their teacher pairs."""
    path = out / "auto-euler-schedules.json"
    if path.exists():
        found = load_schedules(path)
    else:
        started = time.perf_counter()
        found = SEARCHES["auto"](teacher, bf.gaussian_noise(512, shape, seed=0), grid, list(AUTO_NFES), family="euler")
        save_schedules(path, found.values())
        print(f"[{name}] auto-euler schedules in {time.perf_counter() - started:.0f} s:",
              {k: (s.times.round(3).tolist(), s.evaluation_times.round(3).tolist()) for k, s in found.items()}, flush=True)
    started = time.perf_counter()
    pairs = teacher_pairs(teacher, list(found.values()), shape, samples=args.samples, seed=0, grid_steps=100,
                          cache_dir=out / "pairs-auto-euler", model_id=spec, progress=False)
    print(f"[{name}] auto-euler pairs {tuple(pairs.states.shape)} in {time.perf_counter() - started:.0f} s", flush=True)
    return found, pairs


def bench_teacher(name: str, spec: str, args: argparse.Namespace) -> list[dict]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    teacher, config = load_model_dir(resolve_model_dir(spec))
    shape = tuple(config["sample_shape"])
    grid = bf.uniform_schedule(100).times
    started = time.perf_counter()
    schedules = SEARCHES["bellman"](teacher, bf.gaussian_noise(512, shape, seed=0), grid, list(NFES))
    print(f"[{name}] Bellman schedules in {time.perf_counter() - started:.0f} s:",
          {k: [round(float(t), 3) for t in s.times] for k, s in schedules.items()}, flush=True)
    started = time.perf_counter()
    pairs = teacher_pairs(teacher, list(schedules.values()), shape, samples=args.samples, seed=0, grid_steps=100,
                          cache_dir=out / "pairs", model_id=spec, progress=False)
    print(f"[{name}] pairs {tuple(pairs.states.shape)} in {time.perf_counter() - started:.0f} s", flush=True)

    noise = bf.gaussian_noise(args.eval_samples, shape, seed=1)
    data = real_images(name, args.eval_samples)

    def sample(model, schedule):
        with torch.no_grad():
            return torch.cat([bf.euler(model, noise[i:i + 500], schedule) for i in range(0, noise.shape[0], 500)])

    reference = sample(teacher, bf.uniform_schedule(100))
    fd_teacher = dataset_frechet_distance(name, reference)

    def score(model, schedule) -> dict:
        x = sample(model, schedule)
        return {"fd_ratio": dataset_frechet_distance(name, x) / fd_teacher, "rmse": bf.endpoint_rmse(x, reference),
                "w2": wasserstein2(x.flatten(1), data.flatten(1), max_exact=4000)}

    rows = [{"model": "teacher, 100 Euler steps", "nfe": 100, "fd": fd_teacher,
             "w2": wasserstein2(reference.flatten(1), data.flatten(1), max_exact=4000), "rmse": 0.0, "fd_ratio": 1.0}]
    for k in NFES:
        rows.append({"model": "teacher, uniform", "nfe": k, **score(teacher, bf.uniform_schedule(k))})
        rows.append({"model": "teacher, Bellman", "nfe": k, **score(teacher, schedules[k])})
    chosen = variants(args.steps, args.lora_rank)
    if args.variants:
        wanted = [w.strip() for w in args.variants.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {slug(label) for label, _ in chosen}]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; choose among {', '.join(slug(label) for label, _ in chosen)}")
        chosen = [(label, settings) for label, settings in chosen if slug(label) in wanted]
    along = {"bellman": (schedules, pairs)}
    if any(settings.get("schedules") == "auto-euler" for _, settings in chosen):
        along["auto-euler"] = auto_euler_schedules(name, spec, teacher, shape, grid, out, args)
        for k, schedule in along["auto-euler"][0].items():
            rows.append({"model": "teacher, auto-euler", "nfe": k, **score(teacher, schedule)})
    for label, settings in chosen:
        started = time.perf_counter()
        found, made = along[settings.get("schedules", "bellman")]
        student, record = train_or_load(teacher, config, made, label, settings, args.steps, out, args.batch_size)
        for k in settings["nfes"]:
            rows.append({"model": label, "nfe": k, "train_seconds": record.get("wall_seconds"),
                         "steps": record.get("steps"), **score(student, found[k])})
        print(f"[{name}] {label}: {time.perf_counter() - started:.0f} s", flush=True)
        if label.startswith("BOSS full, mixed"):
            again = SEARCHES["bellman"](student, bf.gaussian_noise(512, shape, seed=0), grid, list(NFES))
            for k in NFES:
                rows.append({"model": label + " + re-searched", "nfe": k, **score(student, again[k]),
                             "times": [round(float(t), 3) for t in again[k].times]})
    write_json_atomic(out / "scores.json", {"teacher": spec, "steps": args.steps, "samples": args.samples,
                                            "eval_samples": args.eval_samples, "rows": rows})
    return rows


def table(rows: list[dict]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows if r["nfe"] != 100))
    cells = {(r["model"], r["nfe"]): r for r in rows}
    body = []
    for m in models:
        line = [m]
        for k in NFES:
            r = cells.get((m, k))
            line.append("–" if r is None else f"{r['fd_ratio']:.2f}×, {r['rmse']:.3f}, {r['w2']:.2f}")
        body.append(line)
    return markdown_table(["model (cells: FD×, RMSE, W2)", *[f"{k} NFE" for k in NFES]], body)


def verdicts(rows: list[dict]) -> list[str]:
    cells = {(r["model"], r["nfe"]): r for r in rows}
    lines = []
    for k, fd_max, rmse_max in ((2, 1.2, 0.07), (4, 1.0, 0.04)):
        boss = [r for r in rows if r["nfe"] == k and r["model"].startswith("BOSS")]
        best = min(boss, key=lambda r: r["rmse"])
        ok = best["fd_ratio"] <= fd_max and best["rmse"] <= rmse_max
        lines.append(f"- NFE {k}: best BOSS student ({best['model']}) FD× {best['fd_ratio']:.2f} (target ≤ {fd_max}), "
                     f"RMSE {best['rmse']:.3f} (target ≤ {rmse_max}): {'PASS' if ok else 'FAIL'}")
        reflow = cells.get(("reflow", k))
        if reflow:
            ahead = best["fd_ratio"] < reflow["fd_ratio"] and best["rmse"] < reflow["rmse"]
            lines.append(f"- NFE {k}: ahead of reflow (FD× {reflow['fd_ratio']:.2f}, RMSE {reflow['rmse']:.3f}) "
                         f"on both: {'PASS' if ahead else 'FAIL'}")
    for k in AUTO_NFES:
        auto, boss = cells.get((f"auto-euler full, NFE {k}", k)), cells.get((f"BOSS full, NFE {k}", k))
        if auto and boss:
            lines.append(f"- NFE {k}: straightened along auto-euler's schedule FD× {auto['fd_ratio']:.2f}, RMSE "
                         f"{auto['rmse']:.3f}; along Bellman's FD× {boss['fd_ratio']:.2f}, RMSE {boss['rmse']:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", metavar="DIR", help="a Fashion-MNIST teacher's model directory")
    parser.add_argument("--only", choices=["digits", "fashion"], help="run one teacher")
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps of every student (default 4000)")
    parser.add_argument("--samples", type=int, default=16384, help="teacher trajectories for the pairs (default 16384)")
    parser.add_argument("--eval-samples", type=int, default=2000, help="evaluation noises (default 2000)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step of every student (default 128)")
    parser.add_argument("--variants", help="comma-separated subset of the students, by slug (e.g. boss-full-nfe-2,reflow)")
    parser.add_argument("--out", default="bench-out/straighten")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    teachers = []
    if args.only in (None, "digits"):
        teachers.append(("digits", "digits"))
    if args.fashion and args.only in (None, "fashion"):
        teachers.append(("fashion-mnist", args.fashion))
    for name, spec in teachers:
        started = time.perf_counter()
        rows = bench_teacher(name, spec, args)
        print(f"\n### {name} (teacher {spec}; {args.steps} steps per student; FD× = Fréchet distance / teacher's "
              f"100-step FD {rows[0]['fd']:.3g}; RMSE vs the teacher's 100-step solution; W2 on pixels vs real images; "
              f"teacher 100-step W2 {rows[0]['w2']:.3f})\n")
        print(table(rows))
        print()
        print("\n".join(verdicts(rows)))
        print(f"\n[{name}] total {time.perf_counter() - started:.0f} s")
        print(json.dumps({"scores": str(Path(args.out) / name / "scores.json")}))


if __name__ == "__main__":
    main()
