"""Handing memory that is free but still kept by an allocator back to the system.

A night's steps run one after another in one process, and each allocates through three
allocators: Arrow's memory pool (Parquet and Arrow-backed columns), glibc (NumPy and pandas)
and polars' own. Each keeps some memory it has freed for reuse, and none of them can reuse the
others', so at 10M predictions a step started with gigabytes of memory that no data held. Handing
it back between steps keeps the night's peak near what the largest step needs.
"""

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from functools import cache

import pyarrow as pa


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, where it has one (glibc)."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


def release_unused() -> None:
    """Returns what Arrow's pool and glibc keep free to the system (polars' returns on its own)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
