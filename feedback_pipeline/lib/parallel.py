"""Independent pieces of a step's work, done side by side in processes forked from the step.

Some work is pure Python held by the interpreter's lock (Evidently drawing its plots, for one), so
threads cannot share it out; a fresh process would spend seconds importing the libraries again. A
process forked from the step starts at once with everything the step has imported and read, and
reads the step's frames without copying them (the pages are shared until written).

Forking is used where the platform offers it (Linux; not Windows, and macOS only spawns by
default) and there is more than one piece and one worker; otherwise the pieces run one after the
other in the step's own process, with the same results. A worker:

- gets its piece's index only: the function and the pieces reach it through the fork, so they
  need not be picklable; what it returns is pickled back;
- keeps the memory it frees for its own reuse until it ends (``memory.keep_freed``);
- uses one thread for linear algebra: a BLAS library's threads wait for work by spinning, which
  on a small machine takes the core the other worker needs;
- must not use the step's Dagster context, instance or open connections (they belong to the
  parent), and ends without running the parent's exit handlers;
- ends on SIGTERM and SIGINT, whatever handlers the step's process had set for them;
- must not use polars once the step has (its pool's threads are not copied by the fork, and
  the work waits for them for ever), nor OpenMP code for the same reason: Evidently, pandas,
  NumPy and Arrow are safe (BLAS and Arrow rebuild their pools in the child).

An exception in a worker is raised again in the step, caused by the worker's traceback (its
``__cause__``, printed above it); a worker that dies (killed for memory, say) raises
``BrokenProcessPool`` rather than leave the step waiting. After an error the pieces not yet
started are cancelled, and those under way finish in their workers, which then exit.
"""

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar, cast

from feedback_pipeline.lib.memory import keep_freed

T = TypeVar("T")
R = TypeVar("R")

# The work of the current call, for the forked workers to find (set only while a pool runs; one
# call at a time per process, which the lock keeps).
_WORK: list[tuple[Callable, Sequence]] = []
_ONE_AT_A_TIME = threading.Lock()


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def can_fork() -> bool:
    """Whether worker processes can be forked from this one."""
    return "fork" in multiprocessing.get_all_start_methods()


def forked_map(function: Callable[[T], R], pieces: Sequence[T], workers: int) -> list[R]:
    """``[function(p) for p in pieces]``, the pieces spread over up to ``workers`` forked processes.

    Args:
        function: what to do with one piece; any callable (a closure, a lambda).
        pieces: the pieces, in order; the results come back in the same order.
        workers: the most processes at once; 1 (or a platform without fork): in this process.
    """
    workers = min(workers, len(pieces))
    if workers <= 1 or not can_fork() or _WORK:  # a worker never forks workers of its own
        return [function(piece) for piece in pieces]
    with _ONE_AT_A_TIME:
        try:
            _WORK.append((function, pieces))
            context = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_piece_worker)
            try:
                return cast(list[R], list(pool.map(_work_on, range(len(pieces)))))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            _WORK.clear()


def start_worker() -> None:
    """Makes SIGTERM and SIGINT end this process, whatever the process it was forked from did."""
    # The step's process may catch SIGTERM and SIGINT to end the run in good order (Dagster
    # does); a worker inherits the handlers, and would then outlive the run that ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_piece_worker() -> None:
    """``start_worker``, for a worker that ends with its work: it keeps what it frees."""
    start_worker()
    keep_freed()


def _work_on(index: int) -> object:
    function, pieces = _WORK[-1]
    return _limited(function, pieces[index])


# Work begun in a worker of its own and collected later (``begin``), by key.
_BEGUN: dict[str, tuple[Future, list[BaseProcess]]] = {}


def begin(key: str, function: Callable[..., object], *args: object) -> None:
    """Starts ``function(*args)`` in a worker forked from this process, and returns at once.

    For work whose result a later call collects (``wait``, ``finish``): the caller goes on
    meanwhile. The worker ends as soon as the work is done, its result handed back here to be
    kept until collected: a worker left waiting would hold its memory as long. Work begun
    earlier under the same key is discarded. The function and arguments are pickled (send
    module-level functions); where fork is unavailable the work is done here, before this
    returns.
    """
    discard(key)
    if not can_fork():
        pool: Any = _Here()
    else:
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(1, mp_context=context, initializer=_start_piece_worker)
    future = pool.submit(_limited, function, *args)
    # Its process, while the pool still names it (it is forked as the work is submitted).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False)  # the work goes on; the worker then exits
    _BEGUN[key] = (future, processes)


def begun(key: str) -> bool:
    """Whether work was begun under ``key`` and not yet finished or discarded."""
    return key in _BEGUN


def wait(key: str) -> object:
    """The result of the work of ``key``, once done; it stays for ``finish``."""
    return _BEGUN[key][0].result()


def finish(key: str) -> object:
    """The result of the work of ``key``, once done; then forgets it."""
    future, _ = _BEGUN.pop(key)
    return future.result()


def discard(key: str | None = None) -> None:
    """Ends the worker of ``key`` (every key: None) and drops its work, done or not."""
    for name in [key] if key is not None else list(_BEGUN):
        begun_work = _BEGUN.pop(name, None)
        if begun_work is not None:
            # The pool has no public way to stop work under way: its process is ended.
            for process in begun_work[1]:
                if process.is_alive():
                    process.kill()
                    process.join()


def _limited(function: Callable[..., R], *args: object) -> R:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return function(*args)


class _Here:
    """A stand-in pool that does the work at once, in this process."""

    def submit(self, function: Callable[..., R], *args: object) -> Future:
        future: Future = Future()
        settle(future, lambda: function(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to end."""


def settle(future: Future, work: Callable[[], object]) -> None:
    """Gives ``future`` the result of ``work()``, or the exception it raised."""
    try:
        future.set_result(work())
    except Exception as error:
        future.set_exception(error)
