"""A helper process of the run's own, which imports the heavy libraries while the run works.

A night's steps run one after the other in the run's process, on one core. Evidently, Great
Expectations and MLflow take seconds each to import, and Evidently's plots import one small
module per plot property the first time they draw. The helper is forked from the run's process
when the run starts, imports them and draws a tiny report on the other core while the first steps
ingest the day, and then does the work that needs them: the steps send it small inputs (samples,
counts, the numbers of the day) and get back plain results (outcomes, numbers, paths, ids). The
run's own process never imports them.

Where fork is unavailable, or the helper is not started, a call runs in the calling process with
the same result. The helper:

- runs module-level functions only (they are sent by name) on arguments that pickle; send it
  samples, never a whole day;
- does one call at a time, in the order of the calls;
- may fork workers of its own (``parallel.forked_map``): it holds no data, so they start small;
- must not use polars, nor OpenMP code: the process it was forked from may have (see
  ``parallel``);
- ends on SIGTERM and SIGINT, and when the run's process ends.

An exception in the helper is raised again in the caller, caused by the helper's traceback.
"""

import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar, cast

from feedback_pipeline.lib import memory, parallel

P = ParamSpec("P")
R = TypeVar("R")


class Helper:
    """One helper process, started by ``start`` and ended by ``close``."""

    def __init__(self, prepare: Sequence[str] = ()) -> None:
        """A helper not yet started.

        Args:
            prepare: what the helper does as soon as it starts, in this order: a module name is
                imported; ``module:function`` is called without arguments, to do once what the
                first real call would (drawing a tiny report imports every plot's modules).
                Put first what the run needs first: a call waits only for the item under way.
        """
        self.prepare = tuple(prepare)
        self._pool: ProcessPoolExecutor | None = None
        self._feeder: threading.Thread | None = None
        self._failed: list[str] = []
        self._closing = threading.Event()

    @property
    def started(self) -> bool:
        """Whether calls go to the helper process (else they run in the caller)."""
        return self._pool is not None

    def start(self) -> None:
        """Forks the helper, which begins to prepare at once; no-op where fork is unavailable."""
        if self._pool is not None or not parallel.can_fork():
            return
        context = multiprocessing.get_context("fork")
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=parallel.start_worker)
        # The pool forks on its first task: that must happen here, in the caller's thread. Forked
        # from the feeder thread, the helper could inherit a lock another thread held at that
        # instant (SQLite's, while Dagster writes an event) and wait for it forever.
        self._pool.submit(os.getpid).result()
        self._closing.clear()
        # One item at a time, so that a call waits for the item under way, not for them all.
        self._feeder = threading.Thread(
            target=self._feed, args=(self._pool,), name="helper-prepare", daemon=True
        )
        self._feeder.start()

    def _feed(self, pool: ProcessPoolExecutor) -> None:
        for item in self.prepare:
            if self._closing.is_set():
                return
            try:
                problem = pool.submit(_prepare, item).result()
            except Exception as error:  # the pool broke or shut down: calls will say so
                problem = f"{item}: {error!r}"
            if problem:
                self._failed.append(problem)

    def call(self, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)``, in the helper if it is started."""
        if self._pool is None:
            return function(*args, **kwargs)
        return cast(R, self._pool.submit(function, *args, **kwargs).result())

    def submit(self, function: Callable[..., R], /, *args: object) -> Future:
        """``function(*args)`` in the helper once it has prepared; returns at once with its future.

        For work the caller does not wait for: it is handed to the helper by a thread of its
        own, after the helper's preparations, so that it finds them done. Calls made meanwhile
        may run before it. Without a helper process it runs here, before this returns.
        """
        result: Future = Future()
        if self._pool is None:
            parallel.settle(result, lambda: function(*args))
            return result
        pool = self._pool

        def hand_over() -> None:
            self.prepared()
            parallel.settle(result, lambda: pool.submit(function, *args).result())

        threading.Thread(target=hand_over, name="helper-submit", daemon=True).start()
        return result

    def prepared(self) -> list[str]:
        """Waits until the helper has prepared; returns what failed to, and why.

        A failure there is not fatal: the call that needs the module raises the real error.
        """
        if self._feeder is not None:
            self._feeder.join()
        return list(self._failed)

    def close(self) -> None:
        """Ends the helper once its current call (if any) is done; pending calls are dropped."""
        if self._pool is None:
            return
        self._closing.set()
        if self._feeder is not None:
            self._feeder.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._feeder = None, None


def _prepare(item: str) -> str | None:
    """Imports a module or calls ``module:function``; what went wrong, or None.

    Without the cyclic collector meanwhile, and what it made is then set out of the collector's
    sight for good (``memory.collector_off``): importing Great Expectations, Evidently and
    MLflow makes millions of objects that live as long as the process, and the full collections
    their growth set off walked them all again, 2.2 s of a 1M night's processor time in four.
    The workers the helper forks inherit them frozen, so their collections leave them alone too.
    """
    module, _, function = item.partition(":")
    with memory.collector_off(freeze=True):
        try:
            imported = importlib.import_module(module)
            if function:
                getattr(imported, function)()
        except Exception as error:  # reported; the real call raises it again
            return f"{item}: {error!r}"
    return None
