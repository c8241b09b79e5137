"""Teacher pair data for straightening: fine-trajectory states at the times of one or more schedules.

For every seeded noise ``x_0`` the teacher is integrated on a fine grid (the union of a
``grid_steps`` grid and every schedule time; Euler or Heun, optional sub-steps); the grid is
uniform, or with ``grid_power`` p > 1 ``t_i = 1 - (1 - i / N)^p``, denser towards the data
where the velocity changes fastest (Heun on 20 such intervals, p = 1.5, is more accurate than
Euler on 100 uniform ones at 40 instead of 100 teacher calls),
and its states are kept at the *state times*: the union of the schedules' times (0 and 1
always among them). A *transition* is one Euler step of one schedule, ``t_a -> t_b`` with
evaluation time ``s_a``; a training pair is ``(x_a, x_b, t_a, t_b, s_a)`` for one noise and
one transition. Time convention: ``t = 0`` noise, ``t = 1`` data.

Pair data can be cached in a folder: ``meta.json`` (what made it: teacher fingerprint, state
times, seed, grid, solver, sample shape) and shards ``shard-00000.safetensors`` of
``shard_size`` noises each, written atomically, in float32 or float16 (``storage_dtype``; a
shard made with per-sample conditioning also holds each noise's table row, ``index``). A later run with the same teacher and
settings reuses every shard it finds, makes only the missing ones (so generation is
resumable), and may ask for more samples than before: sample ``i`` is the same noise
whatever the number of samples or shards (:func:`bossflow.gaussian_noise`). With
``stream=True`` the states stay in the shard files and training reads the rows of each batch
from them (:class:`ShardedStates`), so a pair set larger than memory can be used.

Under ``torch.distributed`` (``torchrun``) the ranks split the noises of every missing shard,
exchange their parts, and all return the complete pair data; rank 0 alone reads and writes
the cache, which any number of ranks can then reuse or extend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..core._io import exclusive, read_json, write_atomic, write_json_atomic
from ..core.conditioning import IndexedCond
from ..core.distributed import barrier, broadcast_tensor, is_main, on_main, rank, shard_range, world_size
from ..core.errors import BossflowError, FileFormatError, ScheduleError
from ..core.noise import gaussian_noise
from ..core.schedules import Schedule, check_euler_schedule, validate_times
from ..core.solvers import TEACHER_METHODS, fine_trajectory, select_cond

PAIRS_FORMAT = "bossflow.pairs/1"
META_NAME = "meta.json"

# Two schedule times closer than this are one state time (they come from float64 JSON).
_TIME_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Transition:
    """One Euler step of one schedule: from state time ``times[a]`` to ``times[b]``, model evaluated at ``eval_time``.

    Attributes:
        nfe: the budget of the schedule this step belongs to.
        a: index of ``t_a`` in :attr:`PairData.times`.
        b: index of ``t_b`` in :attr:`PairData.times`.
        eval_time: ``s_a``, the time the model is evaluated at (``t_a`` unless the schedule says otherwise).
    """

    nfe: int
    a: int
    b: int
    eval_time: float


@dataclass
class PairData:
    """Teacher states at the state times of some schedules, for ``n`` noises.

    Attributes:
        states: ``(n, T, *shape)`` float32 or float16 (as stored), a tensor or, streamed, a
            :class:`ShardedStates` read on demand (index it as ``states[samples, state]``);
            ``states[:, 0]`` is the noise (t = 0), ``states[:, -1]`` the teacher's fine solution (t = 1).
        times: ``(T,)`` float64 state times, 0 first, 1 last.
        transitions: every step of every schedule, grouped by schedule (ascending NFE).
        meta: how the data was made (JSON).
        cond: the per-sample conditioning the teacher was given (``None``: unconditional).
    """

    states: Tensor | ShardedStates
    times: np.ndarray
    transitions: list[Transition]
    meta: dict[str, Any] = field(default_factory=dict)
    cond: IndexedCond | None = None

    @property
    def n_samples(self) -> int:
        return int(self.states.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.states.shape[2:])

    @property
    def nfes(self) -> list[int]:
        return sorted({tr.nfe for tr in self.transitions})

    def select(self, nfes: Sequence[int]) -> "PairData":
        """The same states with only the steps of the schedules of budgets ``nfes``."""
        missing = sorted(set(nfes) - set(self.nfes))
        if missing:
            raise BossflowError(f"the pair data has no schedule with NFE {missing}; it has NFE {self.nfes}.")
        kept = [tr for tr in self.transitions if tr.nfe in set(nfes)]
        return PairData(self.states, self.times, kept, {**self.meta, "nfes": sorted(set(nfes))}, self.cond)

    def cond_rows(self, samples: Tensor) -> dict[str, Tensor]:
        """The conditioning of samples ``samples`` ``(b,)`` (``{}`` when unconditional)."""
        return {} if self.cond is None else self.cond.rows(samples)


class ShardedStates:
    """``(n, T, *shape)`` pair states left in their cache's shard files, read row by row when indexed.

    ``states[samples, state]`` with ``samples`` a ``(b,)`` index tensor and ``state`` an int or a
    ``(b,)`` tensor gives ``(b, *shape)`` in the stored dtype, reading only those rows from the
    memory-mapped files (``safetensors.safe_open``), so memory holds one batch, not the pair set.

    Args:
        paths: the shard files in order; shard ``i`` holds noises ``i * shard_size ..``.
        shard_size: noises per shard.
        samples: how many noises are used (the last shard may hold more than its share).
        state_shape: ``(T, *shape)`` of one noise's states.
        dtype: the stored dtype.
    """

    def __init__(self, paths: Sequence[Path], shard_size: int, samples: int, state_shape: tuple[int, ...],
                 dtype: torch.dtype) -> None:
        from safetensors import safe_open

        self._files = [safe_open(str(path), framework="pt") for path in paths]  # kept open: their slices map them
        self._slices = [f.get_slice("states") for f in self._files]
        self.shard_size, self.dtype = shard_size, dtype
        self.shape = (samples, *state_shape)

    def __getitem__(self, key: tuple[Tensor, int | Tensor]) -> Tensor:
        samples, state = key
        samples = torch.as_tensor(samples).reshape(-1)
        states = torch.as_tensor(state).reshape(-1).expand(samples.shape) % self.shape[1]
        rows = []
        for i, a in zip(samples.tolist(), states.tolist()):
            shard, row = divmod(i, self.shard_size)
            rows.append(self._slices[shard][row:row + 1, a])
        return torch.cat(rows)


def state_times(schedules: Sequence[Schedule]) -> np.ndarray:
    """The union of the schedules' times (0 and 1 always), ``(T,)`` float64, ascending."""
    merged = np.unique(np.concatenate([[0.0, 1.0], *[np.asarray(s.times, dtype=np.float64) for s in schedules]]))
    keep = np.concatenate([[True], np.diff(merged) > _TIME_TOLERANCE])
    merged = merged[keep]
    merged[-1] = 1.0
    return validate_times(merged, "state times")


def schedule_transitions(schedules: Sequence[Schedule], times: np.ndarray) -> list[Transition]:
    """Every Euler step of ``schedules`` (ascending NFE) as indices into ``times``."""
    out = []
    for schedule in sorted(schedules, key=lambda s: s.nfe):
        check_euler_schedule(schedule, "straightening")
        index = np.searchsorted(times, np.asarray(schedule.times) - _TIME_TOLERANCE)
        index = np.minimum(index, times.size - 1)
        if not np.allclose(times[index], schedule.times, rtol=0, atol=1e-9):
            raise ScheduleError(f"the schedule with NFE {schedule.nfe} has times missing from the pair data's state times.")
        evals = schedule.evaluation_times
        out += [Transition(schedule.nfe, int(index[k]), int(index[k + 1]), float(evals[k])) for k in range(schedule.nfe)]
    return out


def reference_grid(times: np.ndarray, grid_steps: int, grid_power: float = 1.0) -> np.ndarray:
    """The fine integration grid: ``grid_steps`` intervals, ``1 - (1 - u)^grid_power`` for uniform ``u``, merged with ``times``.

    ``grid_power`` 1 is the uniform grid; above 1 the intervals shrink towards t = 1 (the data).
    """
    if not isinstance(grid_steps, int) or grid_steps < 1:
        raise BossflowError(f"grid_steps must be a positive integer, got {grid_steps!r}.")
    if not isinstance(grid_power, (int, float)) or isinstance(grid_power, bool) or not 1.0 <= grid_power <= 4.0:
        raise BossflowError(f"grid_power must be a number from 1 to 4, got {grid_power!r}.")
    warped = 1.0 - (1.0 - np.linspace(0.0, 1.0, grid_steps + 1)) ** float(grid_power)
    return state_times([Schedule(warped), Schedule(times)])


def teacher_states(
    model: Callable[..., Tensor],
    noise: Tensor,
    times: np.ndarray,
    *,
    grid_steps: int = 100,
    grid_power: float = 1.0,
    substeps: int = 1,
    method: str = "euler",
    batch_size: int = 256,
    cond: dict | IndexedCond | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """The teacher's fine-trajectory states at ``times`` from each noise: ``(n, T, *shape)`` float32 on the CPU.

    Args:
        model: teacher velocity model.
        noise: ``(n, *shape)`` noises at t = 0.
        times: ``(T,)`` state times (0 first, 1 last).
        grid_steps, grid_power: the grid merged with ``times`` for the fine integration (:func:`reference_grid`).
        substeps, method: sub-steps per grid interval and ``"euler"``/``"heun"`` (:func:`bossflow.fine_trajectory`).
        batch_size: noises integrated at once.
        cond: per-sample conditioning of the ``n`` noises (a dict of ``(n, ...)`` tensors and shared
            values, or an :class:`~bossflow.core.conditioning.IndexedCond` of ``n`` samples).
        progress: called with the number of noises done after every batch.
    """
    times = validate_times(times, "state times")
    grid = reference_grid(times, grid_steps, grid_power)
    where = np.searchsorted(grid, times - _TIME_TOLERANCE)
    n = int(noise.shape[0])
    parts = []
    for begin in range(0, n, batch_size):
        end = min(begin + batch_size, n)
        rows = cond.rows(slice(begin, end)) if isinstance(cond, IndexedCond) else select_cond(cond or {}, slice(begin, end), n)
        traj = fine_trajectory(model, noise[begin:end], grid, substeps=substeps, method=method, cond=rows)
        parts.append(traj.xs[torch.as_tensor(where, device=traj.xs.device)].transpose(0, 1).to("cpu", torch.float32))
        if progress is not None:
            progress(end - begin)
    return torch.cat(parts)


def _model_dtype(model: Any) -> torch.dtype:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return torch.float32


def _model_device(model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def _read_shard(path: Path, expected: tuple[int, ...], dtype: torch.dtype, index: Tensor | None) -> Tensor | None:
    """A cached shard's states, or ``None`` when it holds fewer noises than wanted (it is then remade).

    ``index``: the conditioning rows its noises must have been made with (``None``: unconditional).
    """
    import safetensors.torch

    try:
        saved = safetensors.torch.load(path.read_bytes())
        states = saved["states"]
    except OSError as exc:
        raise FileFormatError(f"cannot read pair shard {path}: {exc.strerror or exc}.") from None
    except Exception as exc:  # SafetensorError, KeyError on damaged or foreign files
        raise FileFormatError(f"pair shard {path} is damaged ({exc}); delete it and run again to remake it.") from None
    if tuple(states.shape[1:]) != expected[1:] or states.dtype != dtype:
        raise FileFormatError(f"pair shard {path} does not fit its meta.json (shape {tuple(states.shape)}, "
                              f"{states.dtype}); delete the folder.")
    if states.shape[0] < expected[0]:
        return None
    if index is not None and not torch.equal(saved.get("index", torch.empty(0))[: expected[0]], index):
        raise BossflowError(f"pair shard {path} was made with other prompts per noise; choose another pairs folder, "
                            "or delete it to remake the pairs.")
    return states


def teacher_pairs(
    model: Callable[..., Tensor],
    schedules: Sequence[Schedule],
    shape: Sequence[int],
    *,
    samples: int = 4096,
    seed: int = 0,
    grid_steps: int = 100,
    grid_power: float = 1.0,
    substeps: int = 1,
    method: str = "euler",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    shard_size: int = 1024,
    model_id: str | None = None,
    cond: IndexedCond | None = None,
    storage_dtype: torch.dtype = torch.float32,
    state_dtype: torch.dtype | None = None,
    stream: bool = False,
    progress: bool = True,
) -> PairData:
    """Pair data of ``model`` along ``schedules`` from ``samples`` seeded noises, cached when ``cache_dir`` is given.

    Args:
        model: teacher velocity model ``model(x, t)``.
        schedules: Euler schedules whose steps become training pairs (several are mixed).
        shape: shape of one sample.
        samples: number of noises (sample ``i`` is ``gaussian_noise`` sample ``i`` of ``seed``).
        seed: noise seed.
        grid_steps, grid_power, substeps, method: the fine teacher solution (:func:`teacher_states`).
        batch_size: noises integrated at once.
        cache_dir: folder of ``meta.json`` and shards, reused and extended across runs.
        shard_size: noises per shard.
        model_id: how the teacher is named in ``meta.json`` (its weights' fingerprint is stored too).
        cond: per-sample conditioning of at least ``samples`` samples (a prompt table and each
            noise's row); its table's hash goes into ``meta.json`` and each shard keeps its rows.
        storage_dtype: ``torch.float32``, or ``torch.float16`` to halve the cache and the memory
            (batches are drawn in float32 either way).
        state_dtype: dtype of the noises and states the teacher integrates (default: the dtype of its
            parameters; give ``torch.float32`` for a half-precision model that casts its inputs itself).
        stream: leave the states in the cache's shards and read each batch's rows from them
            (:class:`ShardedStates`); needs ``cache_dir`` and one process.
        progress: show a tqdm bar.

    Raises:
        BossflowError: bad settings, or a cache folder made by another teacher or with other settings.
    """
    from tqdm.auto import tqdm

    from ..core.cost import model_fingerprint

    _check_pair_options(schedules, samples=samples, batch_size=batch_size, shard_size=shard_size, cond=cond,
                        storage_dtype=storage_dtype, stream=stream, cache_dir=cache_dir)
    _check_fine_solution(grid_steps, grid_power, substeps, method)
    times = state_times(schedules)
    shape = tuple(int(s) for s in shape)
    if cache_dir is not None:
        times = on_main(lambda: _cached_times(Path(cache_dir), times))
    meta = {
        "format": PAIRS_FORMAT, "model": model_id, "model_sha256": model_fingerprint(model), "times": times.tolist(),
        "seed": seed, "grid_steps": grid_steps, "grid_power": float(grid_power), "substeps": substeps, "method": method,
        "shape": list(shape),
        "shard_size": shard_size, "noise": "bossflow.gaussian_noise (per-sample seeds), float32 draw",
        "dtype": str(storage_dtype).removeprefix("torch."),
        "cond_sha256": cond.table_sha256() if cond is not None else None,
    }
    dtype, device = state_dtype or _model_dtype(model), _model_device(model)
    bar = tqdm(total=samples, disable=not progress or not is_main(), unit="noise", desc="teacher pairs",
               dynamic_ncols=True)

    def make(start: int, count: int) -> Tensor:
        noise = gaussian_noise(count, shape, seed=seed, start=start, dtype=dtype, device=device)
        part = None if cond is None else IndexedCond(cond.table, cond.index[start:start + count])
        return teacher_states(model, noise, times, grid_steps=grid_steps, grid_power=grid_power, substeps=substeps,
                              method=method, batch_size=batch_size, cond=part, progress=bar.update).to(storage_dtype)

    index = cond.index[:samples] if cond is not None else None
    try:
        if world_size() > 1:
            folder = Path(cache_dir) if cache_dir is not None else None
            if folder is None:  # in memory only: one shard per rank keeps every rank busy
                shard_size = min(shard_size, -(-samples // world_size()))
            states = _shared_states(_Shards(folder, meta, samples, shard_size, make, bar, (len(times), *shape),
                                            storage_dtype, index))
        elif cache_dir is None:
            states = make(0, samples)
        else:
            states = _cached_states(_Shards(Path(cache_dir), meta, samples, shard_size, make, bar, (len(times), *shape),
                                            storage_dtype, index), keep=not stream)
    finally:
        bar.close()
    transitions = schedule_transitions(schedules, times)
    meta["samples"] = samples
    meta["nfes"] = sorted({tr.nfe for tr in transitions})
    used = None if cond is None else IndexedCond(cond.table, index)
    return PairData(states=states, times=times, transitions=transitions, meta=meta, cond=used)


def _check_pair_options(schedules: Sequence[Schedule], *, samples: int, batch_size: int, shard_size: int,
                        cond: IndexedCond | None, storage_dtype: torch.dtype, stream: bool,
                        cache_dir: str | os.PathLike | None) -> None:
    """Refuse, before any work, what :func:`teacher_pairs` cannot do: no or non-Euler schedules, bad counts, storage
    dtypes other than float32 and float16, conditioning of too few samples, streaming without a cache."""
    if not schedules:
        raise BossflowError("straightening needs at least one schedule.")
    for name, value in (("samples", samples), ("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BossflowError(f"{name} must be a positive integer, got {value!r}.")
    for schedule in schedules:
        check_euler_schedule(schedule, "straightening")
    if stream and (cache_dir is None or world_size() > 1):
        raise BossflowError("streamed pairs are read from the cache's shards: give cache_dir, in one process.")
    if storage_dtype not in (torch.float32, torch.float16):
        raise BossflowError(f"pairs are stored in torch.float32 or torch.float16, got {storage_dtype!r}.")
    if cond is not None and cond.n_samples < samples:
        raise BossflowError(f"the conditioning covers {cond.n_samples} samples, fewer than the {samples} asked for.")


def _check_fine_solution(grid_steps: int, grid_power: float, substeps: int, method: str) -> None:
    """Refuse, before any work (:func:`fine_trajectory` checks the same, but only at the first batch, after the cache
    folder is set up), a fine solution :func:`teacher_states` cannot compute."""
    reference_grid(np.array([0.0, 1.0]), grid_steps, grid_power)
    if not isinstance(substeps, int) or isinstance(substeps, bool) or substeps < 1:
        raise BossflowError(f"substeps must be a positive integer, got {substeps!r}.")
    if method not in TEACHER_METHODS:
        raise BossflowError(f"the teacher's fine solution is solved with {' or '.join(TEACHER_METHODS)}, got {method!r}.")


def _cached_times(folder: Path, times: np.ndarray) -> np.ndarray:
    """The cache's state times when they include every one of ``times`` (a cache made for more budgets serves fewer)."""
    meta_path = folder / META_NAME
    if not meta_path.exists():
        return times
    saved = read_json(meta_path, "pair cache meta")
    cached = np.asarray(saved.get("times", []) if isinstance(saved, dict) else [], dtype=np.float64)
    if cached.ndim == 1 and cached.size >= 2 and all(np.any(np.abs(cached - t) <= _TIME_TOLERANCE) for t in times):
        return cached
    return times


_META_KEYS = ("format", "model_sha256", "times", "seed", "grid_steps", "grid_power", "substeps", "method", "shape",
              "shard_size", "dtype", "cond_sha256")
_META_DEFAULTS = {"dtype": "float32", "cond_sha256": None, "grid_power": 1.0}
"""What caches written before a key existed hold."""


@dataclass
class _Shards:
    """Pair states in shards of ``shard_size`` noises: where they are cached and how missing ones are made.

    Attributes:
        folder: the cache folder (``None``: nothing read or written).
        meta: the settings ``meta.json`` must hold.
        samples: number of noises.
        shard_size: noises per shard (the last shard may hold fewer).
        make: ``make(start, count)`` -> ``(count, *state_shape)`` states of noises ``start ..``.
        bar: progress bar, advanced by noises.
        state_shape: ``(T, *shape)`` of one noise's states.
        dtype: the stored dtype of the states.
        index: ``(samples,)`` conditioning row of each noise (``None``: unconditional).
    """

    folder: Path | None
    meta: dict[str, Any]
    samples: int
    shard_size: int
    make: Callable[[int, int], Tensor]
    bar: Any
    state_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    index: Tensor | None = None

    @property
    def counts(self) -> list[int]:
        """Noises per shard."""
        return [min(self.shard_size, self.samples - start) for start in range(0, self.samples, self.shard_size)]

    def read(self, index: int) -> Tensor | None:
        """Shard ``index`` from the folder, or ``None`` when it is not there (or unreadable: made again)."""
        path = _shard_path(self.folder, index)
        count = self.counts[index]
        states = _read_shard(path, (count, *self.state_shape), self.dtype, self._rows(index)) if path.exists() else None
        return None if states is None else states[:count]

    def write(self, index: int, states: Tensor) -> None:
        _write_shard(_shard_path(self.folder, index), states, index * self.shard_size, self._rows(index))

    def _rows(self, index: int) -> Tensor | None:
        """The conditioning rows of shard ``index``'s noises (``None``: unconditional)."""
        start = index * self.shard_size
        return None if self.index is None else self.index[start:start + self.counts[index]]


def _cached_states(shards: _Shards, keep: bool = True) -> Tensor | ShardedStates:
    """Every shard, read from ``shards.folder`` or made and written there (the folder locked meanwhile): their states
    concatenated, or (``keep=False``) a :class:`ShardedStates` over the files.

    A complete folder is only read, without the lock, so several runs can share it at once (shards are written
    atomically); a read that fails there (a run extending the folder replaced a shard) is retried under the lock.
    """
    parts = _read_complete(shards, keep)
    if parts is None:
        with exclusive(shards.folder, "pairs folder"):
            parts = _read_or_make(shards, keep)
    if keep:
        return torch.cat(parts)
    paths = [_shard_path(shards.folder, index) for index in range(len(shards.counts))]
    return ShardedStates(paths, shards.shard_size, shards.samples, shards.state_shape, shards.dtype)


def _read_complete(shards: _Shards, keep: bool) -> list[Tensor] | None:
    """:func:`_read_or_make` for a folder that holds ``meta.json`` and every shard, or ``None`` (not complete, or a
    shard could not be read)."""
    names = [META_NAME, *(_shard_path(shards.folder, index).name for index in range(len(shards.counts)))]
    if not all((shards.folder / name).exists() for name in names):
        return None
    try:
        return _read_or_make(shards, keep)
    except FileFormatError:
        shards.bar.reset()  # the locked retry counts every shard again
        return None


def _read_or_make(shards: _Shards, keep: bool) -> list[Tensor]:
    """Each shard's states, read (and checked) or made and written; none kept in memory unless ``keep``."""
    _check_or_write_meta(shards.folder, shards.meta)
    parts = []
    for index, count in enumerate(shards.counts):
        states = shards.read(index)
        if states is None:
            states = shards.make(index * shards.shard_size, count)
            shards.write(index, states)
        else:
            shards.bar.update(count)
        if keep:
            parts.append(states[:count])
    return parts


def _check_or_write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Refuse a cache made with other settings; write ``meta.json`` into a new or empty folder."""
    meta_path = folder / META_NAME
    if meta_path.exists():
        saved = read_json(meta_path, "pair cache meta")
        if not isinstance(saved, dict) or saved.get("format") != PAIRS_FORMAT:
            raise FileFormatError(f"{meta_path} is not bossflow pair data; choose another pairs folder.")
        differ = [k for k in _META_KEYS if saved.get(k, _META_DEFAULTS.get(k)) != meta[k]]
        if differ:
            raise BossflowError(
                f"the pair data in {folder} was made with another teacher or settings ({', '.join(differ)}); "
                "choose another pairs folder, or delete it to remake the pairs."
            )
    elif folder.exists() and any(folder.iterdir()):
        raise BossflowError(f"pairs folder {folder} is not empty and holds no {META_NAME}; choose an empty or new folder.")
    else:
        write_json_atomic(meta_path, meta)


def _write_shard(path: Path, states: Tensor, start: int, index: Tensor | None) -> None:
    import safetensors.torch

    count = int(states.shape[0])
    tensors = {"states": states.contiguous(), **({"index": index.contiguous()} if index is not None else {})}
    blob = safetensors.torch.save(tensors, metadata={"format": PAIRS_FORMAT, "start": str(start), "count": str(count)})
    write_atomic(path, lambda f: f.write(blob))


def _shared_states(shards: _Shards) -> Tensor:
    """:func:`_cached_states` over the ranks of ``torch.distributed``: every rank returns all states.

    Rank 0 checks (or writes) ``meta.json`` and reads the shards already cached; every missing
    shard is split over the ranks (:func:`bossflow.distributed.shard_range`), each rank makes
    its contiguous part, and each part is broadcast from its maker. Rank 0 alone writes the new
    shards, so no disk needs to be shared between nodes. ``folder=None``: nothing read or written.
    """
    world, me = world_size(), rank()
    counts, shard_size, bar = shards.counts, shards.shard_size, shards.bar
    n_shards = len(counts)
    cached: dict[int, Tensor] = {}

    def survey() -> list[int]:
        if shards.folder is None:
            return []
        _check_or_write_meta(shards.folder, shards.meta)
        for index in range(n_shards):
            states = shards.read(index)
            if states is not None:
                cached[index] = states.contiguous()
        return sorted(cached)

    have = set(on_main(survey))
    mine = {}
    for index in range(n_shards):  # make my part of every missing shard first, then exchange
        if index not in have:
            lo, hi = shard_range(counts[index], me, world)
            if hi > lo:
                mine[index] = shards.make(index * shard_size + lo, hi - lo).contiguous()
    parts = []
    for index, count in enumerate(counts):
        states = cached.get(index, torch.empty((count, *shards.state_shape), dtype=shards.dtype))
        if index in have:
            broadcast_tensor(states, src=0)
            bar.update(count)
        else:
            for source in range(world):
                lo, hi = shard_range(count, source, world)
                if hi == lo:
                    continue
                if source == me:
                    states[lo:hi] = mine.pop(index)
                broadcast_tensor(states[lo:hi], src=source)
                if source != me:
                    bar.update(hi - lo)
            if shards.folder is not None and is_main():
                shards.write(index, states)
        parts.append(states)
    barrier()  # rank 0 has written every shard before any rank goes on
    return torch.cat(parts)
