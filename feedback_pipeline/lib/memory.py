"""Handing memory that is free but still kept by an allocator back to the system.

A night's steps run one after another in one process, and each allocates through three
allocators: Arrow's memory pool (Parquet and Arrow-backed columns), glibc (NumPy and pandas)
and polars' own. Each keeps some memory it has freed for reuse, and none of them can reuse the
others', so at 10M predictions a step started with gigabytes of memory that no data held. Handing
it back between steps keeps the night's peak near what the largest step needs.

First, though, a step's data must be let go. Dagster logs each materialization through its event
storage, which inserts the asset's key and, once the key exists (every night but the first),
catches the database's refusal and updates instead. The caught exception's traceback sits in a
reference cycle with the frames that logged the materialization, and those frames hold the
step's output: at 10M predictions, the 4 GiB labeled day stayed in memory until Python's next
full collection, which came a step later, or at the end of the run, or not at all. So the
cycles are collected at each step boundary. A full collection looks at every object the process
holds, 350,000 after Dagster's, pandas' and scikit-learn's imports (0.19 s each time); the
objects a run starts with live as long as it does, so they are put out of the collector's sight
while it runs (``settle``), and a collection then costs what the run has made since.
"""

import ctypes
import ctypes.util
import gc
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


def settle() -> None:
    """From now on, full collections leave out every object the process holds now.

    ``gc.freeze`` moves them to a generation the collector never visits, until ``unsettle``
    brings them back: a long-lived process (a test session, a code server) must not keep the
    garbage of its runs for ever.
    """
    gc.freeze()


def unsettle() -> None:
    """Brings the objects ``settle`` set aside back into the collector's sight."""
    gc.unfreeze()


def release_unused(collect: bool = True) -> None:
    """Frees unreachable cycles, then hands back what Arrow's pool and glibc keep free.

    Polars hands its own back by itself. ``collect=False`` leaves the cycles: a full collection
    in a process holding Evidently's, Great Expectations' and MLflow's objects takes 0.3 s.
    """
    if collect:
        gc.collect()
    release_arrow()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def release_arrow() -> None:
    """Hands back the memory Arrow's pool holds freed; a few milliseconds, whatever its size.

    Arrow's pool (mimalloc) purges what it has freed only when it next allocates or frees, so
    where NumPy takes over a day's columns from Arrow (a stored day read into pandas, a day's
    kept rows taken), the columns Arrow let go of stay resident beside their copies until
    then: 0.7 GiB after reading a 10M day, 1.5 GiB while ingestion takes a 10M day's valid rows.
    """
    pa.default_memory_pool().release_unused()


def then_release(function: Callable[..., object], /, *args: object) -> object:
    """``function(*args)``, then ``release_unused``: for work a long-lived process does aside.

    What the work read and let go would otherwise stay in the process's allocators until it
    ends. Its frames hold no cycles worth a full collection, which would hold up the process.
    """
    try:
        return function(*args)
    finally:
        release_unused(collect=False)
