"""The process's memory allocator: how many malloc arenas glibc may make.

glibc gives a thread that finds the arenas in use a new one, up to eight
per core, and memory freed in one arena is only reused by the threads that
allocate from it. The worker runs about sixty threads (the SDK's Rust
runtime, its workflow threads, the pool the sinks write from), so on two
cores glibc made fifteen arenas besides the main one, each keeping its own
free memory resident: in the soak, about a quarter of the worker's RSS, swinging by
tens of MiB from minute to minute. Capping the arenas, as
``MALLOC_ARENA_MAX`` does, makes the threads share and reuse that memory.
The cap must come before the threads first allocate: ``script.worker``
sets it before it connects.
"""

from __future__ import annotations

import ctypes
import sys

# The worker's default cap (``--malloc-arenas``): the soak's figures are in
# BENCHMARKS.md ("The 30-minute soak").
DEFAULT_MALLOC_ARENAS = 2

# mallopt's parameter for the arena cap (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0 leaves glibc's default).
    Whether the cap was set: False off Linux or on a C library without
    ``mallopt`` (musl), where the call does nothing."""
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
