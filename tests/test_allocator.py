"""The command line's allocator setting: large CPU tensors come from glibc's heap, not from a fresh mmap each."""

import ctypes
import os
import subprocess
import sys

import pytest

from bossflow.core._allocator import USER_SETTINGS, keep_freed_memory

PROBE = """
import ctypes, sys
import torch
from bossflow.core._allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
block = torch.empty(2 << 20)  # 8 MiB of float32, like a batch of activations
print((libc.mallinfo2().hblkhd - before) >> 20)
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL(None)
        return hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux" or not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33")
def test_large_tensors_stay_in_the_heap_once_set():
    env = {k: v for k, v in os.environ.items() if k not in (*USER_SETTINGS, "GLIBC_TUNABLES")}

    def mmapped_mib(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    assert mmapped_mib("default") >= 8  # glibc's default: a fresh mapping, unmapped again on free
    assert mmapped_mib("keep") == 0


def test_the_users_own_setting_is_left_alone(monkeypatch):
    for name in USER_SETTINGS:
        monkeypatch.setenv(name, "1")
        assert keep_freed_memory() is False
        monkeypatch.delenv(name)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert keep_freed_memory() is False
