"""The run's helper process: it prepares first, does the calls in order, and says what failed."""

import gc
import os
import signal
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from feedback_pipeline.lib import parallel
from feedback_pipeline.lib.helper import Helper

forking = pytest.mark.skipif(not parallel.can_fork(), reason="this platform cannot fork")
HERE = __name__
UNIMPORTED = "tabnanny"  # a standard module nothing here imports


def _pid() -> int:
    return os.getpid()


def _imported(name: str) -> bool:
    return name in sys.modules


def _fail(message: str) -> None:
    raise ValueError(message)


def _broken_warm_up() -> None:
    raise RuntimeError("the warm-up broke")


def _note(path: str, line: str, pause: float = 0.0) -> None:
    time.sleep(pause)
    with open(path, "a") as handle:
        handle.write(f"{line}\n")


def _slow_note() -> None:
    _note(os.environ["HELPER_TEST_LOG"], "prepared", pause=0.4)


def _forked_by() -> str:
    # A forked process keeps only the thread that forked it, under that thread's name.
    return threading.current_thread().name


def _sigterm() -> object:
    return signal.getsignal(signal.SIGTERM)


LONG_LIVED: list = []


def _make_long_lived() -> None:
    LONG_LIVED.extend({"n": n} for n in range(20_000))


def _collector() -> tuple[bool, int]:
    return gc.isenabled(), gc.get_freeze_count()


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _a_new_cycle_is_collected() -> bool:
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    return gone() is None


@pytest.fixture
def helper():
    started = Helper()
    yield started
    started.close()


@forking
def test_calls_run_in_the_helper_which_imported_what_it_was_told() -> None:
    if UNIMPORTED in sys.modules:
        pytest.skip(f"{UNIMPORTED} is already imported here")
    helper = Helper([UNIMPORTED])
    helper.start()
    try:
        assert helper.started
        assert helper.prepared() == []
        assert helper.call(_pid) != os.getpid()
        assert helper.call(_imported, UNIMPORTED)
        assert UNIMPORTED not in sys.modules  # the caller never imported it
        assert helper.call(sum, [1, 2, 3]) == 6  # a builtin, and arguments
    finally:
        helper.close()
    assert not helper.started


def test_a_helper_not_started_runs_the_calls_in_the_caller(helper: Helper) -> None:
    assert not helper.started
    assert helper.call(_pid) == os.getpid()
    assert helper.prepared() == []


@forking
def test_an_error_in_the_helper_is_raised_in_the_caller_and_the_helper_goes_on(
    helper: Helper,
) -> None:
    helper.start()
    with pytest.raises(ValueError, match="no such day") as raised:
        helper.call(_fail, "no such day")
    assert "raise ValueError(message)" in str(raised.value.__cause__)  # the helper's traceback
    assert helper.call(_pid) != os.getpid()


@forking
def test_what_could_not_be_prepared_is_reported_and_the_rest_still_is() -> None:
    helper = Helper(["no_such_module_anywhere", f"{HERE}:_broken_warm_up", UNIMPORTED])
    helper.start()
    try:
        failed = helper.prepared()
        assert len(failed) == 2
        assert failed[0].startswith("no_such_module_anywhere: ModuleNotFoundError")
        assert "the warm-up broke" in failed[1]
        assert helper.call(_imported, UNIMPORTED)
    finally:
        helper.close()


@forking
def test_what_the_preparations_made_is_frozen_and_the_collector_still_runs_after() -> None:
    helper = Helper([f"{HERE}:_make_long_lived", f"{HERE}:_broken_warm_up"])
    helper.start()
    try:
        assert len(helper.prepared()) == 1  # the broken warm-up
        collecting, frozen = helper.call(_collector)
        assert collecting  # on again, after a preparation that failed too
        assert frozen >= 20_000  # the long-lived objects, out of the collector's sight
        assert helper.call(_a_new_cycle_is_collected)  # what calls make is still collected
    finally:
        helper.close()


def _started_noting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: int) -> tuple:
    """A started helper whose ``items`` slow preparations each note ``prepared`` in the log."""
    log = tmp_path / "order.txt"
    monkeypatch.setenv("HELPER_TEST_LOG", str(log))  # read by the helper, forked after this
    helper = Helper([f"{HERE}:_slow_note"] * items)
    helper.start()
    return helper, log


@forking
def test_a_call_waits_for_the_item_under_way_not_for_every_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper, log = _started_noting(tmp_path, monkeypatch, 4)
    try:
        helper.call(_note, str(log), "called")
        helper.prepared()
    finally:
        helper.close()
    lines = log.read_text().split()
    assert sorted(lines) == ["called"] + ["prepared"] * 4
    assert lines.index("called") <= 1  # after the item under way at most


@forking
def test_the_helper_ends_on_sigterm_whatever_the_caller_does_with_it(helper: Helper) -> None:
    swallowed = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        helper.start()
        assert helper.call(_sigterm) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, swallowed)


@forking
def test_closing_ends_the_helper_process() -> None:
    helper = Helper()
    helper.start()
    pid = helper.call(_pid)
    helper.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert helper.call(_pid) == os.getpid()  # closed: calls run in the caller again


@forking
def test_the_helper_is_forked_by_the_thread_that_starts_it() -> None:
    """Not by a background thread, which could fork while another thread held a lock (SQLite's,
    as Dagster writes an event) that the helper would then wait for forever."""
    helper = Helper(["json", "csv"])
    try:
        helper.start()

        assert helper.call(_forked_by) == threading.current_thread().name
        assert helper.prepared() == []
    finally:
        helper.close()


@forking
def test_submitted_work_runs_in_the_helper_after_it_has_prepared_and_the_caller_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper, log = _started_noting(tmp_path, monkeypatch, 3)
    try:
        start = time.monotonic()
        submitted = helper.submit(_note, str(log), "submitted")
        handed_back = time.monotonic() - start
        failing = helper.submit(_fail, "no reference")
        submitted.result(timeout=30)
        with pytest.raises(ValueError, match="no reference"):
            failing.result(timeout=30)
        helper_pid = helper.submit(_pid).result(timeout=30)
    finally:
        helper.close()
    assert handed_back < 0.4  # not after the first preparation, which takes 0.4 s
    assert log.read_text().split() == ["prepared"] * 3 + ["submitted"]
    assert helper_pid != os.getpid()


def test_a_helper_not_started_does_submitted_work_at_once(helper: Helper) -> None:
    done = helper.submit(_pid)
    assert done.done() and done.result() == os.getpid()
