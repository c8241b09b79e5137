"""``auto``'s journal: what its stages computed, saved after each one, so that a killed search resumes.

One safetensors file, written atomically after every stage (the teacher, each candidate's fit,
the scoring, each refit): the teacher endpoints ``teacher`` ``(B, *shape)`` as a tensor and, as
JSON metadata, the call's fingerprint, the model rows counted so far, and every result the
stages keep (grid-search fits, refinements, ``refined-ls`` fits, held-out and fitting RMSEs,
the candidates fitted and the winners refitted; schedules as :meth:`Schedule.to_dict`).

A call with the same model, noises, grid, budgets and options resumes from it: nothing saved
is computed again, so the schedules, and the rows the call reports, are those of an
uninterrupted call; a stage that was under way when the run stopped is redone from its start.
A file made for another call is refused. Rank 0 alone writes it under ``torch.distributed``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..core._io import write_atomic
from ..core.errors import BossflowError, FileFormatError
from ..core.schedules import Schedule

if TYPE_CHECKING:
    from .auto import _Plan, _Run

JOURNAL_FORMAT = "bossflow.auto-journal/1"


def call_fingerprint(model_id: str, noise: Tensor, plan: _Plan) -> str:
    """SHA-256 of what decides an ``auto`` call's result: the model, the noises and every planned option."""
    options = {k: v for k, v in vars(plan).items() if k not in ("conds", "progress", "provenance", "grid")}
    h = hashlib.sha256()
    h.update(model_id.encode())
    h.update(noise.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(plan.grid.tobytes())
    h.update(json.dumps(options, sort_keys=True, default=repr).encode())
    for key in sorted(plan.conds["all"]):
        value = plan.conds["all"][key]
        if isinstance(value, Tensor):
            h.update(key.encode() + value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _schedules(table: dict[int, Schedule | None]) -> dict[str, Any]:
    return {str(k): (None if s is None else s.to_dict()) for k, s in table.items()}


def _unschedules(table: dict[str, Any]) -> dict[int, Schedule | None]:
    return {int(k): (None if d is None else Schedule.from_dict(d, source="auto journal")) for k, d in table.items()}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def save_journal(path: str | os.PathLike, run: _Run, fingerprint: str) -> None:
    """Write ``run``'s results so far to ``path`` (atomically)."""
    import safetensors.torch

    state = {
        "fingerprint": fingerprint,
        "rows": run.counted.samples, "calls": run.counted.nfe, "teacher_rows": run.teacher_rows,
        "backward_rows": run.backward_rows,
        "grid_fits": [[name, which, list(ks), _schedules(found)] for (name, which, ks), found in run.grid_fits.items()],
        "refined_fit": _schedules(run.refined_fit), "refined_all": _schedules(run.refined_all),
        "lstsq_fit": _schedules(run.lstsq_fit),
        "fitted": {name: _schedules(found) for name, found in run.fitted.items()},
        "refits": {name: _schedules(found) for name, found in run.refits.items()},
        "held": [[name, k, _finite(v)] for (name, k), v in run.held.items()],
        "fit_rmse": [[name, k, _finite(v)] for (name, k), v in run.fit_rmse.items()],
    }
    teacher = run.sets["all"][1].detach().to("cpu").contiguous()
    blob = safetensors.torch.save({"teacher": teacher}, metadata={"format": JOURNAL_FORMAT, "state": json.dumps(state)})
    write_atomic(path, lambda f: f.write(blob))


def load_journal(path: str | os.PathLike, fingerprint: str) -> tuple[Tensor, dict[str, Any]] | None:
    """``(teacher endpoints, state)`` saved at ``path`` for this call, or ``None`` when there is no file.

    Raises:
        FileFormatError: the file is damaged or not an auto journal.
        BossflowError: it was made by another call (model, noises, grid, budgets or options).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            teacher = f.get_tensor("teacher")
        state = json.loads(metadata.get("state", "null"))
    except Exception as exc:  # SafetensorError, JSON errors, OSError on damaged or foreign files
        raise FileFormatError(f"{path} is not a readable auto journal ({exc}); delete it or give another --cache.") from None
    if metadata.get("format") != JOURNAL_FORMAT or not isinstance(state, dict):
        raise FileFormatError(f"{path} is not an auto journal (format {metadata.get('format')!r}); give another --cache.")
    if state.get("fingerprint") != fingerprint:
        raise BossflowError(f"the journal {path} was made by another search (model, noises, grid, budgets or options); "
                            "delete it or give another --cache.")
    return teacher, state


def restore_journal(run: _Run, state: dict[str, Any]) -> None:
    """Put the saved results and row counts of ``state`` back into ``run``."""
    run.counted.samples, run.counted.nfe = int(state["rows"]), int(state["calls"])
    run.teacher_rows, run.backward_rows = int(state["teacher_rows"]), int(state["backward_rows"])
    run.grid_fits = {(name, which, tuple(ks)): _unschedules(found) for name, which, ks, found in state["grid_fits"]}
    run.refined_fit = _unschedules(state["refined_fit"])
    run.refined_all = _unschedules(state["refined_all"])
    run.lstsq_fit = _unschedules(state["lstsq_fit"])
    run.fitted = {name: _unschedules(found) for name, found in state["fitted"].items()}
    run.refits = {name: _unschedules(found) for name, found in state["refits"].items()}
    run.held = {(name, int(k)): (math.inf if v is None else v) for name, k, v in state["held"]}
    run.fit_rmse = {(name, int(k)): (math.inf if v is None else v) for name, k, v in state["fit_rmse"]}
