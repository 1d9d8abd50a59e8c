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

Handing memory back has a price where the machine is virtual. This project's benchmark machine
(a 2-core virtual machine) reports the pages its kernel has free to its host within a second
or two, and the host takes them back: a page faulted in again costs far more than a page the
process kept. Measured there, a gigabyte touched again 0.5 s after it was freed took 0.3 s, 2 s
after 1.1 s, 10 s after 3.0 s, 20 s after 4.2 s. So for the length of a run the process keeps
what glibc frees, arrays of any size included (``hold``): every step's arrays reuse the pages of
the steps before, and a 10M-prediction night faults in about half the pages it did (see
docs/benchmarks.md). The price is the peak: the process's resident memory stays at the most the
run has needed so far. Arrow's and polars' pools still hand theirs back at each step boundary:
keeping those too raised the 10M night's peak from 6.7 to 14.9 GiB. Once the run is over,
everything kept is handed back (``let_go``).
"""

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import pyarrow as pa

# glibc's ``mallopt`` parameters, and the defaults ``let_go`` brings back.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_MIB = 2**20
_DEFAULT_TRIM_THRESHOLD = _DEFAULT_TOP_PAD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536

# Whether glibc keeps everything the process frees (``hold``), until ``let_go``.
_held = False


@cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of the C library, where it is glibc's and has it (Linux)."""
    library = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not library:
        return None
    return getattr(ctypes.CDLL(library), name, None)


def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, where it has one (glibc)."""
    return _libc_function("malloc_trim")


def keep_freed() -> None:
    """From now on glibc keeps what this process frees, for its next allocations.

    For a process that ends when its work is done (a forked worker), and whose work makes and
    drops many temporary arrays of tens of megabytes: by default glibc hands much of that
    memory back to the system as it is freed, and each new array's pages are then faulted in
    again, which on a virtual machine costs about a second per gigabyte. Measuring the slices
    of a 10M day, each of two workers faulted in 4.7 GiB this way; keeping it, 0.4-1.0 GiB, and
    the workers took 6.4 s instead of 8.3-8.7 s, with the same peaks. Arrays of more than
    32 MiB are still mapped on their own (and handed back as they are freed), and what is kept
    goes when the process ends. Elsewhere than glibc, nothing changes.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * _MIB)  # the most glibc allows; fixed, not adjusted
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # never hand back the top of the heap...
    mallopt(_M_TOP_PAD, 256 * _MIB)  # ...and grow it in large steps


def hold() -> bool:
    """Until ``let_go``, glibc keeps everything this process frees, for its next allocations.

    As ``keep_freed``, and arrays of more than 32 MiB too: glibc no longer maps them on their
    own (which hands their pages back as each is freed) but carves them out of its heap, where
    the next arrays reuse them. ``release_unused`` then leaves glibc's memory alone. For a run's
    process, from its first step to its last (``WarehouseIOManager``). Returns whether it holds
    (glibc's only; elsewhere nothing changes).
    """
    global _held
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    keep_freed()
    mallopt(_M_MMAP_MAX, 0)
    _held = True
    return True


def let_go() -> None:
    """Ends ``hold``: hands back what glibc keeps free, and lets it hand back memory again.

    Arrays of more than 32 MiB are mapped on their own again and glibc trims its heap as it did
    by default; the threshold stays at the 32 MiB that ``keep_freed`` fixed (glibc would have
    raised it to about that by itself, once the process had freed such arrays).
    """
    global _held
    mallopt = _libc_function("mallopt")
    if not _held or mallopt is None:
        return
    mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD)
    _held = False
    release_unused(collect=False)


def held() -> bool:
    """Whether glibc keeps everything this process frees (``hold``)."""
    return _held


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


@contextmanager
def collector_off(freeze: bool = False) -> Iterator[None]:
    """Runs the block without the cyclic collector, on again afterwards if it was before.

    For imports and the like: what they make lives as long as the process, and the full
    collections its growth would set off walk it all again and again. With ``freeze``, every
    object alive at the end is then set out of the collector's sight for good (``gc.freeze``).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if collecting:
            gc.enable()


def release_unused(collect: bool = True) -> None:
    """Frees unreachable cycles, then hands back what Arrow's pool and glibc keep free.

    Polars hands its own back by itself. ``collect=False`` leaves the cycles: a full collection
    in a process holding Evidently's, Great Expectations' and MLflow's objects takes 0.3 s.
    While the process holds its memory (``hold``), glibc's stays.
    """
    if collect:
        gc.collect()
    release_arrow()
    trim = _malloc_trim()
    if trim is not None and not _held:
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
