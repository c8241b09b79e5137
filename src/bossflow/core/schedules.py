"""Sampling schedules: the :class:`Schedule` file format and the baseline families.

Time convention (DESIGN.md): ``t = 0`` is noise, ``t = 1`` is data. A schedule of
K steps is K + 1 strictly increasing float64 times from 0 to 1; Euler spends one
model evaluation (NFE) per step. A schedule may also carry per-step *evaluation
times* ``s_k`` (K of them): Euler then computes ``x_{k+1} = x_k + (t_{k+1} - t_k)
v(x_k, s_k)``. Without them ``s_k = t_k``.

Baseline families, each a function ``nfe -> Schedule``:

* :func:`uniform_schedule`: equal steps.
* :func:`edm_schedule`: Karras et al. (2022) rho-spacing of the noise level.
* :func:`shifted_schedule`: the SD3 time shift (Esser et al., 2024).
* :func:`custom_schedule`: any user list of times, validated.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ._io import read_json, write_json_atomic
from .errors import FileFormatError, ScheduleError

SCHEDULE_FORMAT = "bossflow.schedule/1"


def validate_times(times: Any, what: str = "schedule times") -> np.ndarray:
    """Check and return ``times`` as a float64 array: finite, strictly increasing, 0 (noise) first, 1 (data) last.

    The one validation of times in bossflow: every public function that takes a schedule,
    a base grid or a list of step times passes it here, so each accepts the same four forms.

    Args:
        times: a :class:`Schedule` (its step times), a 1-D tensor, a numpy array or a list
            of at least two times.
        what: how to name the input in the error message.

    Returns:
        ``(K + 1,)`` float64 array (a new, writable one).

    Raises:
        ScheduleError: with a sentence naming the first problem found.

    Example:
        >>> validate_times(uniform_schedule(2)).tolist(), validate_times([0, 0.5, 1]).tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    """
    try:
        if isinstance(times, Schedule):
            arr = np.array(times.times, dtype=np.float64)
        elif hasattr(times, "detach"):
            arr = times.detach().cpu().double().numpy().copy()
        else:
            arr = np.array(times, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ScheduleError(
            f"{what} must be a Schedule, a tensor, a numpy array or a list of numbers, got {type(times).__name__}."
        ) from None
    if arr.ndim != 1:
        raise ScheduleError(f"{what} must be a 1-D list of times, got shape {tuple(arr.shape)}.")
    if arr.size < 2:
        raise ScheduleError(f"{what} need at least two times (0 and 1), got {arr.size}.")
    if not np.all(np.isfinite(arr)):
        raise ScheduleError(f"{what} contain a non-finite value (NaN or inf); every time must be in [0, 1].")
    if arr[0] != 0.0 or arr[-1] != 1.0:
        raise ScheduleError(
            f"{what} must start at 0 (noise) and end at 1 (data), got {arr[0]:g} ... {arr[-1]:g}."
        )
    steps = np.diff(arr)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        raise ScheduleError(
            f"{what} must be strictly increasing, but time {k + 1} ({arr[k + 1]:g}) is not after time {k} ({arr[k]:g})."
        )
    return arr


def as_schedule(times: Any, what: str = "schedule times") -> "Schedule":
    """``times`` as a :class:`Schedule`: a Schedule as it is, else an Euler schedule on those times.

    Args:
        times: a :class:`Schedule`, or its ``(K + 1,)`` step times as a tensor, array or list
            (checked by :func:`validate_times`; ``t = 0`` noise, ``t = 1`` data).
        what: how to name the input in the error message.

    Raises:
        ScheduleError: malformed times.
    """
    if isinstance(times, Schedule):
        return times
    return Schedule(validate_times(times, what), method="custom")


def check_euler_schedule(schedule: "Schedule", where: str) -> None:
    """Refuse an OLSS schedule (a linear multistep update, not Euler steps) where only Euler steps can be used.

    Args:
        where: what cannot use it, e.g. ``"straightening"`` or ``"diffusers' scheduler"``.
    """
    if "olss" in schedule.meta:
        raise ScheduleError(
            f"the schedule with NFE {schedule.nfe} is an OLSS schedule (a linear multistep update, not Euler steps), "
            f"which {where} cannot use; take an Euler schedule (`bossflow schedule --family euler`, or --method bellman, "
            f"refined, uniform, ...)."
        )


def step_times_for(schedule: Any, sampler: str, instead: str) -> np.ndarray:
    """The ``(K + 1,)`` step times of ``schedule`` for a sampler that evaluates the model at each step's start.

    Args:
        schedule: a :class:`Schedule` (Euler, without evaluation times) or a list of times.
        sampler: the sampler, for the message, e.g. ``"flow_matching's ODESolver"``.
        instead: how to sample such a schedule with bossflow instead, for the message.

    Raises:
        ScheduleError: an OLSS schedule, a schedule with evaluation times, or malformed times.
    """
    if not isinstance(schedule, Schedule):
        return validate_times(schedule)
    check_euler_schedule(schedule, sampler)
    if schedule.has_eval_times:
        raise ScheduleError(
            f"this schedule evaluates the model at its own eval_times, but {sampler} evaluates at the step starts, "
            f"so it cannot honour them; sample with {instead} instead, or use a schedule without eval_times "
            "(`bossflow schedule --family times`)."
        )
    return np.asarray(schedule.times)


def validate_eval_times(eval_times: Any, times: np.ndarray) -> np.ndarray:
    """Check per-step evaluation times: one finite value in [0, 1] per step of ``times``.

    Returns:
        ``(K,)`` float64 array.
    """
    try:
        if hasattr(eval_times, "detach"):
            eval_times = eval_times.detach().cpu().double().numpy()
        arr = np.asarray(eval_times, dtype=np.float64)
    except (TypeError, ValueError):
        raise ScheduleError("evaluation times must be a list of numbers.") from None
    n_steps = times.size - 1
    if arr.ndim != 1 or arr.size != n_steps:
        raise ScheduleError(
            f"evaluation times need one value per step ({n_steps}), got shape {tuple(arr.shape)}."
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ScheduleError("evaluation times must be finite and within [0, 1].")
    return arr


@dataclass(frozen=True, eq=False)
class Schedule:
    """A K-step sampling schedule: K + 1 times from 0 (noise) to 1 (data).

    Attributes:
        times: ``(K + 1,)`` float64, strictly increasing, first 0, last 1.
        eval_times: ``(K,)`` float64 evaluation times ``s_k`` or ``None`` (meaning ``s_k = t_k``).
        meta: provenance (method, model id, base grid, samples, seed, cost, ...), JSON-serialisable.

    Example:
        >>> s = Schedule([0.0, 0.25, 1.0], method="manual")
        >>> s.nfe, s.to_sigmas().tolist()
        (2, [1.0, 0.75, 0.0])
    """

    times: np.ndarray
    eval_times: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __init__(self, times: Any, eval_times: Any = None, **meta: Any) -> None:
        arr = validate_times(times)
        arr.setflags(write=False)
        object.__setattr__(self, "times", arr)
        if eval_times is not None:
            ev = validate_eval_times(eval_times, arr)
            ev.setflags(write=False)
            eval_times = ev
        object.__setattr__(self, "eval_times", eval_times)
        object.__setattr__(self, "meta", dict(meta))

    @property
    def nfe(self) -> int:
        """Number of steps K (= model evaluations for Euler)."""
        return int(self.times.size - 1)

    @property
    def steps(self) -> np.ndarray:
        """``(K,)`` step sizes ``t_{k+1} - t_k``."""
        return np.diff(self.times)

    @property
    def evaluation_times(self) -> np.ndarray:
        """``(K,)`` times at which the model is evaluated: ``eval_times`` or ``times[:-1]``."""
        return self.times[:-1] if self.eval_times is None else self.eval_times

    @property
    def has_eval_times(self) -> bool:
        """Whether the model is evaluated anywhere but at the step starts."""
        return self.eval_times is not None and not np.array_equal(self.eval_times, self.times[:-1])

    def to_sigmas(self) -> np.ndarray:
        """``(K + 1,)`` noise levels ``sigma = 1 - t`` (diffusers' flow-matching convention), from 1 down to 0."""
        return 1.0 - self.times

    def with_meta(self, **meta: Any) -> "Schedule":
        """A copy with ``meta`` entries added or replaced."""
        return Schedule(self.times, self.eval_times, **{**self.meta, **meta})

    def to_dict(self) -> dict:
        """JSON-ready dict (without the format tag)."""
        out: dict[str, Any] = {"nfe": self.nfe, "times": [float(t) for t in self.times]}
        if self.eval_times is not None:
            out["eval_times"] = [float(s) for s in self.eval_times]
        out["meta"] = _jsonable(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "schedule") -> "Schedule":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "times" not in data:
            raise FileFormatError(f"{source} has no 'times' list; was it written by bossflow?")
        meta = data.get("meta", {}) or {}
        if not isinstance(meta, Mapping):
            raise FileFormatError(f"{source} has a 'meta' entry that is not an object.")
        return cls(data["times"], data.get("eval_times"), **meta)

    def save(self, path: str | os.PathLike) -> None:
        """Write this schedule as JSON (format ``bossflow.schedule/1``), atomically."""
        save_schedules(path, [self])

    @classmethod
    def load(cls, path: str | os.PathLike, nfe: int | None = None) -> "Schedule":
        """Read a schedule file; ``nfe`` picks one when the file holds several budgets.

        Raises:
            FileFormatError: missing file, wrong format, or an ambiguous/missing ``nfe``.
        """
        schedules = load_schedules(path)
        if nfe is None:
            if len(schedules) != 1:
                raise FileFormatError(
                    f"{path} holds schedules for NFE {sorted(schedules)}; pass nfe= to pick one."
                )
            return next(iter(schedules.values()))
        if nfe not in schedules:
            raise FileFormatError(f"{path} has no schedule with NFE {nfe}; it has NFE {sorted(schedules)}.")
        return schedules[nfe]

    def __len__(self) -> int:
        return self.times.size

    def __repr__(self) -> str:
        times = ", ".join(f"{t:.4g}" for t in self.times)
        extra = "" if self.eval_times is None else ", eval_times=[" + ", ".join(f"{s:.4g}" for s in self.eval_times) + "]"
        method = self.meta.get("method")
        tag = f", method={method!r}" if method else ""
        return f"Schedule(nfe={self.nfe}, times=[{times}]{extra}{tag})"


def save_schedules(path: str | os.PathLike, schedules: Iterable[Schedule], **provenance: Any) -> None:
    """Write one or several schedules to one JSON file, atomically.

    Args:
        path: output file.
        schedules: schedules with distinct NFE.
        provenance: shared metadata stored at the top of the file.
    """
    schedules = list(schedules)
    if not schedules:
        raise ScheduleError("there are no schedules to save.")
    nfes = [s.nfe for s in schedules]
    if len(set(nfes)) != len(nfes):
        raise ScheduleError(f"schedules in one file need distinct NFE, got {nfes}.")
    doc = {"format": SCHEDULE_FORMAT, "provenance": _jsonable(provenance), "schedules": [s.to_dict() for s in schedules]}
    write_json_atomic(path, doc)


def load_schedules(path: str | os.PathLike) -> dict[int, Schedule]:
    """Read every schedule of a file written by :func:`save_schedules` or :meth:`Schedule.save`.

    Returns:
        ``{nfe: Schedule}`` sorted by NFE.
    """
    doc = read_json(path, "schedule")
    if not isinstance(doc, Mapping) or doc.get("format") != SCHEDULE_FORMAT:
        found = doc.get("format") if isinstance(doc, Mapping) else None
        raise FileFormatError(
            f"{path} is not a bossflow schedule file (format tag {found!r}, expected {SCHEDULE_FORMAT!r})."
        )
    entries = doc.get("schedules")
    if not isinstance(entries, list) or not entries:
        raise FileFormatError(f"{path} holds no schedules.")
    provenance = doc.get("provenance") or {}
    out: dict[int, Schedule] = {}
    for i, entry in enumerate(entries):
        try:
            sched = Schedule.from_dict(entry, source=f"{path} (schedule {i})")
        except ScheduleError as exc:
            raise FileFormatError(f"{path} (schedule {i}): {exc}") from None
        if provenance:
            sched = Schedule(sched.times, sched.eval_times, **{**provenance, **sched.meta})
        out[sched.nfe] = sched
    return dict(sorted(out.items()))


def _jsonable(obj: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_nfe(nfe: int) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise ScheduleError(f"the number of steps (NFE) must be a positive integer, got {nfe!r}.")
    return int(nfe)


def uniform_schedule(nfe: int) -> Schedule:
    """``nfe`` equal Euler steps from 0 to 1.

    >>> uniform_schedule(4).times.tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    nfe = _check_nfe(nfe)
    times = np.arange(nfe + 1, dtype=np.float64) / nfe
    return Schedule(times, method="uniform")


def edm_schedule(nfe: int, rho: float = 7.0, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Schedule:
    """Karras et al. (2022, "Elucidating the design space...", eq. 5) noise levels mapped to flow time.

    The linear path ``x_t = (1 - t) x_0 + t x_1`` is, up to scale, the variance-exploding
    process with noise level ``sigma = (1 - t) / t``. Karras' ``nfe`` levels from
    ``sigma_max`` to ``sigma_min`` (rho-spaced) become times ``t = 1 / (1 + sigma)``;
    the first is moved to ``t = 0`` (pure noise, where the sampler starts) and ``t = 1``
    (``sigma = 0``) is appended, as EDM appends ``sigma = 0``.
    """
    nfe = _check_nfe(nfe)
    if not (math.isfinite(rho) and rho > 0):
        raise ScheduleError(f"rho must be a positive number, got {rho!r}.")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ScheduleError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min!r}, {sigma_max!r}.")
    if nfe == 1:
        return Schedule([0.0, 1.0], method="edm", rho=rho)
    ramp = np.arange(nfe, dtype=np.float64) / (nfe - 1)
    inv = 1.0 / rho
    sigmas = (sigma_max**inv + ramp * (sigma_min**inv - sigma_max**inv)) ** rho
    times = np.concatenate([[0.0], 1.0 / (1.0 + sigmas[1:]), [1.0]])
    return Schedule(times, method="edm", rho=rho, sigma_min=sigma_min, sigma_max=sigma_max)


def shifted_schedule(nfe: int, shift: float = 3.0) -> Schedule:
    """Uniform noise levels under the SD3 time shift (Esser et al., 2024, "Scaling rectified flow transformers").

    ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` on uniform ``sigma`` from 1 to 0,
    then ``t = 1 - sigma'``. ``shift > 1`` spends more steps near the noise end.
    """
    nfe = _check_nfe(nfe)
    if not (math.isfinite(shift) and shift > 0):
        raise ScheduleError(f"shift must be a positive number, got {shift!r}.")
    sigmas = 1.0 - np.arange(nfe + 1, dtype=np.float64) / nfe
    shifted = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
    times = 1.0 - shifted
    times[0], times[-1] = 0.0, 1.0
    return Schedule(times, method="shift", shift=shift)


def custom_schedule(times: Sequence[float], eval_times: Sequence[float] | None = None) -> Schedule:
    """A user's own list of times (validated: finite, strictly increasing, 0 to 1)."""
    return Schedule(times, eval_times, method="custom")


SCHEDULE_FAMILIES = {
    "uniform": uniform_schedule,
    "edm": edm_schedule,
    "shift": shifted_schedule,
}


def base_grid(kind: str, steps: int) -> np.ndarray:
    """The fine base grid of a cost matrix: ``steps + 1`` times of a baseline family.

    Args:
        kind: ``"uniform"`` or ``"edm"``.
        steps: number of grid intervals N.

    Returns:
        ``(N + 1,)`` float64 times.
    """
    if kind not in ("uniform", "edm"):
        raise ScheduleError(f"base grid must be 'uniform' or 'edm', got {kind!r}.")
    return SCHEDULE_FAMILIES[kind](steps).times.copy()
