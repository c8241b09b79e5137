"""Sampling a model along a schedule with the solver the schedule was made for: :func:`sample_with`, :func:`sample`.

Noise ``i`` of seed ``s`` is the same however the samples are batched
(:func:`bossflow.gaussian_noise`), and each schedule is solved the way it was made for
(:func:`bossflow.search.sample_with`: Euler at its evaluation times, or OLSS's linear steps),
so ``bossflow sample`` (:mod:`bossflow.cli.sample`) reproduces what ``bossflow evaluate`` measures for the same seed.
Time convention: ``t = 0`` noise, ``t = 1`` data.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..core.errors import BossflowError
from ..core.noise import gaussian_noise
from ..core.schedules import Schedule, as_schedule
from ..core.solvers import euler, select_cond
from .olss import olss_solve

def sample_with(model: Callable[..., Tensor], x0: Tensor, schedule: Schedule | Tensor | Sequence[float], *,
                cond: dict | None = None) -> Tensor:
    """Sample along ``schedule`` with the solver it was made for.

    Schedules from OLSS-style search carry their own linear update (meta key ``"olss"``) and
    are solved by :func:`bossflow.search.olss.olss_solve`; every other schedule by Euler
    (honouring its evaluation times). K NFE either way.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        x0: ``(B, *shape)`` noise at ``t = 0``.
        schedule: a :class:`Schedule`, or K + 1 step times (tensor, array or list) for Euler.
        cond: conditioning passed to every model call.

    Returns:
        ``(B, *shape)`` state at ``t = 1``.
    """
    schedule = as_schedule(schedule)
    if "olss" in schedule.meta:
        return olss_solve(model, x0, schedule, cond=cond)
    return euler(model, x0, schedule, cond=cond)


def sample(
    model: Callable[..., Tensor],
    schedule: Schedule | Tensor | Sequence[float],
    n: int,
    *,
    seed: int = 0,
    batch_size: int = 256,
    shape: Sequence[int] | None = None,
    cond: dict | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Tensor:
    """Draw ``n`` samples of ``model`` along ``schedule`` from the noises ``0 .. n - 1`` of ``seed``.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        schedule: the steps (``schedule.nfe`` model evaluations per sample, any solver it carries):
            a :class:`Schedule`, or K + 1 step times (tensor, array or list) for Euler.
        n: number of samples.
        seed: noise seed; the result does not depend on ``batch_size``.
        batch_size: samples integrated at once.
        shape: shape of one sample; default the model's ``sample_shape``.
        cond: conditioning for every model call; tensors whose first dimension is ``n`` are
            per-sample and are sliced with their batch.
        dtype: state dtype; default the model's parameter dtype, or float64 for parameter-free models.
        progress: show a tqdm progress bar over samples.

    Returns:
        ``(n, *shape)`` samples at ``t = 1``.

    Example:
        >>> import bossflow as bf
        >>> x = sample(bf.models.gmm_2d(), bf.uniform_schedule(4), 10, seed=3)
        >>> tuple(x.shape), x.dtype
        ((10, 2), torch.float64)
    """
    from tqdm.auto import tqdm

    from ..core.velocity import model_dtype

    schedule = as_schedule(schedule)
    if not isinstance(n, int) or n < 1:
        raise BossflowError(f"the number of samples must be a positive integer, got {n!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise BossflowError(f"the batch size must be a positive integer, got {batch_size!r}.")
    if shape is None:
        shape = getattr(model, "sample_shape", None)
        if shape is None:
            raise BossflowError("the model does not declare sample_shape; pass shape=, e.g. shape=(3, 32, 32).")
    shape = tuple(int(s) for s in shape)
    dtype = dtype or model_dtype(model)
    cond = cond or {}
    out = []
    with torch.no_grad(), tqdm(total=n, desc="sample", unit="sample", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            noise = gaussian_noise(stop - start, shape, seed=seed, start=start, dtype=dtype)
            out.append(sample_with(model, noise, schedule, cond=select_cond(cond, slice(start, stop), n)))
            bar.update(stop - start)
    return torch.cat(out)


__all__ = ["sample", "sample_with"]
