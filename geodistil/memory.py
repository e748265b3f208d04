"""Giving freed memory back to the operating system.

A generation run allocates and frees many large, short-lived buffers (decoded images, request
bodies, Prefect's event records) from several threads. glibc keeps what was freed inside its
heaps for reuse, and heaps fragmented by a few long-lived objects never shrink on their own:
without a trim, a long run's resident memory grows by tens of KB per sample even though the
live Python heap stays flat (measured: +80 MB per 1000-sample chunk, flat with a trim).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> bool:
    """Return the free pages of every malloc heap to the OS; False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
