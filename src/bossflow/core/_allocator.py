"""glibc's allocator told to keep freed memory for reuse: CPU runs of small networks stop page-faulting.

With its defaults, glibc's ``malloc`` serves every large block (activations and gradients of a
few megabytes) with a fresh ``mmap`` and unmaps it on ``free``, so each training step faults
its tensors' pages in again; on some CPUs that costs more than the convolutions (the digits
teacher's batch-256 forward: 64 ms with the defaults, 40 ms without the faults). Fixing both
thresholds keeps the memory in the heap, which is what jemalloc and tcmalloc do by default.
Process-wide, so only the command line (and the test suite) calls it; GPU runs are unaffected.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""Blocks up to 32 MiB come from the heap (glibc's largest allowed value on 64-bit systems)."""
TRIM_THRESHOLD = 1 << 30
"""Up to 1 GiB of freed heap is kept instead of returned to the system."""
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "BOSSFLOW_DEFAULT_MALLOC")
"""Environment variables that leave the allocator as it is: glibc's own tunables, or bossflow's opt-out."""


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; return whether they were set.

    Nothing is changed off Linux, under another C library, or when the user set one of
    :data:`USER_SETTINGS` or a ``glibc.malloc.*`` tunable in ``GLIBC_TUNABLES``.
    """
    if sys.platform != "linux" or any(name in os.environ for name in USER_SETTINGS):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):  # the user tuned malloc the modern way
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # defined by glibc only: other C libraries' mallopt options differ
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
