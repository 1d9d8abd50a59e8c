"""Work spread over forked processes: the results of a plain loop, from other processes."""

import json
import os
import resource
import signal
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from feedback_pipeline.lib import memory, parallel
from feedback_pipeline_tests.conftest import printed_last

forking = pytest.mark.skipif(not parallel.can_fork(), reason="this platform cannot fork")


@forking
def test_the_results_are_the_loop_s_in_order_from_other_processes() -> None:
    frame = np.arange(1_000_000)  # reached through the fork, never pickled
    offset = 7

    def piece(i: int) -> tuple[int, int]:  # a closure: it could not be pickled
        return int(frame[i::5].sum()) + offset, os.getpid()

    got = parallel.forked_map(piece, range(5), workers=2)

    assert [total for total, _ in got] == [int(frame[i::5].sum()) + offset for i in range(5)]
    assert os.getpid() not in {pid for _, pid in got}
    assert len({pid for _, pid in got}) == 2


def test_one_worker_or_one_piece_runs_in_this_process() -> None:
    assert parallel.forked_map(lambda _: os.getpid(), range(3), workers=1) == [os.getpid()] * 3
    assert parallel.forked_map(lambda _: os.getpid(), [0], workers=4) == [os.getpid()]
    assert parallel.forked_map(lambda _: 1, [], workers=4) == []


@forking
def test_a_worker_does_its_pieces_itself() -> None:
    def inner(i: int) -> list[int]:
        return [*parallel.forked_map(lambda _: os.getpid(), range(2), workers=2), os.getpid()]

    for pids in parallel.forked_map(inner, range(2), workers=2):
        assert len(set(pids)) == 1  # its own pieces ran in the worker, not in workers of its own


@forking
def test_a_worker_s_error_is_raised_in_the_caller() -> None:
    def piece(i: int) -> int:
        if i == 3:
            raise ValueError(f"piece {i} is bad")
        return i

    with pytest.raises(ValueError, match="piece 3 is bad") as raised:
        parallel.forked_map(piece, range(4), workers=2)
    assert 'raise ValueError(f"piece {i} is bad")' in str(raised.value.__cause__)
    # The pool is gone and the next call works.
    assert parallel.forked_map(lambda i: i * 2, range(4), workers=2) == [0, 2, 4, 6]


@forking
def test_workers_use_one_blas_thread() -> None:
    from threadpoolctl import threadpool_info

    def threads(_: int) -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    for found in parallel.forked_map(threads, range(2), workers=2):
        assert found and set(found) == {1}


_BLAS_THREADS = """
import sys
if sys.argv[1] == "package first":
    import feedback_pipeline  # noqa: F401
import numpy  # noqa: F401
from threadpoolctl import threadpool_info

print(sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}))
"""


def _blas_threads(order: str, environment: dict[str, str]) -> list[int]:
    return json.loads(printed_last(_BLAS_THREADS, order, env=environment, timeout=60))


def test_the_package_imported_first_gives_numpy_one_blas_thread_unless_the_user_chose() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    # This machine has two cores: alone, NumPy's OpenBLAS starts a thread for each.
    if (os.cpu_count() or 1) > 1:
        assert max(_blas_threads("numpy alone", environment)) > 1
    assert _blas_threads("package first", environment) == [1]
    chosen = environment | {"OPENBLAS_NUM_THREADS": "2"}
    assert _blas_threads("package first", chosen) == [2]


glibc = pytest.mark.skipif(
    memory._libc_function("mallopt") is None, reason="the C library is not glibc"
)


def _faults_of_temporaries(_: int) -> tuple[int, int]:
    """Minor page faults while making and dropping arrays of 16, 24 and 48 MiB ten times.

    Also the pages of one round, to compare with. NumPy's huge pages are turned off, so that
    every page faulted in counts once.
    """
    np._core.multiarray._set_madvise_hugepage(False)  # pyright: ignore[reportAttributeAccessIssue]
    sizes = [6_000_000, 2_000_000, 3_000_000]  # float64: 48, 16 and 24 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        arrays = [np.ones(n) for n in sizes]
        del arrays
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return after - before, sum(sizes) * 8 // resource.getpagesize()


@forking
@glibc
def test_workers_keep_the_memory_they_free_for_their_next_arrays() -> None:
    for faults, round_pages in parallel.forked_map(_faults_of_temporaries, range(2), workers=2):
        # Kept, the ten rounds fault in the first round's pages and few more (measured: 1.5
        # rounds' worth); handed back as they are freed, 6 rounds' worth.
        assert faults < 2.5 * round_pages, (faults, round_pages)


@forking
def test_workers_end_on_sigterm_whatever_the_caller_does_with_it() -> None:
    """Dagster catches SIGTERM in a run's process; the workers forked from it must still end."""

    def dispositions(_: int) -> object:
        return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    swallowed = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        found = parallel.forked_map(dispositions, range(2), workers=2)
    finally:
        signal.signal(signal.SIGTERM, swallowed)
    assert found == [(signal.SIG_DFL, signal.SIG_DFL)] * 2


def _within(seconds: int):
    def too_long(*_: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    return previous


@forking
def test_a_worker_that_dies_breaks_the_call_rather_than_hang_it() -> None:
    def piece(i: int) -> int:
        if i == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return i

    previous = _within(60)
    try:
        with pytest.raises(BrokenProcessPool):
            parallel.forked_map(piece, range(3), workers=2)
        assert parallel.forked_map(lambda i: i, range(3), workers=2) == [0, 1, 2]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _TwoArguments(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")  # pickles, but cannot be rebuilt from its args


@forking
def test_an_error_that_cannot_come_back_still_ends_the_call() -> None:
    def piece(i: int) -> int:
        if i == 1:
            raise _TwoArguments("piece", "one")
        return i

    previous = _within(60)
    try:
        with pytest.raises(BrokenProcessPool):
            parallel.forked_map(piece, range(2), workers=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@forking
def test_a_failed_fork_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork(*_: object, **__: object) -> None:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", no_fork)
    with pytest.raises(OSError, match="temporarily"):
        parallel.forked_map(lambda i: i, range(2), workers=2)
    monkeypatch.undo()

    assert parallel._WORK == []
    assert os.getpid() not in parallel.forked_map(lambda _: os.getpid(), range(2), workers=2)


_KEPT: list[int] = []


def _keep(value: int) -> int:
    """Begun work: remembers a value in the worker, returns its process."""
    _KEPT.append(value)
    return os.getpid()


def _fail() -> None:
    raise ValueError("no reference")


def _sleep() -> None:
    import time

    time.sleep(60)


def test_begun_work_runs_in_a_worker_that_ends_once_it_is_done() -> None:
    import time

    parallel.begin("day", _keep, 7)
    assert parallel.begun("day")
    _, processes = parallel._BEGUN["day"]
    worker = parallel.wait("day")
    assert worker != os.getpid() and _KEPT == []  # done over there, not here
    assert [p.pid for p in processes] == [worker]
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(p.is_alive() for p in processes)  # ended without being told

    assert parallel.wait("day") == worker  # the result stays until finished
    assert parallel.finish("day") == worker
    assert not parallel.begun("day")
    with pytest.raises(KeyError):
        parallel.wait("day")


def test_begun_work_that_fails_raises_when_collected() -> None:
    parallel.begin("day", _fail)
    with pytest.raises(ValueError, match="no reference"):
        parallel.wait("day")
    parallel.discard("day")
    assert not parallel.begun("day")


def test_discarding_begun_work_ends_its_worker_at_once() -> None:
    import time

    parallel.begin("slow", _sleep)
    _, processes = parallel._BEGUN["slow"]
    start = time.monotonic()

    parallel.discard()

    assert time.monotonic() - start < 10
    assert processes and not any(p.is_alive() for p in processes)
    assert not parallel.begun("slow")


def test_without_fork_begun_work_is_done_at_once_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    parallel.begin("here", _keep, 3)
    try:
        assert parallel.wait("here") == os.getpid()
        assert _KEPT == [3]
        assert parallel.finish("here") == os.getpid()
    finally:
        _KEPT.clear()
