"""Let the C allocator keep large freed blocks for the next call instead of returning them to the OS.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB by default) with a fresh ``mmap`` and
gives it back on ``free``, so a CPU forward whose activations exceed that (ConvNeXt's 4x-wide hidden tensor: 38 MiB
at 8x224 in fp32, 93 MiB at 800x1216) page-faults every page of them again on every call. Measured on V2-tiny
(AMD EPYC Zen 4, 2 threads, 2026-12-04): the first block's pwconv1 at 8x224 took 22 ms instead of 12-13, and whole
fp32 forwards 5-10% longer (docs/performance.md). ONNX Runtime and OpenVINO reuse their own arenas; this gives
PyTorch the same. The cost is resident memory: the process keeps its peak heap until it exits.

``cvx2 extract`` and ``cvx2 bench`` call :func:`reuse_freed_memory` at start (the bench: for every implementation
alike); library users may call it once in their own process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB come from the heap, and up to 2 GiB free stays in it
_applied = False


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so freed large blocks are reused (once per process); False where the
    C library is not glibc or refuses (nothing changed then)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
    return _applied


def applied() -> bool:
    """Whether :func:`reuse_freed_memory` took effect in this process."""
    return _applied
