"""The demo: every schedule search on the exact mixture flows and the digits teacher, in numbers and pictures.

For each model of the plan (``gmm-2d`` and ``gmm-64d``, the exact Gaussian-mixture flows,
with every method of :data:`bossflow.search.SEARCHES` for NFE 2..10; the shipped ``digits``
teacher with a reduced set of methods and budgets, to stay within a few CPU minutes):

1. each search runs once for all budgets on ``search_samples`` noises (seed ``seed``);
2. every schedule is scored by :class:`bossflow.evaluate.ScheduleEvaluator` on
   ``eval_samples`` fresh noises (seed ``seed + 1``; data samples seed ``seed + 2``, the
   same noises and data as ``bossflow bench``): endpoint RMSE against the dopri5
   reference, W2 and MMD² to the data, the digits classifier's Fréchet distance for
   digits, NFE counted and sampling time;
3. figures: the schedules, error against NFE, the BOSS cost matrices with their Bellman
   paths, 2-D scatter plots at NFE 2 and 4, and digits sample grids at NFE 2, 4 and 6
   beside the teacher at 100 Euler steps.

Writes ``report.md`` (tables and figures), ``report.json``, ``report.csv`` and the PNGs.
Everything runs offline on CPU; matplotlib is needed for the figures only (without it the
report says so and the numbers are still written).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core._io import write_atomic, write_json_atomic
from ..core.errors import BossflowError

logger = logging.getLogger(__name__)

SCATTER_NFES = (2, 4)
GRID_NFES = (2, 4, 6)
SUMMARY_NFES = (2, 4, 6, 10)
PATH_NFES = (2, 4, 6, 10)  # Bellman paths drawn on the cost matrices
GRID_DIGITS = 16  # digits per mosaic
TEACHER_STEPS = 100

ROW_FIELDS = ("model", "method", "nfe", "rmse", "w2", "w2_kind", "mmd2", "fd", "nfe_spent", "sample_seconds",
              "search_seconds", "search_model_rows", "times", "eval_times")


@dataclass(frozen=True)
class DemoModel:
    """One model of the demo: which searches, budgets and sizes.

    Attributes:
        name: preset or shipped teacher name.
        methods: keys of :data:`bossflow.search.SEARCHES`.
        nfes: budgets.
        grid_steps: base grid intervals N of the grid-based searches.
        search_samples: search noises.
        eval_samples: evaluation noises.
        reference_tol: dopri5 tolerance of the reference solution (``None``: the evaluator's default).
        options: per-method keyword options for the search.
        students: shipped straightened models of this teacher, scored along the schedules they
            were straightened for (their ``schedules.json``) against the teacher's reference.
        seconds: expected seconds of each stage (``"reference"``, a method, a student) on one CPU
            thread: the progress bar's weights, so that its ETA holds across stages (1 s where missing).
    """

    name: str
    methods: tuple[str, ...]
    nfes: tuple[int, ...]
    grid_steps: int = 100
    search_samples: int = 256
    eval_samples: int = 1000
    reference_tol: float | None = None
    options: dict = field(default_factory=dict)
    students: tuple[str, ...] = ()
    seconds: dict = field(default_factory=dict)


def demo_plan(quick: bool = False) -> list[DemoModel]:
    """The demo's models and sizes; ``quick`` shrinks them for tests (seconds instead of minutes).

    The digits teacher gets fewer methods, budgets and noises than the mixtures: its network
    costs about 0.2 ms per sample and evaluation on one CPU core, so auto runs there with a
    shorter refinement (8 screening + 20 evaluations, 30 to continue) and the slow
    ``refined`` is left out (auto's refined candidates stand for it). On the mixtures
    ``refined`` gets 25 screening + 150 evaluations instead of 50 + 200; auto runs as
    ``bossflow schedule`` runs it.
    """
    from ..search import SEARCHES

    every = tuple(SEARCHES)
    if quick:
        fast = {"refined": {"steps": 30, "screen_steps": 10}, "auto": {"refine": {"steps": 15, "screen_steps": 5}, "continue_steps": 10}}
        mixtures = [DemoModel(m, every, (2, 4, 6), grid_steps=40, search_samples=48, eval_samples=200, options=fast)
                    for m in ("gmm-2d", "gmm-64d")]
        digits = DemoModel("digits", ("uniform", "bellman", "global-dp", "olss"), (2, 4, 6), grid_steps=20, search_samples=16,
                           eval_samples=100, reference_tol=1e-3, students=STUDENTS)
        return mixtures + [digits]
    # stage seconds measured on one thread of a 2-core machine (the other core busy); 1 s where left out
    seconds = {"gmm-2d": {"evolution": 2.1, "refined": 8.5, "auto": 3.9},
               "gmm-64d": {"global-dp": 3.6, "evolution": 3.3, "refined": 11.9, "auto": 4.2}}
    mixtures = [DemoModel(m, every, tuple(range(2, 11)), options={"refined": {"screen_steps": 25, "steps": 150}},
                          seconds=seconds[m])
                for m in ("gmm-2d", "gmm-64d")]
    digits = DemoModel(
        "digits", ("uniform", "edm", "shift", "bellman", "global-dp", "olss", "auto"), (2, 4, 6, 8, 10),
        grid_steps=100, search_samples=64, eval_samples=500, reference_tol=1e-4,
        options={"auto": {"refine": {"screen_steps": 8, "steps": 20}, "continue_steps": 30}},
        students=STUDENTS,
        seconds={"reference": 2.6, "uniform": 1.7, "edm": 1.6, "shift": 1.6, "bellman": 2.5, "global-dp": 5.9,
                 "olss": 2.4, "auto": 21.9},
    )
    return mixtures + [digits]


def _run_model(plan: DemoModel, loaded: Any, seed: int, tmp: Path, stage: Callable[[str], None]) -> dict[str, Any]:
    """Search and score one model (``loaded``: its :func:`~bossflow.models.loading.load_model` result); returns its
    rows, floor, evaluation info and what the figures need. ``stage(label)`` is called as each stage of
    :func:`demo_stages` starts."""
    from ..core.velocity import model_dtype
    from ..core.cost import load_cost_matrix
    from .evaluate import ScheduleEvaluator
    from ..core.noise import gaussian_noise
    from ..core.schedules import base_grid, uniform_schedule
    from ..search import SEARCHES
    from ..core.solvers import NFECounter, euler

    model, shape = loaded.model, loaded.sample_shape
    grid = base_grid("uniform", plan.grid_steps)
    nfes = sorted(set(plan.nfes))
    stage(f"{plan.name}: reference")
    search_noise = gaussian_noise(plan.search_samples, shape, seed=seed, dtype=model_dtype(model))
    evaluator = ScheduleEvaluator(model, shape, model_id=plan.name, samples=plan.eval_samples, seed=seed + 1,
                                  batch_size=plan.eval_samples, reference_tol=plan.reference_tol)
    ref = asdict(evaluator.reference_row())
    is_2d, is_image = tuple(shape) == (2,), len(shape) == 3
    out: dict[str, Any] = {"rows": [], "info": evaluator.info(), "scatter": {}, "grids": {}, "cost": None,
                           "floor": {k: ref[k] for k in ("rmse", "w2", "mmd2", "fd", "nfe_spent")}}
    if is_2d:
        out["data"] = evaluator.data.numpy()
        out["reference"] = evaluator.reference.numpy()
    if is_image:
        noise = evaluator.noise[:GRID_DIGITS]
        out["teacher"] = euler(model, noise, uniform_schedule(TEACHER_STEPS)).numpy()
    for method in plan.methods:
        stage(f"{plan.name}: {method}")
        options = dict(plan.options.get(method, {}))
        if method == "bellman":  # keep the cost matrix for the heat map
            options.update(checkpoint=tmp / f"cost-{plan.name}.npz", model_id=plan.name)
        counter = NFECounter(model)
        started = time.perf_counter()
        schedules = SEARCHES[method](counter, search_noise, grid, nfes, provenance={"model": plan.name}, **options)
        seconds = time.perf_counter() - started
        for k in nfes:
            row, samples = evaluator.score(schedules[k])
            r = asdict(row)
            out["rows"].append({**{f: r.get(f) for f in ROW_FIELDS}, "method": method, "sample_seconds": r["seconds"],
                                "search_seconds": seconds, "search_model_rows": counter.samples})
            if is_2d and k in SCATTER_NFES:
                out["scatter"].setdefault(k, {})[method] = samples.numpy()
            if is_image and k in GRID_NFES:
                out["grids"].setdefault(method, {})[k] = samples[:GRID_DIGITS].numpy()
        if method == "bellman":
            drawn = [k for k in PATH_NFES if k in nfes] or nfes[:4]
            out["cost"] = (load_cost_matrix(tmp / f"cost-{plan.name}.npz")[0],
                           {k: schedules[k].meta["indices"] for k in drawn})
    for name in plan.students:
        stage(f"{plan.name}: {name}")
        _score_student(name, evaluator, out, is_image)
    return out


STRAIGHTENED = "BOSS-straightened"
"""The method name of a shipped straightened student's rows."""
STUDENTS = ("digits-boss-2", "digits-boss-4")
"""The shipped straightened digits students, one per budget, each with the schedule it was trained along."""


def _score_student(name: str, evaluator: Any, out: dict[str, Any], is_image: bool) -> None:
    """Score a shipped straightened model along its own schedules; rows use the method :data:`STRAIGHTENED`."""
    from ..models.model_dir import load_model_dir, shipped_model_dir
    from ..core.schedules import load_schedules

    folder = shipped_model_dir(name)
    student, config = load_model_dir(folder)
    training = config.get("training", {})
    seconds = float(training.get("chain_wall_seconds", training.get("wall_seconds", 0.0)))  # a chained student's start too
    for k, schedule in sorted(load_schedules(folder / "schedules.json").items()):
        row, samples = evaluator.score(schedule, model=student)
        r = asdict(row)
        out["rows"].append({**{f: r.get(f) for f in ROW_FIELDS}, "method": STRAIGHTENED, "sample_seconds": r["seconds"],
                            "search_seconds": seconds, "search_model_rows": 0})
        if is_image and k in GRID_NFES:
            out["grids"].setdefault(STRAIGHTENED, {})[k] = samples[:GRID_DIGITS].numpy()


def _figures(results: dict[str, dict], report: dict, out: Path, stage: Callable[[str], None], dpi: int) -> list[str]:
    """Draw the figures (:func:`planned_figures`, in that order), calling ``stage`` as each starts; their names."""
    from . import figures

    rows = report["rows"]
    written = []

    def save(name: str, draw: Callable[..., Any]) -> None:
        stage(f"figure {name}")
        draw(out / name, dpi)
        written.append(name)

    for model in results:
        nfes = sorted({r["nfe"] for r in rows if r["model"] == model})
        shown = [k for k in (2, 4, 6, 10) if k in nfes] or nfes[:3]
        save(f"schedules-{model}.png", lambda p, d, m=model, s=shown: figures.plot_schedules(rows, m, s, p, dpi=d))
    floors = report["floors"]
    save("error-vs-nfe.png", lambda p, d: figures.plot_error_vs_nfe(
        rows, [[("rmse", "endpoint RMSE vs reference")], [("fd", "digits Fréchet distance"), ("w2", "W2 to data")]], floors, p,
        dpi=d))
    costs = {m: res["cost"] for m, res in results.items() if res["cost"] is not None}
    if costs:
        save("cost-matrices.png", lambda p, d: figures.plot_cost_matrices(costs, p, dpi=d))
    for model, res in results.items():
        for k, samples in sorted(res["scatter"].items()):
            scores = {r["method"]: f"RMSE {r['rmse']:.3g}, W2 {r['w2']:.3g}" for r in rows if r["model"] == model and r["nfe"] == k}
            scores["reference solver"] = f"W2 {floors[model]['w2']:.3g} (sampling floor)"
            save(f"scatter-{model}-nfe{k}.png",
                 lambda p, dpi, m=model, k=k, s=samples, d=res["data"], ref=res["reference"], sc=scores:
                 figures.plot_scatter(d, s, m, k, p, reference=ref, scores=sc, dpi=dpi))
        if res["grids"]:
            cells: dict[str, dict[int, str]] = {}
            for r in rows:
                if r["model"] == model and r["method"] in res["grids"]:
                    text = f"RMSE {r['rmse']:.3g}" + (f", FD {r['fd']:.3g}" if r.get("fd") is not None else "")
                    cells.setdefault(r["method"], {})[r["nfe"]] = text
            save(f"samples-{model}.png", lambda p, d, r=res, sc=cells: figures.plot_digit_grids(
                r["grids"], r["teacher"], f"teacher, {TEACHER_STEPS} Euler steps", p, scores=sc, dpi=d))
    return written


def _student_nfes(name: str) -> list[int]:
    from ..core.schedules import load_schedules
    from ..models.model_dir import shipped_model_dir

    return sorted(load_schedules(shipped_model_dir(name) / "schedules.json"))


def planned_figures(plan: list[DemoModel], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The figures :func:`run_demo` draws for ``plan`` (``shapes``: each model's sample shape), in order."""
    names = [f"schedules-{p.name}.png" for p in plan] + ["error-vs-nfe.png"]
    if any("bellman" in p.methods for p in plan):
        names.append("cost-matrices.png")
    for p in plan:
        shape, nfes = tuple(shapes[p.name]), set(p.nfes)
        if shape == (2,) and p.methods:
            names += [f"scatter-{p.name}-nfe{k}.png" for k in sorted(nfes & set(SCATTER_NFES))]
        if len(shape) == 3 and ((p.methods and nfes & set(GRID_NFES))
                                or any(set(_student_nfes(s)) & set(GRID_NFES) for s in p.students)):
            names.append(f"samples-{p.name}.png")
    return names


def demo_stages(plan: list[DemoModel], shapes: dict[str, tuple[int, ...]], figures: bool = True) -> list[tuple[str, int]]:
    """Every stage of :func:`run_demo` in order, as ``(label, weight)``: the progress bar's plan, fixed before the run.

    A model's stages are ``"MODEL: reference"``, one per method and one per student; then, with ``figures``,
    ``"figure NAME"`` per :func:`planned_figures`. A weight is the stage's expected tenths of a second
    (:attr:`DemoModel.seconds`; 1 s where missing, 0.5 s per figure), at least 1.
    """
    stages = []
    for p in plan:
        for name in ("reference", *p.methods, *p.students):
            stages.append((f"{p.name}: {name}", max(1, round(10 * p.seconds.get(name, 1.0)))))
    if figures:
        stages += [(f"figure {name}", 5) for name in planned_figures(plan, shapes)]
    return stages


class _Progress:
    """The demo's one progress bar over :func:`demo_stages`: it names the stage running and advances by each
    finished stage's weight, so its total never changes and its ETA weighs long stages as long."""

    def __init__(self, stages: list[tuple[str, int]], enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.weights = dict(stages)
        self.labels: list[str] = []
        self.bar = tqdm(total=sum(self.weights.values()), desc="demo", disable=not enabled,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def __call__(self, label: str) -> None:
        """``label`` starts: the previous stage is done."""
        if label not in self.weights:
            raise BossflowError(f"internal: the demo's stage {label!r} is not in its plan.")
        self._finish()
        self.labels.append(label)
        self.bar.set_postfix_str(label)

    def _finish(self) -> None:
        if self.labels:
            self.bar.update(self.weights[self.labels[-1]])

    def close(self) -> None:
        self._finish()
        self.bar.set_postfix_str("done")
        self.bar.close()


def run_demo(out_dir: str | os.PathLike, quick: bool = False, progress: bool = True, seed: int = 0,
             threads: int | None = 1) -> dict:
    """Run the demo and write ``report.md``, ``report.json``, ``report.csv`` and the figures into ``out_dir``.

    ``threads``: torch CPU threads for the run (restored afterwards; ``None``: leave torch's setting). One is
    the default: the demo's models are small, and on 2 cores one thread ran its searches 2 to 3 times faster
    than two, idle or beside other jobs. ``progress`` shows one bar over :func:`demo_stages`.

    Returns:
        The report: ``{"plan", "seed", "threads", "info", "rows", "floors", "notes", "figures", "seconds"}``; every row has
        ``model, method, nfe, rmse, w2, w2_kind, mmd2, fd, nfe_spent, sample_seconds,
        search_seconds, search_model_rows, times, eval_times``.
    """
    import torch

    from ..models.loading import load_model

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BossflowError(f"threads must be a positive integer or None, got {threads!r}.")
    started = time.perf_counter()
    plan = demo_plan(quick)
    notes = []
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BossflowError(f"cannot create the output folder {out}: {exc.strerror or exc}.") from None
    have_plots = importlib.util.find_spec("matplotlib") is not None
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        loaded = {p.name: load_model(p.name) for p in plan}
        shapes = {name: tuple(m.sample_shape) for name, m in loaded.items()}
        stage = _Progress(demo_stages(plan, shapes, figures=have_plots), enabled=progress)
        results: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="bossflow-demo-") as tmp:
            for p in plan:
                results[p.name] = _run_model(p, loaded[p.name], seed, Path(tmp), stage)
        report: dict[str, Any] = {
            "plan": [asdict(p) for p in plan],
            "seed": seed,
            "threads": torch.get_num_threads(),
            "info": {m: r["info"] for m, r in results.items()},
            "rows": [row for r in results.values() for row in r["rows"]],
            "floors": {m: r["floor"] for m, r in results.items()},
            "notes": notes,
            "figures": [],
        }
        if have_plots:
            report["figures"] = _figures(results, report, out, stage, dpi=60 if quick else 110)
        else:
            notes.append("No figures: matplotlib is not installed (`pip install matplotlib`).")
            logger.warning(notes[-1])
        stage.close()
    finally:
        torch.set_num_threads(previous_threads)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / "report.json", report)
    from .evaluate import rows_to_csv

    write_atomic(out / "report.csv", lambda f: f.write(rows_to_csv(report["rows"], ROW_FIELDS).encode()))
    write_atomic(out / "report.md", lambda f: f.write(format_report(report).encode()))
    return report


# ---------------------------------------------------------------------------------------------
# Text


METRICS = {
    "rmse": "endpoint RMSE per dimension vs the reference solution of the same noises",
    "w2": "Wasserstein-2 distance to data",
    "mmd2": "MMD² to data (Gaussian kernel, median-heuristic bandwidth, biased estimate)",
    "fd": "digits Fréchet distance (features of the shipped digits classifier) to the real digits",
}


DISTANCE_BOLD = ("Bold: the best of a column, only where it beats every other method by more than the reference "
                 "solver's own distance to data (the floor, the sampling noise of the measure); closer values are ties.")
"""How distances to data (W2, MMD², FD) are bolded, said under their tables."""


def bold_best(values: Sequence[float | None], floor: float | None = None) -> set[int]:
    """Which of one column's values to print in bold: the least, where it is a win.

    Without a floor (``None`` or 0, e.g. endpoint RMSE against the reference) every value equal
    to the least is bold. With a floor (the reference solver's own distance to data, the size of
    the sampling noise of W2, MMD² or the Fréchet distance) the least is bold only when it beats
    every other value by more than the floor; differences within the floor are ties, not wins.

    >>> sorted(bold_best([0.3, 0.1, None, 0.1]))
    [1, 3]
    >>> sorted(bold_best([0.05, 0.07, 0.4], floor=0.06)), sorted(bold_best([0.05, 0.2, 0.4], floor=0.06))
    ([], [0])
    """
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if not present:
        return set()
    best = min(v for v, _ in present)
    if not floor or floor <= 0:
        return {i for v, i in present if v == best}
    winners = [i for v, i in present if v == best]
    if len(winners) > 1 or any(v - best <= floor for v, i in present if i != winners[0]):
        return set()
    return {winners[0]}


def _cells(values: Sequence[float | None], floor: float | None, spec: str) -> list[str]:
    bold = bold_best(values, floor)
    return ["–" if v is None else (f"**{v:{spec}}**" if i in bold else f"{v:{spec}}") for i, v in enumerate(values)]


def _table(rows: list[dict], model: str, metric: str, floor: float | None = None) -> list[str]:
    mine = [r for r in rows if r["model"] == model and r.get(metric) is not None]
    methods = list(dict.fromkeys(r["method"] for r in mine))
    cell = {(r["method"], r["nfe"]): r[metric] for r in mine}
    lines = ["| NFE | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for k in sorted({r["nfe"] for r in mine}):
        lines.append(f"| {k} | " + " | ".join(_cells([cell.get((m, k)) for m in methods], floor, ".4g")) + " |")
    return lines


def format_summary(report: dict, metric: str = "rmse", nfes: tuple[int, ...] = SUMMARY_NFES) -> str:
    """One Markdown table over all models: methods as rows, (model, NFE) as columns, wins in bold (:func:`bold_best`).

    ``metric="distance"`` shows W2 for the mixtures and the digits Fréchet distance where it exists.
    """
    rows = report["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))

    def key_for(model: str) -> str:
        if metric != "distance":
            return metric
        return "fd" if any(r.get("fd") is not None for r in rows if r["model"] == model) else "w2"

    columns = [(m, k) for m in models for k in sorted({r["nfe"] for r in rows if r["model"] == m}) if k in nfes]
    value = {(r["model"], r["method"], r["nfe"]): r.get(key_for(r["model"])) for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    def title(m: str, k: int) -> str:
        return f"{m} K={k}" if metric != "distance" else f"{m} {'FD' if key_for(m) == 'fd' else 'W2'} K={k}"

    head = "| method | " + " | ".join(title(m, k) for m, k in columns) + " |"
    floors = report.get("floors", {})
    columns_cells = [_cells([value.get((m, meth, k)) for meth in methods],
                            None if key_for(m) == "rmse" else floors.get(m, {}).get(key_for(m)), ".3g")
                     for m, k in columns]
    lines = [head, "|---|" + "---|" * len(columns)]
    for j, meth in enumerate(methods):
        lines.append(f"| {meth} | " + " | ".join(col[j] for col in columns_cells) + " |")
    return "\n".join(lines)


def format_gain(report: dict) -> list[str]:
    """What straightening adds to the best schedule alone, per straightened budget (``[]`` without students).

    For each budget with a :data:`STRAIGHTENED` row: its Fréchet distance (RMSE where there is
    none) next to the best searched schedule's on the unchanged teacher, and their ratio; a
    ratio of 1 or less is no gain and is printed as such.
    """
    rows = report["rows"]
    lines = []
    for r in rows:
        if r["method"] != STRAIGHTENED:
            continue
        metric = "fd" if r.get("fd") is not None else "rmse"
        rivals = [o for o in rows if o["model"] == r["model"] and o["nfe"] == r["nfe"] and o["method"] != STRAIGHTENED
                  and o.get(metric) is not None]
        if not rivals:
            continue
        best = min(rivals, key=lambda o: o[metric])
        gain = best[metric] / r[metric]
        verdict = f"{gain:.2f}× lower" if gain > 1 else "no gain"
        lines.append(f"| {r['model']} | {r['nfe']} | {metric.upper()} | {r[metric]:.4g} | {best['method']}: "
                     f"{best[metric]:.4g} | {verdict} |")
    if not lines:
        return []
    return ["## Straightening: gain over the best schedule alone", "",
            "| model | NFE | metric | straightened | best schedule on the teacher | straightened vs schedule |",
            "|---|---|---|---|---|---|", *lines, ""]


def _caption(name: str) -> str:
    stem = name[:-4]
    if stem.startswith("schedules-"):
        return f"**{stem[10:]}: schedules.** Step times of each method's schedule (open markers: evaluation times where they differ)."
    if stem == "error-vs-nfe":
        return ("**Error against NFE.** Endpoint RMSE (top) and distance to data (bottom: W2 for the mixtures, the digits "
                "Fréchet distance for digits), log scale; dashed: the reference solver's own distance.")
    if stem == "cost-matrices":
        return "**BOSS cost matrices** with the Bellman paths chosen for several budgets K."
    if stem.startswith("scatter-"):
        model, _, nfe = stem[8:].rpartition("-nfe")
        return f"**{model} samples at NFE {nfe}**, per method, over exact data."
    if stem.startswith("samples-"):
        return f"**{stem[8:]} samples** at NFE {', '.join(map(str, GRID_NFES))} per method, and the teacher at {TEACHER_STEPS} Euler steps."
    return f"**{stem}**"


def format_report(report: dict) -> str:
    """The Markdown report: summary, per-model tables, search costs and figures."""
    rows = report["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [
        "# bossflow demo",
        "",
        ("Every schedule search on the exact Gaussian-mixture flows (`gmm-2d`, `gmm-64d`) and on the shipped digits "
         "teacher (a reduced set of methods and budgets), scored on fresh noises against a dopri5 reference and against "
         f"data. Offline, CPU; {report.get('seconds', 0):.0f} s in all. `{STRAIGHTENED}` rows are the shipped "
         "`digits-boss-2` and `digits-boss-4`: the digits teacher straightened for one budget each along its "
         "`--family euler` schedule (`bossflow straighten`'s default recipe; the search-cost entry is the training "
         "time, for `digits-boss-2` with that of the NFE-4 student it starts from), sampled along that schedule and "
         "measured against the teacher's reference like every other row."),
        "",
        *format_gain(report),
        "## Summary: endpoint RMSE (lower is better, best per column in bold)",
        "",
        format_summary(report, "rmse"),
        "",
        "## Summary: distance to data (W2 for the mixtures, digits Fréchet distance for digits)",
        "",
        f"*{DISTANCE_BOLD}*",
        "",
        format_summary(report, "distance"),
        "",
    ]
    for model in models:
        info = report["info"][model]
        floor = report["floors"][model]
        lines += [f"## {model}", "",
                  f"{info['samples']} evaluation noises; data: {info['data']}; reference: {info['reference']} "
                  f"({floor['nfe_spent']:.0f} NFE per sample). The reference solution's own distances (the floor): "
                  + ", ".join(f"{k} {floor[k]:.4g}" for k in ("w2", "mmd2", "fd") if floor.get(k) is not None) + ".", ""]
        for metric, title in METRICS.items():
            if any(r["model"] == model and r.get(metric) is not None for r in rows):
                lines += [f"### {model}: {title}", "", *_table(rows, model, metric, None if metric == "rmse" else floor.get(metric)), ""]
                if metric == "w2" and info.get("digits_fd"):
                    lines += [("W2 in pixel space rewards blurred samples (they sit near the data mean); read the "
                               "Fréchet distance below for sample quality."), ""]
        lines += [f"### {model}: search cost (all budgets together)", "", "| method | seconds | model rows |", "|---|---|---|"]
        seen = set()
        for r in rows:
            if r["model"] == model and r["method"] not in seen:
                seen.add(r["method"])
                lines.append(f"| {r['method']} | {r['search_seconds']:.2f} | {r['search_model_rows']:,} |")
        lines.append("")
    for note in report.get("notes", []):
        lines += [f"*{note}*", ""]
    if report.get("figures"):
        lines += ["## Figures", ""]
        for name in report["figures"]:
            lines += [f"{_caption(name)}", "", f"![{name}]({name})", ""]
    return "\n".join(lines)
