"""Giving memory back to the system after a large flush, where the allocator allows it.

A burst of records (or of new VMs) grows the heap; once the flush has let go
of them, CPython returns its own emptied arenas, but what went through the C
allocator (dicts of many rows, large buffers) stays mapped in the process
unless glibc is asked to trim it.  Elsewhere (musl, macOS) nothing is called.
"""

import ctypes
import logging

log = logging.getLogger(__name__)


def release_free_memory() -> bool:
    """Ask glibc's allocator to return free heap pages (``malloc_trim(0)``); True if it did.

    Looked up at each call (a flush of 100,000 records or more), not held:
    the lookup (the process's own symbols, where libc's are) costs
    microseconds, the trim itself a few milliseconds.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("malloc_trim: %s", "memory returned" if released else "nothing to return")
    return released
