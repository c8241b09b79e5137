"""Measuring schedules: ``bossflow evaluate``.

For one model and any number of schedules, every schedule samples the same evaluation
noises (``samples`` of them, seed ``seed``, default 1: fresh against the search noises of
``bossflow schedule``, seed 0) with the solver it was made for
(:func:`bossflow.search.sample_with`: Euler, or OLSS's linear steps), and gets:

* ``rmse``: endpoint RMSE per dimension against the dopri5 reference solution of the same
  noises (:func:`bossflow.reference_solve`);
* ``w2``: Wasserstein-2 distance to data samples, exact (POT) when both sets have at most
  2,000 samples, else sliced (``w2_kind`` says which);
* ``mmd2``: squared MMD to the data, Gaussian kernel, biased V-statistic, one bandwidth
  per model (the median heuristic on the data, recorded in the report);
* ``fd``: for digits and Fashion-MNIST, the Fréchet distance between features of the
  shipped classifier of that data set (:mod:`bossflow.classifier`) of the samples and of
  its reference: all 1,797 real digits, or the 10,000 Fashion-MNIST test images;
* ``fid``: only when the user supplies a feature extractor (``inception``) and reference
  statistics (``ref_stats``): the Fréchet distance on those features (real FID with
  Inception weights);
* ``nfe_spent``: model evaluations per sample, counted (:class:`bossflow.NFECounter`), and
  ``seconds``: wall time of sampling.

The data a model is compared with: exact samples for the mixture flows (seed ``seed + 1``);
the 1,797 real digits for the digits teacher (and any model directory trained on
digits); for a model directory trained on Fashion-MNIST, a random subset (seed
``seed + 1``) of ``min(max(samples, 2000), 10000)`` Fashion-MNIST test images, read from
the Debian ``dataset-fashion-mnist`` folder; exact ``gmm-2d`` samples for ``gmm-2d-teacher``;
otherwise the reference solutions of independent noises (seed ``seed + 1``), which
measures sampler error, not model quality.
A ``reference`` row scores the dopri5 solutions themselves: the floor of every distance.

Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core._io import write_atomic, write_json_atomic
from ..core.errors import BossflowError, FileFormatError
from ..core.metrics import endpoint_rmse, feature_statistics, frechet_distance, median_bandwidth, mmd2, wasserstein2
from ..core.noise import gaussian_noise
from ..core.schedules import SCHEDULE_FAMILIES, Schedule, load_schedules
from ..core.solvers import NFECounter, reference_solve

EXACT_W2_MAX = 2000
"""Largest sample set for the exact (optimal transport) W2; larger sets get the sliced W2."""

FID_HELP = (
    "give --inception PATH, a feature extractor saved with torch.export (.pt2) or TorchScript (.pt) that maps "
    "(B, C, H, W) float32 images in [0, 1] to (B, F) features (e.g. Inception pool3), and --ref-stats PATH, "
    "an .npz with 'mu' (F,) and 'sigma' (F, F) of the real images' features"
)


@dataclass
class EvalRow:
    """One schedule (or the reference solver) measured on one model.

    ``fd`` and ``fid`` are ``None`` where they do not apply.
    """

    model: str
    schedule: str
    method: str
    nfe: int
    nfe_spent: float
    rmse: float
    w2: float
    w2_kind: str
    mmd2: float
    fd: float | None
    fid: float | None
    seconds: float
    times: list[float] | None
    eval_times: list[float] | None


# ---------------------------------------------------------------------------------------------
# Inputs


def schedule_sources(specs: Sequence[str], nfes: Sequence[int] | None) -> list[tuple[str, Schedule]]:
    """Resolve ``--schedule`` values into labelled schedules.

    A value is a schedule file (every schedule in it, or those with an NFE in ``nfes``), or
    the name of a baseline family (``uniform``, ``edm``, ``shift``), which needs ``nfes``.
    The label is the file name without ``.json``, or the family name; repeated labels get
    ``#2``, ``#3``, ...

    Raises:
        BossflowError: a missing or malformed file, a family without ``nfes``, or an NFE
            that a file does not hold.
    """
    if not specs:
        raise BossflowError("give at least one schedule: --schedule FILE (written by `bossflow schedule`) or a family name.")
    wanted = sorted({int(k) for k in nfes}) if nfes else None
    if wanted and wanted[0] < 1:
        raise BossflowError(f"every --nfe must be at least 1, got {wanted[0]}.")
    out: list[tuple[str, Schedule]] = []
    seen: dict[str, int] = {}
    for spec in specs:
        path = Path(spec)
        if spec in SCHEDULE_FAMILIES and not path.exists():
            if not wanted:
                raise BossflowError(f"the baseline family {spec!r} needs budgets: add --nfe, e.g. --nfe 2,4,6.")
            label, found = spec, {k: SCHEDULE_FAMILIES[spec](k) for k in wanted}
        else:
            if not path.is_file():
                raise FileFormatError(
                    f"schedule file {spec} does not exist; give a file written by `bossflow schedule --out` "
                    f"or a family name ({', '.join(SCHEDULE_FAMILIES)})."
                )
            label, found = path.name.removesuffix(".json"), load_schedules(path)
            if wanted:
                missing = [k for k in wanted if k not in found]
                if missing:
                    raise FileFormatError(f"{spec} has no schedule with NFE {missing}; it has NFE {sorted(found)}.")
                found = {k: found[k] for k in wanted}
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        out += [(label, found[k]) for k in sorted(found)]
    return out


FASHION_MNIST_MIN_DATA = 2000
"""Fewest Fashion-MNIST test images a Fashion-MNIST model is compared with (W2, MMD²)."""


def data_for_model(spec: str, model: Callable[..., Tensor], shape: tuple[int, ...], n: int, seed: int,
                   dtype: torch.dtype) -> tuple[Tensor, str, str | None]:
    """The samples a model's outputs are compared with.

    Args:
        spec: the model's name (a model directory's config says what data it was trained on).
        model: the velocity model (mixture flows sample their data exactly).
        shape: shape of one sample.
        n: number of evaluation samples.
        seed: seed of sampled data and of the Fashion-MNIST subset.
        dtype: dtype of the returned data.

    Returns:
        ``(data, description, features)``: ``features`` names the feature classifier of
        :mod:`bossflow.classifier` whose Fréchet distance applies (``"digits"``,
        ``"fashion-mnist"``), or is ``None``; see the module docstring for the rules.

    Raises:
        BossflowError: a Fashion-MNIST model, but the data set is not installed.
    """
    if callable(getattr(model, "sample", None)):
        return model.sample(n, generator=torch.Generator().manual_seed(seed)), f"{n} exact mixture samples", None
    trained_on = _training_data_name(spec)
    if trained_on == "digits" and tuple(shape) == (1, 8, 8):
        from ..data.digits import load_digits

        digits = load_digits(dtype=dtype)
        return digits, f"the {digits.shape[0]:,} real digits (scikit-learn's load_digits, shipped)", "digits"
    if trained_on == "fashion-mnist" and tuple(shape) == (1, 28, 28):
        from .classifier import fashion_mnist_reference

        test = fashion_mnist_reference()
        m = min(max(n, FASHION_MNIST_MIN_DATA), test.shape[0])
        if m == test.shape[0]:
            return test.to(dtype, copy=True), f"the {m:,} Fashion-MNIST test images", "fashion-mnist"
        keep = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))[:m].sort().values
        return test[keep].to(dtype), (f"{m:,} Fashion-MNIST test images (a random subset of the {test.shape[0]:,}, "
                                      f"seed {seed}; at least {FASHION_MNIST_MIN_DATA:,})"), "fashion-mnist"
    if trained_on == "gmm-2d" and tuple(shape) == (2,):
        from ..models.networks import gmm_2d

        return gmm_2d().sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype), \
            f"{n} exact gmm-2d samples (the teacher's training distribution)", None
    noise = gaussian_noise(n, shape, seed=seed, dtype=dtype)
    return reference_solve(model, noise), f"{n} reference solutions of independent noises (no data known for this model)", None


def _training_data_name(spec: str) -> str | None:
    from ..models.model_dir import read_model_config, resolve_model_dir

    try:
        folder = resolve_model_dir(spec)
    except BossflowError:
        return None
    if folder is None:
        return None
    data = read_model_config(folder).get("data")
    return data.get("name") if isinstance(data, dict) else None


def load_feature_extractor(path: str | os.PathLike) -> Callable[[Tensor], Tensor]:
    """Load a user-supplied image feature extractor (for FID): ``torch.export`` (``.pt2``) or TorchScript.

    Raises:
        BossflowError: the file is missing or is neither format.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"Inception feature extractor {p} does not exist; {FID_HELP}.")
    try:
        if p.suffix == ".pt2":
            return torch.export.load(str(p)).module()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # a foreign or damaged file: one line
        raise FileFormatError(f"cannot load the feature extractor {p} ({type(exc).__name__}); {FID_HELP}.") from None


def load_reference_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` from an ``.npz`` holding ``mu`` ``(F,)`` and ``sigma`` ``(F, F)`` (pytorch-fid's format)."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"reference statistics {p} do not exist; {FID_HELP}.")
    try:
        with np.load(p, allow_pickle=False) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise FileFormatError(f"{p} is not an .npz with arrays 'mu' and 'sigma' ({exc}).".replace("\n", " ")) from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise FileFormatError(f"{p}: 'mu' must be (F,) and 'sigma' (F, F), got {mu.shape} and {sigma.shape}.")
    return mu, sigma


def check_fid_inputs(inception: str | os.PathLike | None, ref_stats: str | os.PathLike | None) -> None:
    """Check that FID's two files are both given (or neither) and exist, saying what to supply when not."""
    if inception is not None and not Path(inception).is_file():
        raise FileFormatError(f"Inception feature extractor {inception} does not exist; {FID_HELP}.")
    if (inception is None) != (ref_stats is None):
        raise BossflowError(f"FID needs both a feature extractor and reference statistics: {FID_HELP}.")
    if ref_stats is not None and not Path(ref_stats).is_file():
        raise FileFormatError(f"reference statistics {ref_stats} do not exist; {FID_HELP}.")


# ---------------------------------------------------------------------------------------------
# Measuring


class ScheduleEvaluator:
    """Scores schedules of one model on fixed evaluation noises; the shared set-up is done once.

    Args:
        model: velocity model ``model(x, t)``.
        shape: shape of one sample.
        model_id: the model's name in the report.
        samples: number of evaluation noises.
        seed: seed of the evaluation noises (default 1, apart from the search seed 0); data samples use ``seed + 1``.
        data: samples to compare with, or ``None`` to choose by :func:`data_for_model`.
        data_source: description of ``data`` when given.
        features: which feature classifier's Fréchet distance to compute (a name of
            :data:`bossflow.classifier.FEATURE_CLASSIFIERS`), or ``None`` for none; the default
            ``"auto"`` takes the one :func:`data_for_model` names (none when ``data`` is given).
            Chosen by :func:`data_for_model`, it is measured against the classifier's reference
            (all digits; the 10,000 Fashion-MNIST test images); else against ``data``'s features.
        digits: the older switch: ``True`` is ``features="digits"``, ``False`` is ``features=None``.
        batch_size: noises sampled at once.
        reference_tol: dopri5 ``rtol = atol``; default 1e-8 for float64 models, 1e-5 otherwise.
        inception: path of a feature extractor for FID (needs ``ref_stats``).
        ref_stats: path of the FID reference statistics (needs ``inception``).
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        shape: Sequence[int],
        *,
        model_id: str,
        samples: int = 1000,
        seed: int = 1,
        data: Tensor | None = None,
        data_source: str | None = None,
        features: str | None = "auto",
        digits: bool | None = None,
        batch_size: int = 500,
        reference_tol: float | None = None,
        inception: str | os.PathLike | None = None,
        ref_stats: str | os.PathLike | None = None,
    ) -> None:
        from ..core.velocity import model_dtype

        check_fid_inputs(inception, ref_stats)
        if not isinstance(samples, int) or samples < 2:
            raise BossflowError(f"evaluation needs at least 2 samples, got {samples!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise BossflowError(f"the batch size must be a positive integer, got {batch_size!r}.")
        self.shape = tuple(int(s) for s in shape)
        self.extractor = self.ref_stats = None
        if inception is not None:
            if len(self.shape) != 3:
                raise BossflowError(f"FID applies to images (C, H, W); model {model_id!r} makes samples of shape {self.shape}.")
            self.ref_stats = load_reference_stats(ref_stats)
            self.extractor = load_feature_extractor(inception)
        self.model, self.model_id, self.batch_size = model, model_id, batch_size
        self.dtype = model_dtype(model)
        self.noise = gaussian_noise(samples, self.shape, seed=seed, dtype=self.dtype)
        self.reference_tol = reference_tol or (1e-8 if self.dtype == torch.float64 else 1e-5)
        if digits is not None:
            if features not in ("auto", "digits" if digits else None):
                raise BossflowError(f"give features={features!r} or digits={digits!r}, not both.")
            features = "digits" if digits else None
        if features not in ("auto", None):
            from .classifier import feature_classifier

            feature_classifier(features)  # an unknown name fails before any work
        found = None
        if data is None:
            data, data_source, found = data_for_model(model_id, model, self.shape, samples, seed + 1, self.dtype)
        self.features: str | None = found if features == "auto" else features
        self.data, self.data_source = data, data_source or "given samples"
        self.bandwidth = median_bandwidth(self.data)
        self._fd_stats, self.fd_reference = None, None
        if self.features is not None:
            from .classifier import FEATURE_CLASSIFIERS, dataset_features, reference_statistics

            if self.features == found:  # data chosen for its data set: the classifier's whole reference
                self._fd_stats = reference_statistics(self.features)
                self.fd_reference = FEATURE_CLASSIFIERS[self.features].reference_text
            else:
                self._fd_stats = feature_statistics(dataset_features(self.features, self.data))
                self.fd_reference = "the data"
        self.reference, self.reference_nfe, self.reference_seconds = self._sample(
            lambda m, x: reference_solve(m, x, rtol=self.reference_tol, atol=self.reference_tol)
        )

    @property
    def digits(self) -> bool:
        """Whether the digits Fréchet distance is measured (``features == "digits"``)."""
        return self.features == "digits"

    def _sample(self, solve: Callable[[Callable[..., Tensor], Tensor], Tensor],
                model: Callable[..., Tensor] | None = None) -> tuple[Tensor, float, float]:
        """Run ``solve(model, noise_batch)`` batch by batch: ``(samples, model evaluations per sample, seconds)``."""
        counter = NFECounter(self.model if model is None else model)
        started = time.perf_counter()
        with torch.no_grad():
            out = torch.cat([solve(counter, self.noise[i:i + self.batch_size])
                             for i in range(0, self.noise.shape[0], self.batch_size)])
        return out, counter.samples / self.noise.shape[0], time.perf_counter() - started

    def _fid(self, samples: Tensor) -> float | None:
        if self.extractor is None:
            return None
        images = ((samples.detach().to(torch.float32).clamp(-1, 1) + 1) / 2)
        with torch.no_grad():
            feats = torch.cat([self.extractor(images[i:i + 200]) for i in range(0, images.shape[0], 200)])
        if feats.ndim != 2 or feats.shape[1] != self.ref_stats[0].size:
            raise BossflowError(
                f"the feature extractor gives features of shape {tuple(feats.shape)}, but the reference statistics have "
                f"{self.ref_stats[0].size} features; use statistics made with the same extractor."
            )
        return frechet_distance(*feature_statistics(feats), *self.ref_stats)

    def _row(self, samples: Tensor, *, schedule: str, method: str, nfe: int, nfe_spent: float, seconds: float,
             times: list[float] | None = None, eval_times: list[float] | None = None) -> EvalRow:
        fd = None
        if self._fd_stats is not None:
            from .classifier import dataset_features

            fd = frechet_distance(*feature_statistics(dataset_features(self.features, samples)), *self._fd_stats)
        n_max = max(samples.shape[0], self.data.shape[0])
        return EvalRow(
            model=self.model_id, schedule=schedule, method=method, nfe=nfe, nfe_spent=nfe_spent,
            rmse=endpoint_rmse(samples, self.reference) if samples is not self.reference else 0.0,
            w2=wasserstein2(samples, self.data, max_exact=EXACT_W2_MAX),
            w2_kind="exact" if n_max <= EXACT_W2_MAX else "sliced",
            mmd2=mmd2(samples, self.data, bandwidth=self.bandwidth),
            fd=fd, fid=self._fid(samples), seconds=seconds, times=times, eval_times=eval_times,
        )

    def reference_row(self) -> EvalRow:
        """The dopri5 reference solutions scored like a schedule: the floor of every distance."""
        return self._row(self.reference, schedule="reference", method=f"dopri5 (tol {self.reference_tol:g})",
                         nfe=round(self.reference_nfe), nfe_spent=self.reference_nfe, seconds=self.reference_seconds)

    def score(self, schedule: Schedule, label: str | None = None, *,
              model: Callable[..., Tensor] | None = None) -> tuple[EvalRow, Tensor]:
        """Sample along ``schedule`` and measure it: ``(row, samples)``.

        ``model`` samples instead of the evaluator's own model (e.g. a straightened student),
        measured against the same reference (the evaluator model's solution) and data.
        """
        from ..search import sample_with

        samples, spent, seconds = self._sample(lambda m, x: sample_with(m, x, schedule), model)
        method = str(schedule.meta.get("method", "custom"))
        if not bool(torch.isfinite(samples).all()):
            raise BossflowError(
                f"schedule {label or method!r} at NFE {schedule.nfe} gives non-finite samples (the sampler diverged); "
                "check its times, or leave it out."
            )
        row = self._row(
            samples, schedule=label or method, method=method, nfe=schedule.nfe, nfe_spent=spent, seconds=seconds,
            times=schedule.times.tolist(),
            eval_times=None if schedule.eval_times is None else schedule.eval_times.tolist(),
        )
        return row, samples

    def info(self) -> dict[str, Any]:
        """What the measurements were made against (goes into the report)."""
        return {
            "model": self.model_id, "shape": list(self.shape), "samples": int(self.noise.shape[0]),
            "data": self.data_source, "data_samples": int(self.data.shape[0]),
            "mmd_bandwidth": self.bandwidth, "mmd": "biased V-statistic of MMD^2, Gaussian kernel exp(-|a-b|^2 / (2 h^2)), "
            "h = median pairwise distance of the data",
            "reference": f"dopri5, rtol = atol = {self.reference_tol:g}", "digits_fd": self.digits,
            "fd_features": self.features, "fd_reference": self.fd_reference,
            "fid": self.extractor is not None,
        }


def evaluate(
    model: str,
    schedules: Sequence[str],
    *,
    nfes: Sequence[int] | None = None,
    samples: int = 1000,
    seed: int = 1,
    batch_size: int = 500,
    inception: str | os.PathLike | None = None,
    ref_stats: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    shape: Sequence[int] | None = None,
    progress: bool = False,
) -> dict:
    """Measure schedules on a model; write ``evaluate.json``, ``evaluate.csv`` and ``evaluate.md`` into ``out_dir`` when given.

    Args:
        model: preset, shipped teacher, model directory or ``module:attribute`` (as ``bossflow schedule``).
        schedules: schedule files or baseline family names (see :func:`schedule_sources`).
        nfes: budgets to keep (required for family names).
        samples: evaluation noises.
        seed: seed of the noises (data samples use ``seed + 1``); the default 1 keeps them apart
            from the search noises of ``bossflow schedule`` (seed 0).
        batch_size: noises sampled at once.
        inception: FID feature extractor path (with ``ref_stats``).
        ref_stats: FID reference statistics path (with ``inception``).
        out_dir: output folder.
        shape: sample shape for models that do not declare one.
        progress: show a progress bar.

    Returns:
        ``{"info": ..., "rows": [EvalRow as dict, ...]}``; the first row is the reference solver.
    """
    from tqdm.auto import tqdm

    from ..models.loading import load_model

    check_fid_inputs(inception, ref_stats)  # fail before any work
    sources = schedule_sources(schedules, nfes)
    loaded = load_model(model)
    sample_shape = tuple(shape) if shape else loaded.sample_shape
    if sample_shape is None:
        raise BossflowError(f"model {model!r} does not declare sample_shape; pass a shape (--shape).")
    evaluator = ScheduleEvaluator(loaded.model, sample_shape, model_id=loaded.model_id, samples=samples, seed=seed,
                                  batch_size=batch_size, inception=inception, ref_stats=ref_stats)
    rows = [evaluator.reference_row()]
    for label, sched in tqdm(sources, desc="evaluate", unit="schedule", disable=not progress):
        rows.append(evaluator.score(sched, label)[0])
    report = {"info": evaluator.info(), "rows": [asdict(r) for r in rows]}
    if out_dir is not None:
        write_report(out_dir, report, "evaluate")
    return report


# ---------------------------------------------------------------------------------------------
# Output

CSV_FIELDS = ("model", "schedule", "method", "nfe", "nfe_spent", "rmse", "w2", "w2_kind", "mmd2", "fd", "fid", "seconds",
              "times", "eval_times")


def _num(value: float | None, fmt: str = ".6g") -> str:
    return "" if value is None else format(value, fmt)


def rows_to_csv(rows: Sequence[dict], fields: Sequence[str] = CSV_FIELDS) -> str:
    """CSV text of row dicts, one line each (lists as space-separated numbers, ``None`` as empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for r in rows:
        cells = []
        for f in fields:
            v = r.get(f)
            if isinstance(v, list):
                cells.append(" ".join(f"{t:.6g}" for t in v))
            elif isinstance(v, float):
                cells.append(_num(v))
            else:
                cells.append("" if v is None else v)
        writer.writerow(cells)
    return buf.getvalue()


def format_table(rows: Sequence[dict], fd_label: str = "digits FD") -> str:
    """A Markdown table: one line per row, columns for the measures that apply; best schedule value in bold.

    Args:
        rows: :class:`EvalRow` dicts.
        fd_label: heading of the ``fd`` column.
    """
    has_fd = any(r.get("fd") is not None for r in rows)
    has_fid = any(r.get("fid") is not None for r in rows)
    cols = [("rmse", "RMSE"), ("w2", "W2"), ("mmd2", "MMD²")] + [("fd", fd_label)] * has_fd + [("fid", "FID")] * has_fid
    schedule_rows = [r for r in rows if r["schedule"] != "reference"]
    best = {}
    for key, _ in cols:
        for nfe in {r["nfe"] for r in schedule_rows}:
            values = [r[key] for r in schedule_rows if r["nfe"] == nfe and r.get(key) is not None]
            if values:
                best[(key, nfe)] = min(values)
    head = "| schedule | method | NFE | NFE spent | " + " | ".join(t for _, t in cols) + " | seconds |"
    lines = [head, "|---|---|---|---|" + "---|" * len(cols) + "---|"]
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            text = "–" if v is None else f"{v:.4g}"
            if v is not None and r["schedule"] != "reference" and math.isclose(v, best.get((key, r["nfe"]), math.nan)):
                text = f"**{text}**"
            cells.append(text)
        spent = f"{r['nfe_spent']:.4g}"
        lines.append(f"| {r['schedule']} | {r['method']} | {r['nfe']} | {spent} | " + " | ".join(cells) + f" | {r['seconds']:.3g} |")
    return "\n".join(lines)


def format_evaluation(report: dict) -> str:
    """Markdown: what was measured against, then the table."""
    info = report["info"]
    fd_name = info.get("fd_features") or ("digits" if info.get("digits_fd") else None)
    fd_text = "" if fd_name is None else (
        f" {fd_name} FD: Fréchet distance between the shipped {fd_name} classifier's features of the samples and of "
        f"{info.get('fd_reference') or 'the data'}."
    )
    w2_kinds = sorted({r["w2_kind"] for r in report["rows"]})
    lines = [
        f"# bossflow evaluate: {info['model']}",
        "",
        f"{info['samples']} evaluation noises; data: {info['data']}. RMSE: endpoint error per dimension against the "
        f"reference solution of the same noises ({info['reference']}). W2: {' / '.join(w2_kinds)} Wasserstein-2 to the data. "
        f"MMD²: {info['mmd']} (h = {info['mmd_bandwidth']:.4g})."
        + fd_text
        + (" FID: Fréchet distance of the supplied extractor's features to the reference statistics." if info["fid"] else "")
        + " The reference row is the floor of each distance. Best schedule per NFE in bold.",
        "",
        format_table(report["rows"], f"{fd_name} FD" if fd_name else "FD"),
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: str | os.PathLike, report: dict, stem: str) -> None:
    """Write ``{stem}.json``, ``{stem}.csv`` and ``{stem}.md`` into ``out_dir``, atomically."""
    out = Path(out_dir)
    write_json_atomic(out / f"{stem}.json", report)
    write_atomic(out / f"{stem}.csv", lambda f: f.write(rows_to_csv(report["rows"]).encode()))
    write_atomic(out / f"{stem}.md", lambda f: f.write(format_evaluation(report).encode()))
