"""Keep freed tensor memory inside the process, so that big activations do not page-fault.

PyTorch's CPU tensors come from ``malloc``. glibc serves an allocation above its mmap threshold
(adjusted at run time, at most 32 MiB) with fresh pages from the kernel and unmaps them on
``free``. A training step allocates and frees the same large activations every time, so
every step pays a page fault per 4 KiB of each of them: a 64x144x32x32 float tensor (38 MB)
is ~9,000 faults. In the DNAS supernet's soft step (batch 64 at 32x32, where dozens of
activations are larger than that) this doubled the time of the BN and ReLU backwards and
made a weight step take 3.3 s instead of 2.4 s (docs/benchmarks.md).

:func:`keep_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB,
so freed blocks stay in the heap and the next step reuses them without faults. The price is
that the process keeps its peak resident memory until it exits, which is what a training
process does anyway. The training and search commands call it; set
``FBNAS_MALLOC=default`` to keep glibc's behaviour. Latency measurement does not use it:
the allocator is part of what a deployment pays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
OPT_OUT = "FBNAS_MALLOC"

_applied = False


def keep_freed_memory() -> bool:
    """Makes glibc keep freed large blocks for reuse; returns whether the setting is active.

    Does nothing (returns False) off Linux/glibc or when the environment variable
    ``FBNAS_MALLOC`` is ``default``. Safe to call more than once. The setting is process-wide:
    call it at the start of a training or search process, not from code that shares the
    process with latency measurements.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        log.debug("mallopt refused the thresholds; glibc's defaults stay")
        return False
    _applied = True
    log.debug("glibc keeps freed blocks up to %d bytes in the heap", MMAP_THRESHOLD_BYTES)
    return True


__all__ = ["OPT_OUT", "keep_freed_memory"]
