"""Keep freed memory in the process (glibc ``mallopt``), so large CPU tensors stop page-faulting.

glibc serves every allocation above its mmap threshold (adaptive, at most 32 MiB) with fresh pages from the
kernel and unmaps them again when they are freed. A 3D U-Net on 48³ windows allocates and frees activations
of tens of MiB in every layer, and PyTorch's CPU allocator caches nothing (unlike its CUDA one), so every
forward pass faults its whole working set in again: measured on the 2-core CPU, 6 forward passes of the
default model (batch 2, 48³, 1 thread) took 2.55 s user + 1.12 s system, 4.11 s wall, 771k page faults;
with the thresholds below 2.44 s user + 0.22 s system, 2.66 s wall, 140k faults.

The mmap threshold is a compromise measured on 256³ volumes (speed.py's fresh processes, 2 threads, bias
restoration with 2 steps x 4 chains): glibc's default 235.5 s, peak RSS 2.01 GiB; 1 GiB 159.8 s, 3.20 GiB
(whole-volume arrays then come from the heap too, which fragments); 64 MiB 190.9 s, 2.06 GiB. Whole-volume
arrays (64 MiB and more at 256³) still come from mmap and go back to the kernel when freed.

The price: memory a process has freed stays mapped to it for reuse, so its resident size does not shrink
after a peak (the peak itself barely changes at 64 MiB, see above). The ``medidiff`` command (every
subcommand, training included) and the benchmark workers turn this on; a Python program using the API
decides for itself by calling :func:`retain_freed_memory` (once, at any time).
"""

from __future__ import annotations

import ctypes
import sys

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # allocations up to 64 MiB (network activations) come from the heap, reused
TRIM_THRESHOLD = 2**31 - 1  # never hand the top of the heap back to the kernel

_applied = False


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (idempotent): up to 1.5x faster CPU inference.

    Freed tensors are then reused instead of being faulted in again at every network call (the ``medidiff``
    command does this itself). The process keeps the memory it has freed: its resident size stays at its
    peak after a restoration instead of shrinking.

    Returns:
        True when the setting is in force; False where the C library has no ``mallopt`` (not Linux/glibc,
        e.g. macOS or musl), which changes nothing else.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    _applied = mmap_ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
