"""Keeping the memory of a long import flat: the C allocator's side (glibc; elsewhere nothing is done).

An import keeps nothing per record across pages (tracemalloc: the Python heap traced after 40 pages is no larger
than after 5), yet with glibc's defaults its resident memory grows with the number of pages: every page makes blocks of
megabytes (a commercetools answer, a 1,000-event request body) in three threads (reading, mapping, sending). glibc
serves a large block with mmap and gives it back on free, but after the first such free it raises its mmap
threshold to that size (up to 32 MiB), so the next ones come from the heaps of the threads' arenas, where freed
space is kept, cut up and rarely returned. Hence: a fixed mmap threshold (large blocks always go back to the
system), two arenas for the process instead of one per thread, and the free space of the heaps returned to the
system (malloc_trim) every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024  # blocks from this size on are mapped and unmapped on their own
ARENAS = 2
TRIM_EVERY_SECONDS = 2.0

_lock = threading.Lock()
_libc: ctypes.CDLL | None = None
_set_up = False
_trimmed = 0.0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def keep_flat() -> None:
    """Set the allocator up for a long import (once per process; best before the import's threads start)."""
    global _libc, _set_up
    with _lock:
        if _set_up:
            return
        _set_up = True
        _libc = _glibc()
        if _libc is not None:
            _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            _libc.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    """Give the heaps' free memory back to the system, at most every few seconds."""
    global _trimmed
    if _libc is None:
        return
    moment = time.monotonic()
    with _lock:
        if moment - _trimmed < TRIM_EVERY_SECONDS:
            return
        _trimmed = moment
    _libc.malloc_trim(0)
