"""The nightly benchmark's pieces: the day it writes, how it reads a run, how it sums up."""

import multiprocessing
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from feedback_pipeline.bench import nightly
from feedback_pipeline.lib.settings import load_settings


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    nightly.bench_settings(tmp_path)
    return tmp_path


def test_settings_keep_the_shipped_ones_with_a_one_day_reference(workdir: Path) -> None:
    settings = load_settings(workdir / "settings.yaml")
    shipped = load_settings()

    assert settings.reference_window.dates() == [nightly.REFERENCE_DAY]
    assert settings.start_date == nightly.REFERENCE_DAY
    assert settings.feedback_kinds == shipped.feedback_kinds
    assert settings.inference_columns == shipped.inference_columns


def test_a_day_in_parts_has_unique_ids_and_feedback_inside_the_day(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nightly, "CHUNK_ROWS", 1000)
    written = nightly.write_day(workdir / "settings.yaml", workdir, nightly.DAY, 2500, seed=3)
    inferences = [f for f in written["files"] if "inferences" in f]
    feedback = [f for f in written["files"] if "feedback" in f]
    predictions = pd.concat([pd.read_parquet(workdir / f) for f in inferences])
    events = pd.concat([pd.read_parquet(workdir / f) for f in feedback])

    assert len(inferences) == len(feedback) == 3
    assert len(predictions) == written["rows"] == 2500
    assert len(events) == written["events"] > 2500
    # The simulator's dirty rows repeat a few ids on purpose; renumbering leaves no other repeat.
    assert predictions["request_id"].nunique() > 0.99 * len(predictions)
    assert events["event_id"].nunique() > 0.99 * len(events)
    named = events["request_id"].dropna()
    named = named[named != "p-unknown"]
    assert named.isin(set(predictions["request_id"])).mean() > 0.98
    day_end = pd.Timestamp(nightly.DAY, tz="UTC") + pd.Timedelta(days=1)
    assert (pd.to_datetime(events["received_at"], utc=True) < day_end).all()


def test_renumber_moves_ids_by_the_offset() -> None:
    ids = pd.Series(["p-20261002-0000000", "p-20261002-0000041"])
    moved = nightly._renumber(ids, "p-20261002-", 1_000_000, 8)

    assert moved.tolist() == ["p-20261002-01000000", "p-20261002-01000041"]


@pytest.mark.parametrize(
    ("step", "stage"),
    [
        ("inference_log", "ingest"),
        ("feedback_events_rows_are_conserved", "ingest"),
        ("inference_expectations", "ingest"),
        ("attributed_feedback_feedback_is_conserved", "attribute"),
        ("labeled_expectations", "attribute"),
        ("performance_metrics", "metrics"),
        ("monitoring_reports", "reports"),
        ("labeling_queue", "queue"),
        ("something_else", "other"),
    ],
)
def test_each_step_belongs_to_its_stage(step: str, stage: str) -> None:
    assert nightly.stage_of(step) == stage


def test_step_intervals_come_from_a_real_run_event_log() -> None:
    @dg.asset
    def first() -> int:
        return 1

    @dg.asset
    def second(first: int) -> int:
        return first + 1

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([first, second], instance=instance)
        intervals = nightly.step_intervals(instance, result.run_id)

    assert set(intervals) == {"first", "second"}
    assert all(start <= end for start, end in intervals.values())
    assert intervals["first"][1] <= intervals["second"][0]


def test_memory_sampler_peak_is_the_largest_sample_in_the_window() -> None:
    sampler = nightly.MemorySampler()
    sampler.samples = [(1.0, 10, 10), (2.0, 50, 50), (3.0, 20, 50), (4.0, 90, 90)]

    assert sampler.peak(1.5, 2.5) == 50
    assert sampler.peak(4.5, 5.0) is None
    # The mark rose between the last sample inside and the first after: charged to the window.
    assert sampler.peak(1.5, 3.5) == 90
    with nightly.MemorySampler(interval=0.001) as live:
        block = bytearray(50 * 2**20)
        live._stop.wait(0.05)
    assert max(rss for _, rss, _ in live.samples) > 50 * 2**20
    del block


def test_memory_sampler_charges_a_window_with_a_peak_no_sample_saw() -> None:
    sampler = nightly.MemorySampler()
    # Between the samples at 2 and 3 the high-water mark rose to 400: a peak the thread missed.
    sampler.samples = [(1.0, 10, 10), (2.0, 50, 50), (3.0, 20, 400), (4.0, 30, 400)]

    assert sampler.peak(1.5, 2.5) == 400
    assert sampler.peak(2.5, 3.5) == 400
    assert sampler.peak(3.5, 4.5) == 30  # the mark was already there
    assert sampler.peak(3.2, 3.9) is None


def test_a_forked_child_is_charged_what_it_wrote_while_it_lives() -> None:
    ready = multiprocessing.get_context("fork").Event()

    def child() -> None:
        block = bytearray(b"x" * (80 * 2**20))  # written, so private to the child
        ready.set()
        time.sleep(30)
        del block

    worker = multiprocessing.get_context("fork").Process(target=child, daemon=True)
    worker.start()
    pid = str(worker.pid)
    try:
        assert ready.wait(20)
        assert pid in nightly.child_processes()
        assert nightly.private_bytes(pid) > 80 * 2**20
    finally:
        worker.kill()
        worker.join()
    assert pid not in nightly.child_processes()
    assert nightly.private_bytes(pid) == 0


def test_memory_sampler_counts_a_worker_only_while_it_lives() -> None:
    ready = multiprocessing.get_context("fork").Event()

    def child() -> None:
        block = bytearray(b"x" * (200 * 2**20))
        ready.set()
        time.sleep(30)
        del block

    worker = multiprocessing.get_context("fork").Process(target=child, daemon=True)
    worker.start()
    assert ready.wait(20)
    # Pages counted again only every 10 s: what changes comes from the worker ending.
    with nightly.MemorySampler(interval=0.005, children_interval=10.0) as sampler:
        time.sleep(0.1)
        killed = time.time()
        worker.kill()
        worker.join()
        ended = time.time()
        time.sleep(0.1)
    # A sample is stamped as it begins: one begun just before the kill may find the worker gone.
    living = [rss for t, rss, _ in sampler.samples if t < killed - 0.01]
    after = [rss for t, rss, _ in sampler.samples if t > ended + 0.02]

    assert living and after
    assert min(living) - max(after) > 150 * 2**20


def _run(total: float, metrics: float, reports: float, drift: float) -> dict:
    stages = {stage: {"seconds": 1.0, "peak_rss_bytes": 2**30} for stage in nightly.STAGE_NAMES}
    stages["metrics"]["seconds"] = metrics
    stages["reports"]["seconds"] = reports
    stages["total"] = {"seconds": total, "peak_rss_bytes": 2 * 2**30}
    steps = {"performance_metrics": {"stage": "metrics", "seconds": metrics, "peak_rss_bytes": 1}}
    counts = {"monitoring_reports.seconds_drift": drift}
    return {"stages": stages, "steps": steps, "counts": counts}


def test_summary_takes_medians_and_judges_the_targets() -> None:
    runs = [_run(18.0, 2.0, 6.0, 3.0), _run(30.0, 4.0, 8.0, 5.0), _run(19.0, 3.0, 7.0, 4.0)]
    runs.append({"error": "stopped"})
    summary = nightly.summarize(1_000_000, {"events": 10}, runs)

    assert summary["median_seconds"] == 19.0
    assert summary["failed_repeats"] == 1
    assert summary["rows_per_second"] == pytest.approx(1_000_000 / 19.0)
    assert summary["monitoring_seconds"] == 7.0  # metrics 3 + drift 4
    assert summary["monitoring_steps_seconds"] == 10.0
    assert summary["time_target"] == "PASS"
    assert summary["memory_target"] == "PASS"
    assert nightly.summarize(10_000_000, {}, runs)["time_target"] == "PASS"
    assert nightly.summarize(1_000_000, {}, [{"error": "x"}])["time_target"] == "FAIL"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_processor_time_counts_a_forked_worker_and_its_own_worker_once_they_have_ended() -> None:
    context = multiprocessing.get_context("fork")

    def worker() -> None:  # burns 0.3 s itself, and has a worker of its own burn 0.3 s more
        inner = context.Process(target=_burn, args=(0.3,))
        inner.start()
        _burn(0.3)
        inner.join()

    before = nightly.processor_seconds()
    process = context.Process(target=worker)  # not a daemon: daemons fork no children
    process.start()
    process.join(30)
    after = nightly.processor_seconds()

    forked = sum(after[k] - before[k] for k in ("forked_user", "forked_system"))
    assert 0.55 < forked < 1.5
    assert after["own_user"] >= before["own_user"]


def test_the_summary_and_its_table_give_the_processor_time_of_the_nights() -> None:
    runs = [_run(18.0, 2.0, 6.0, 3.0), _run(30.0, 4.0, 8.0, 5.0), _run(20.0, 3.0, 7.0, 4.0)]
    for run, (own, forked) in zip(runs, [(20.0, 16.0), (30.0, 30.0), (22.0, 18.0)], strict=True):
        run["processor_seconds"] = {
            "own_user": own - 4.0,
            "own_system": 4.0,
            "forked_user": forked - 2.0,
            "forked_system": 2.0,
        }
    for run, stolen in zip(runs, [0.5, 3.0, 1.0], strict=True):
        run["stolen_seconds"] = stolen
    summary = nightly.summarize(1_000_000, {"events": 10}, runs)

    assert summary["stolen_seconds"] == 1.0
    cpu = summary["processor_seconds"]
    assert (cpu["total"], cpu["own"], cpu["forked"], cpu["own_system"]) == (40.0, 22.0, 18.0, 4.0)
    table = nightly.format_table([summary], None)
    assert "processor time 40.0 s: the run's process 22.0 s (4.0 s in the kernel)" in table
    assert "the processes it forked 18.0 s; 2.00 cores busy" in table
    assert "the host took 1.0 s of them (steal)" in table
    assert nightly.stolen_seconds() is None or nightly.stolen_seconds() >= 0


def test_comparisons_and_linearity() -> None:
    result = {"monitoring_seconds": 2.0, "median_seconds": 20.0}
    nannyml = {
        "stages": {
            name: {"median_seconds": seconds}
            for name, seconds in (
                ("load", 9.0),
                ("realized", 4.0),
                ("estimated", 3.0),
                ("drift", 3.0),
            )
        }
    }
    compared = nightly.comparison_ratio(result, "nannyml", nannyml)
    assert compared["seconds"] == 10.0  # loading left out
    assert compared["ratio"] == 5.0
    assert compared["verdict"] == "PASS"
    naive = {"stages": {"read": {"median_seconds": 30.0}, "join": {"median_seconds": 50.0}}}
    assert nightly.comparison_ratio(result, "naive", naive)["ratio"] == 4.0
    assert nightly.comparison_ratio(result, "naive", {"error": "stopped"})["verdict"] == "FAIL"

    # Set against the pipeline's own metrics and drift run alone, as NannyML's are.
    alone = {
        "stages": {
            name: {"median_seconds": seconds}
            for name, seconds in (("load", 5.0), ("metrics", 0.5), ("drift", 1.5))
        }
    }
    by_itself = nightly.comparison_ratio(result, "nannyml", nannyml, alone)
    assert (by_itself["ours"], by_itself["ratio"]) == (2.0, 5.0)
    assert by_itself["ours_measured"] == "alone"
    assert by_itself["in_night"] == 2.0
    result_slow_night = {**result, "monitoring_seconds": 4.0}
    slow = nightly.comparison_ratio(result_slow_night, "nannyml", nannyml, alone)
    assert (slow["ratio"], slow["ratio_in_night"], slow["verdict"]) == (5.0, 2.5, "PASS")
    line = nightly._comparison_line(slow)
    assert "against the pipeline's 2.00 s alone: 5.0x (target >= 5x PASS)" in line
    assert "2.5x against its 4.00 s in the night" in line
    failed = nightly.comparison_ratio(result_slow_night, "nannyml", nannyml, {"error": "killed"})
    assert (failed["ours"], failed["ours_measured"]) == (4.0, "in the night")
    own = nightly.comparison_ratio(result_slow_night, "pipeline", alone)
    assert (own["seconds"], own["in_night"], own["ratio"]) == (2.0, 4.0, None)
    assert nightly._comparison_line(own) == (
        "pipeline alone: metrics + drift 2.00 s (4.00 s in the night)"
    )
    assert nightly.compared_tools(["naive", "nannyml"]) == ["pipeline", "naive", "nannyml"]
    assert nightly.compared_tools(["naive"]) == ["naive"]
    assert nightly.compared_tools(["nannyml", "pipeline"]) == ["pipeline", "nannyml"]

    results = [
        {"rows": 1_000_000, "median_seconds": 15.0},
        {"rows": 10_000_000, "median_seconds": 160.0},
    ]
    linear = nightly.linearity(results)
    assert linear is not None
    assert linear["ratio_10m_to_1m"] == pytest.approx(160 / 15)
    assert linear["verdict"] == "MISS"


def test_the_workers_of_a_child_are_charged_with_the_pages_they_share_with_it() -> None:
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()

    def helper() -> None:
        block = bytearray(b"x" * (200 * 2**20))  # the helper's own, then shared with its worker

        def worker() -> None:
            mine = bytearray(b"y" * (150 * 2**20))
            ready.set()
            done.wait(30)
            del mine

        child = context.Process(target=worker, daemon=True)
        child.start()
        child.join()
        del block

    process = context.Process(target=helper)  # not a daemon: daemons fork no children
    process.start()
    try:
        assert ready.wait(20)
        found = nightly.descendants()
        helper_pid = str(process.pid)
        [worker_pid] = [pid for pid in found if pid != helper_pid]
        charged = sum(nightly.private_bytes(pid, plain) for pid, plain in found.items())
        # Without the shared block, only the private pages: 150 MiB and some.
        private = sum(nightly.private_bytes(pid) for pid in found)
    finally:
        done.set()
        process.join(20)

    assert found == {helper_pid: False, worker_pid: False}
    assert charged > (150 + 200) * 2**20 > private
    assert nightly.descendants() == {}
