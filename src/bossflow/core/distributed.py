"""Processes, ranks and devices: what bossflow needs from ``torch.distributed`` and nothing more.

bossflow runs unchanged on one process or on many started by ``torchrun``
(``python -m torch.distributed.run``), on CPUs (gloo) or GPUs (NCCL), on one node or many.
The work is split by *samples*: noise sample ``i`` is the same tensor on every rank
(:func:`bossflow.gaussian_noise` seeds each sample on its own), so splitting never changes
what is computed, only where. The helpers below are no-ops without a process group, so
library code calls them unconditionally:

* :func:`init_from_env` joins the group torchrun describes in the environment
  (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
* :func:`shard_range` is a rank's contiguous share of ``n`` items;
* :func:`all_reduce_sum_float64`, :func:`broadcast_tensor` and :func:`on_main` move results
  between ranks (CPU tensors through gloo, so they work whatever device the model uses);
* :func:`pick_device` chooses CUDA (this rank's GPU) when present, else the CPU;
* :class:`Autocast` runs a velocity model in bfloat16 under ``torch.autocast``.

Only rank 0 writes files; every rank returns the same results.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from .errors import BossflowError

T = TypeVar("T")

PRECISIONS = ("fp32", "bf16")


def is_distributed() -> bool:
    """Whether a default process group is initialised (one process without it is not distributed)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK`` set by torchrun; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Does nothing (returns ``False``) when ``WORLD_SIZE`` is unset or 1, or a group exists.
    The default backend is gloo, plus NCCL for CUDA tensors when CUDA is present
    (``"cpu:gloo,cuda:nccl"``), so the float64 reductions and pair broadcasts (CPU tensors)
    and DistributedDataParallel on GPUs all work in one group. With CUDA, this process's
    device becomes ``cuda:LOCAL_RANK``.

    Args:
        backend: a ``torch.distributed`` backend string to use instead of the default.

    Returns:
        whether this call created the process group (then :func:`shutdown` ends it).

    Raises:
        BossflowError: ``WORLD_SIZE`` > 1 but the other rendezvous variables are missing.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    if world <= 1 or is_distributed():
        return False
    if not dist.is_available():
        raise BossflowError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process.")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise BossflowError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun "
            "(python -m torch.distributed.run --nproc_per_node N ...), which sets them."
        )
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def shutdown() -> None:
    """Leave and destroy the default process group, if there is one."""
    import torch.distributed as dist

    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op on one process)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[start, stop)`` of ``n`` items split over ``world`` ranks.

    Shares differ in size by at most one (the first ``n % world`` ranks get one more), cover
    ``0 .. n`` in rank order, and may be empty when ``n < world``.

    >>> [shard_range(5, r, 2) for r in range(2)]
    [(0, 3), (3, 5)]
    >>> shard_range(1, 1, 2)
    (1, 1)
    """
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise BossflowError(f"rank must be in [0, world) with world >= 1, got rank {rank!r} of {world!r}.")
    if not (isinstance(n, int) and n >= 0):
        raise BossflowError(f"the number of items must be a non-negative integer, got {n!r}.")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _collective_device() -> torch.device:
    """Where tensors must live for the default group's collectives: CPU when gloo serves it, else this GPU."""
    import torch.distributed as dist

    if "gloo" in str(dist.get_backend()) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def all_reduce_sum_float64(array: Any) -> np.ndarray:
    """The element-wise float64 sum of ``array`` over all ranks (a float64 copy on one process).

    Args:
        array: any array-like of the same shape on every rank.

    Returns:
        the sum, the same on every rank, as a new float64 numpy array.
    """
    import torch.distributed as dist

    values = np.array(array, dtype=np.float64)
    if not is_distributed() or world_size() == 1:
        return values
    tensor = torch.from_numpy(values).to(_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def broadcast_tensor(tensor: Tensor, src: int) -> Tensor:
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank, in place (shape and dtype must agree).

    Returns:
        ``tensor``.
    """
    import torch.distributed as dist

    if not is_distributed() or world_size() == 1:
        return tensor
    device = _collective_device()
    buffer = tensor.contiguous() if tensor.device == device else tensor.to(device).contiguous()
    dist.broadcast(buffer, src=src)
    if buffer.data_ptr() != tensor.data_ptr():
        tensor.copy_(buffer)
    return tensor


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its (picklable) result to every rank.

    For reading and checking files: rank 0 alone touches the file system, so every rank sees
    the same answer even without a shared disk. An exception on rank 0 is raised on every rank
    (a :class:`BossflowError` with its own class and message), so no rank waits forever.
    """
    import torch.distributed as dist

    if not is_distributed() or world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            payload[0] = ("ok", fn())
        except Exception as exc:
            error = exc
            cls = type(exc) if isinstance(exc, BossflowError) else None
            payload[0] = ("error", cls, str(exc))
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if payload[0][0] == "error":
        _, cls, message = payload[0]
        if cls is not None:
            raise cls(message)
        raise RuntimeError(f"rank 0 failed: {message}")
    return payload[0][1]


def pick_device(name: str = "auto") -> torch.device:
    """A torch device from a ``--device`` value: ``"auto"`` is CUDA when present, else the CPU.

    Under torchrun, ``"auto"`` and a bare ``"cuda"`` mean this rank's GPU (``cuda:LOCAL_RANK``),
    so N processes on an N-GPU node use one GPU each.

    Raises:
        BossflowError: the device is unknown or not available here.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
        if device.type == "cuda" and device.index is None and is_distributed() and torch.cuda.is_available():
            device = torch.device("cuda", local_rank() % torch.cuda.device_count())
        torch.empty(0, device=device)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise BossflowError(f"device {name!r} is not available here ({exc}); pass --device cpu or auto.") from None
    return device


class Autocast(nn.Module):
    """A velocity model evaluated under ``torch.autocast`` (bfloat16 by default), velocity returned in the state's dtype.

    For GPUs with fast bf16 matmuls; states, solvers and cost sums stay in their own dtype
    (float32/float64), only the model's inner products run in reduced precision.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        dtype: autocast dtype.
    """

    def __init__(self, model: Callable[..., Tensor], dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        for name in ("sample_shape",):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            v = self.model(x, t, **cond)
        return v.to(x.dtype)


__all__ = [
    "Autocast",
    "PRECISIONS",
    "all_reduce_sum_float64",
    "barrier",
    "broadcast_tensor",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_rank",
    "on_main",
    "pick_device",
    "rank",
    "shard_range",
    "shutdown",
    "world_size",
]
