"""BOSS cost matrices: the error of one Euler jump between any two base-grid times.

For a base grid ``g_0 = 0 < ... < g_N = 1`` (0 = noise, 1 = data) and the fine
trajectory ``x_0 ... x_N`` of a noise sample with velocities ``v_i = v(x_i, g_i)``,

    C[i, j] = mean_b || x_i + (g_j - g_i) v_i - x_j ||^2 / D      for i < j,

and ``+inf`` on and below the diagonal (Nguyen et al., ICLR 2024, eq. 9; the mean over
samples and the division by the dimension D make matrices comparable across data sets).

The matrix comes from Gram products rather than ``N^2 / 2`` vector operations: with
``Δ = g_j - g_i``,

    ||x_i + Δ v_i - x_j||^2 = |x_i|^2 + |x_j|^2 - 2<x_i, x_j> + Δ^2 |v_i|^2 + 2Δ(<v_i, x_i> - <v_i, x_j>),

so a batch of trajectories needs ``X Xᵀ`` and ``V Xᵀ`` over the flattened
``(sample, dimension)`` axis: two matmuls per batch. They run in float64 on
coordinates centred on each trajectory's time mean, so the large ``|x|^2`` terms do not
cancel away the small costs near the diagonal.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ._io import exclusive, write_atomic
from .errors import BossflowError, CostMatrixError, FileFormatError
from .distributed import all_reduce_sum_float64, is_main, on_main, rank, shard_range, world_size
from .noise import validate_noise
from .solvers import fine_trajectory, select_cond
from .schedules import validate_times

COST_FORMAT = "bossflow.costmatrix/1"

PairCost = Callable[[Tensor, Tensor], Tensor]
"""A per-pair cost: ``pair_cost(estimate, target) -> (B,)`` for two ``(B, *shape)`` batches."""


def gram_cost_sums(xs: Tensor, vs: Tensor, grid: np.ndarray, chunk_bytes: int = 2**24) -> np.ndarray:
    """Summed squared one-step errors ``sum_b ||x_i + Δ v_i - x_j||^2`` for every pair, by Gram products.

    Args:
        xs: ``(N + 1, B, *shape)`` trajectory states, any float dtype.
        vs: ``(N, B, *shape)`` velocities at the first N grid times.
        grid: ``(N + 1,)`` float64 grid times.
        chunk_bytes: bound on the float64 working set; columns of the flattened
            ``(B * D)`` axis are processed in chunks of at most this many bytes per array.

    Returns:
        ``(N + 1, N + 1)`` float64 sums (not yet averaged), meaningful for ``i < j``; zero elsewhere.
    """
    n = grid.size - 1
    flat_x = xs.reshape(n + 1, -1)
    flat_v = vs.reshape(n, -1)
    cols = flat_x.shape[1]
    chunk = max(1, min(cols, chunk_bytes // (8 * (n + 1))))
    dev = xs.device
    xx = torch.zeros(n + 1, n + 1, dtype=torch.float64, device=dev)  # <x_i, x_j>
    vx = torch.zeros(n, n + 1, dtype=torch.float64, device=dev)  # <v_i, x_j>
    vv = torch.zeros(n, dtype=torch.float64, device=dev)  # |v_i|^2
    for start in range(0, cols, chunk):
        x = flat_x[:, start : start + chunk].to(torch.float64)
        x = x - x.mean(dim=0, keepdim=True)  # centre each coordinate on its time mean
        v = flat_v[:, start : start + chunk].to(torch.float64)
        xx += x @ x.T
        vx += v @ x.T
        vv += (v * v).sum(dim=1)
    g = torch.tensor(grid, dtype=torch.float64, device=dev)
    delta = g[None, :] - g[:n, None]  # (N, N + 1): g_j - g_i
    sq = torch.diagonal(xx)
    sums = (
        sq[:n, None]
        + sq[None, :]
        - 2 * xx[:n]
        + delta**2 * vv[:, None]
        + 2 * delta * (torch.diagonal(vx)[:, None] - vx)
    )
    out = np.zeros((n + 1, n + 1), dtype=np.float64)
    out[:n] = sums.clamp_min(0).cpu().numpy()  # rounding can leave -1e-17 where the cost is exactly 0
    return out


def pair_cost_sums(xs: Tensor, vs: Tensor, grid: np.ndarray, pair_cost: PairCost) -> np.ndarray:
    """Summed ``pair_cost(x_i + Δ v_i, x_j)`` for every pair ``i < j``: the slow path for any cost.

    Loops over the target index ``j`` and evaluates all predecessors ``i < j`` in one call.

    Args:
        xs: ``(N + 1, B, *shape)`` states.
        vs: ``(N, B, *shape)`` velocities.
        grid: ``(N + 1,)`` float64 grid.
        pair_cost: ``(estimate, target) -> (rows,)`` per-sample costs.

    Returns:
        ``(N + 1, N + 1)`` float64 sums over samples; zero on and below the diagonal.
    """
    n = grid.size - 1
    batch = xs.shape[1]
    out = np.zeros((n + 1, n + 1), dtype=np.float64)
    for j in range(1, n + 1):
        delta = torch.as_tensor(grid[j] - grid[:j], dtype=xs.dtype, device=xs.device)
        delta = delta.reshape(j, *([1] * (xs.ndim - 1)))
        estimates = (xs[:j] + delta * vs[:j]).reshape(j * batch, *xs.shape[2:])
        targets = xs[j].expand(j, *xs.shape[1:]).reshape(j * batch, *xs.shape[2:])
        costs = pair_cost(estimates, targets).reshape(j, batch)
        out[:j, j] = costs.to(torch.float64).sum(dim=1).cpu().numpy()
    return out


def finish_cost_matrix(sums: np.ndarray, n_samples: int, dim: int | None) -> np.ndarray:
    """Average summed costs over samples (and dimensions when ``dim`` is given); ``+inf`` for ``i >= j``."""
    scale = n_samples * (dim or 1)
    cost = sums / scale
    cost[np.tril_indices(cost.shape[0])] = np.inf
    return cost


def noise_fingerprint(noise: Tensor) -> str:
    """SHA-256 of the noise values, shape and dtype (identifies the samples of a cached matrix)."""
    h = hashlib.sha256()
    h.update(f"{tuple(noise.shape)}|{noise.dtype}".encode())
    h.update(noise.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: Any) -> str:
    """SHA-256 of an ``nn.Module``'s state dict, or the qualified name of any other callable."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    if isinstance(model, torch.nn.Module):
        for name, value in model.state_dict().items():
            h.update(name.encode())
            if isinstance(value, Tensor):
                h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(getattr(model, "__qualname__", repr(model)).encode())
    return h.hexdigest()


def _save_state(path: Path, sums: np.ndarray, done: int, meta: dict) -> None:
    meta_text = json.dumps(meta, allow_nan=False)

    def write(f: Any) -> None:
        buf = io.BytesIO()
        np.savez(buf, sums=sums, samples_done=np.int64(done), meta=np.array(meta_text))
        f.write(buf.getvalue())

    write_atomic(path, write)


def _load_state(path: Path) -> tuple[np.ndarray, int, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            sums = np.array(data["sums"], dtype=np.float64)
            done = int(data["samples_done"])
            meta = json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path} is not a readable bossflow cost-matrix file ({exc}); delete it or pass another path."
        ) from None
    if meta.get("format") != COST_FORMAT:
        raise FileFormatError(f"{path} is not a bossflow cost-matrix file (format {meta.get('format')!r}).")
    return sums, done, meta


def load_cost_matrix(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a finished cost matrix written by :func:`cost_matrix` with ``checkpoint=path``.

    Returns:
        ``(C, meta)``: the ``(N + 1, N + 1)`` float64 matrix and its metadata.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"cost-matrix file {path} does not exist; check the path.")
    sums, done, meta = _load_state(path)
    if not meta.get("complete"):
        raise FileFormatError(
            f"{path} is unfinished ({done} of {meta.get('n_samples')} samples); run cost_matrix with it as checkpoint to resume."
        )
    return finish_cost_matrix(sums, done, meta.get("dim")), meta


def _checkpoint_meta(
    model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray, dim: int | None, substeps: int, reference: str,
    pair_cost: PairCost | None, model_id: str | None,
) -> dict:
    """The metadata a checkpoint records, all of which (but ``format``) a resumed run must match."""
    return {
        "format": COST_FORMAT,
        "grid": [float(g) for g in grid],
        "n_samples": int(noise.shape[0]),
        "dim": dim,
        "substeps": int(substeps),
        "reference": reference,
        "pair_cost": None if pair_cost is None else getattr(pair_cost, "__qualname__", repr(pair_cost)),
        "model": model_id or model_fingerprint(model),
        "noise": noise_fingerprint(noise),
    }


def _resume_state(path: Path | None, meta: dict, size: int) -> tuple[np.ndarray, int, bool]:
    """``(sums, samples_done, complete)`` from the checkpoint at ``path``, or zero ``(size, size)`` sums without one.

    Raises:
        FileFormatError: the file is not a readable cost-matrix file.
        CostMatrixError: the file was made with other metadata than ``meta``.
    """
    if path is None or not path.exists():
        return np.zeros((size, size), dtype=np.float64), 0, False
    sums, done, saved = _load_state(path)
    for k in (k for k in meta if k != "format"):
        if saved.get(k) != meta[k]:
            raise CostMatrixError(
                f"checkpoint {path} was made with a different {k}; delete it or pass another checkpoint path."
            )
    return sums, done, bool(saved.get("complete"))


def _shard_sums(
    model: Callable[..., Tensor], noise: Tensor, grid: np.ndarray, lo: int, hi: int, *, substeps: int,
    reference: str, pair_cost: PairCost | None, cond: dict, chunk_bytes: int,
) -> np.ndarray:
    """Summed one-step costs ``(N + 1, N + 1)`` of the fine trajectories of the noises ``lo:hi`` (from ``t = 0``)."""
    traj = fine_trajectory(model, noise[lo:hi], grid, substeps=substeps, method=reference,
                           cond=select_cond(cond, slice(lo, hi), int(noise.shape[0])))
    if pair_cost is None:
        return gram_cost_sums(traj.xs, traj.vs, grid, chunk_bytes=chunk_bytes)
    return pair_cost_sums(traj.xs, traj.vs, grid, pair_cost)


def _stream_batches(
    shard_sums: Callable[[int, int], np.ndarray], sums: np.ndarray, done: int, *, batch_size: int,
    path: Path | None, meta: dict, progress: bool,
) -> None:
    """Add the costs of samples ``done`` onwards to ``sums`` ``(N + 1, N + 1)`` in place, round by round.

    Args:
        shard_sums: ``(lo, hi) -> (N + 1, N + 1)`` summed costs of the samples ``lo:hi``.
        sums: running float64 sums of the first ``done`` samples.
        done: samples already in ``sums`` (from a checkpoint, else 0).
        batch_size: samples per rank and round.
        path: checkpoint written (by rank 0) after every round, or None.
        meta: the checkpoint's metadata (``n_samples`` included), without ``complete``.
        progress: show a tqdm bar over samples (on rank 0).
    """
    from tqdm.auto import tqdm

    # Each round takes the next `batch_size * world` samples; every rank integrates its contiguous
    # share of them (at most batch_size) and the round's float64 sums are added over ranks. So the
    # samples done are always a prefix: a checkpoint resumes on any number of ranks, and the sums
    # equal one process's up to the order of float64 additions.
    n_samples = meta["n_samples"]
    world, me = world_size(), rank()
    window = batch_size * world
    with tqdm(total=n_samples, initial=done, desc="cost matrix", unit="sample",
              disable=not progress or not is_main()) as bar:
        for begin in range(done, n_samples, window):
            end = min(begin + window, n_samples)
            lo, hi = (begin + i for i in shard_range(end - begin, me, world))
            part = shard_sums(lo, hi) if hi > lo else np.zeros_like(sums)
            sums += all_reduce_sum_float64(part) if world > 1 else part
            done = end
            if path is not None and is_main():
                _save_state(path, sums, done, {**meta, "complete": done == n_samples})
            bar.update(done - bar.n)


def cost_matrix(
    model: Callable[..., Tensor],
    noise: Tensor,
    grid: Any,
    *,
    batch_size: int = 64,
    substeps: int = 1,
    reference: str = "euler",
    pair_cost: PairCost | None = None,
    cond: dict | None = None,
    checkpoint: str | os.PathLike | None = None,
    model_id: str | None = None,
    progress: bool = False,
    chunk_bytes: int = 2**24,
) -> np.ndarray:
    """BOSS cost matrix of ``model`` on ``grid`` from the fine trajectories of ``noise``.

    Samples are processed in batches of ``batch_size``; the result does not depend on it
    (sums are exact up to float64 rounding). With ``checkpoint``, the running sums are
    written atomically after every batch; a later call with the same path, model, grid,
    noise and options resumes where it stopped, and a finished file is returned without
    any model evaluation (a cache). A file made for anything else is refused.

    Under ``torch.distributed`` (e.g. ``torchrun``; :mod:`bossflow.distributed`) every rank
    passes the same ``noise`` and integrates its share of each round of ``batch_size * world``
    samples; the float64 sums are added over ranks, so every rank returns the matrix of one
    process (to float64 rounding, 1e-12 relative or better). Rank 0 reads and writes the
    checkpoint, which resumes on any number of ranks.

    Peak memory: the trajectory of one batch, ``(2N + 1) * batch_size * D`` values in the
    dtype of ``noise``, plus a float64 working set of about ``2 * chunk_bytes`` and
    ``O(N^2)`` float64 matrices.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        noise: ``(B, *shape)`` noise samples at ``t = 0`` (device and dtype used throughout).
        grid: ``(N + 1,)`` base grid times from 0 to 1 (e.g. ``uniform_schedule(100)``).
        batch_size: samples integrated at once.
        substeps: sub-steps per grid interval for the reference trajectory. 1 (default) is
            BOSS's definition, under which ``C[j, j + 1] = 0``; more gives a trajectory
            that is closer to the exact ODE so that every entry measures a real error.
        reference: ``"euler"`` or ``"heun"`` sub-steps.
        pair_cost: optional ``(estimate, target) -> (B,)`` distance (e.g. perceptual); slow path,
            averaged over samples only. Default: squared L2 per dimension by Gram products.
        cond: conditioning for every model call (must match the whole noise batch; see below).
        checkpoint: ``.npz`` path for running sums: resumable and reusable.
        model_id: identifies the model in the checkpoint; default a hash of its weights.
        progress: show a tqdm progress bar over samples.
        chunk_bytes: float64 working-set bound for the Gram products.

    Returns:
        ``(N + 1, N + 1)`` float64 matrix, finite for ``i < j``, ``+inf`` elsewhere.

    Note:
        ``cond`` tensors are sliced along their first axis together with ``noise`` when their
        first dimension equals ``len(noise)``; other values are passed unchanged.
    """
    grid = validate_times(grid, "base grid")
    validate_noise(noise)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BossflowError(f"batch_size must be a positive integer, got {batch_size!r}.")
    n_samples = int(noise.shape[0])
    dim = None if pair_cost is not None else int(np.prod(noise.shape[1:]))
    meta = _checkpoint_meta(model, noise, grid, dim, substeps, reference, pair_cost, model_id)
    path = Path(checkpoint) if checkpoint is not None else None
    # Rank 0 alone reads and writes the file, under its lock; every rank resumes from it.
    with exclusive(path, "cost-matrix cache") if path is not None and is_main() else contextlib.nullcontext():
        sums, done, complete = on_main(partial(_resume_state, path, meta, grid.size))
        if complete:
            return finish_cost_matrix(sums, done, dim)
        shard_sums = partial(
            _shard_sums, model, noise, grid, substeps=substeps, reference=reference, pair_cost=pair_cost,
            cond=cond or {}, chunk_bytes=chunk_bytes,
        )
        _stream_batches(shard_sums, sums, done, batch_size=batch_size, path=path, meta=meta, progress=progress)
    return finish_cost_matrix(sums, n_samples, dim)
