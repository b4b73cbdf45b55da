"""Keep freed message buffers in the heap instead of returning them to the OS (glibc only).

gRPC Python hands messages over as ``bytes``: each large message is a fresh allocation (sending: our framed
message; receiving: the copy gRPC makes). glibc serves allocations above its mmap threshold with a fresh
``mmap`` and unmaps them on free, so every large message page-faults all its pages in again — measured here
(a VM) at roughly 1 ms per MB, half the cost of a 10 MB hop. Raising the mmap threshold (glibc caps it at
32 MiB) and the trim threshold lets the allocator reuse the freed buffers; the price is that a process keeps
up to ``4 x threshold`` of freed memory. Agent processes call :func:`keep_freed_buffers` at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_buffers"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_MAX_MMAP_THRESHOLD = 32 * 2**20


def keep_freed_buffers(max_message_bytes: int) -> bool:
    """Let glibc reuse freed buffers up to ``max_message_bytes`` (capped at 32 MiB). Process-wide.

    Returns:
        True if applied; False where the C library is not glibc (nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    threshold = min(max(max_message_bytes + 2**20, 2**20), _GLIBC_MAX_MMAP_THRESHOLD)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 4 * threshold))
