"""Benchmark: one night of the pipeline, end to end through Dagster, per stage.

For each size N a day of N simulated predictions and the feedback they cause is written to a
data directory of its own (``<workdir>/n=<N>``), as Parquet parts of at most a million rows under
the user's column names, with the simulator's 1% of dirty rows. The feedback a real day receives
comes over the following week; here every event the day's predictions cause is delivered on the
same day (events stamped after its end are moved to its last millisecond), so the day carries the
feedback volume of a steady-state day. The drift reference and the score calibration come from a
small earlier day (``REFERENCE_ROWS`` predictions), run once through the same job plus the
reference job. None of this is timed, and with ``--reuse`` a workdir's data is kept between runs.

Each repeat then runs in a fresh Python process, as a Dagster run worker would: it imports
Dagster and the definitions, and runs ``daily_monitoring_job`` for the day on a real instance
(SQLite, under the workdir) with the job's own executor. Everything the night does is in it:
reading, validation and quarantine, the Great Expectations checks, the de-duplication against
earlier days, attribution and labeling, realized and estimated performance, feedback quality,
the Evidently reports and snapshots, and the MLflow runs. Wall time comes from the run's own
event log (each step's start and end); memory from a thread that reads the process's resident
set size every ``SAMPLE_SECONDS`` (with its high-water mark, and the private memory of worker
processes a step forks), which also gives each step's peak. ``startup`` is the imports
and the loading of the definitions; ``other`` is what the run spends outside its steps. Each
step belongs to one stage (``STAGES``); medians over the repeats are quoted, with rows per second
and the targets, and all figures are written as JSON with the machine they were taken on::

    python -m feedback_pipeline.bench.nightly                         # 100k and 1M, 3 repeats
    python -m feedback_pipeline.bench.nightly --sizes 10000000 --workdir /tmp/nightly --reuse
    python -m feedback_pipeline.bench.nightly --compare nannyml naive # the same work, elsewhere

With ``--compare`` the same day's realized performance, estimation and drift are then done by
NannyML (in a virtual environment of its own, installed on first use) and by a plain pandas
script (``feedback_pipeline.bench.compare``), in the same run on the same machine, and the ratios
are quoted. NannyML brings a run of the pipeline's own share of that work alone (``pipeline``),
timed as NannyML's is, which its ratio is judged on; the ratio against the night's figures is
quoted beside it. A size that would exhaust the machine's memory is stopped (``--reserve-gib``) and
reported as failed. One night can be profiled in-process once the workdir is prepared::

    python -m feedback_pipeline.bench.nightly --child --workdir /tmp/nightly/n=1000000 --profile
"""

import argparse
import datetime as dt
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from feedback_pipeline.bench.ingest import (
    DIRTY_SLICE,
    GIB,
    RESULT_PREFIX,
    _verdict,
    current_rss_bytes,
    machine_info,
    peak_rss_bytes,
    run_watched,
)
from feedback_pipeline.lib.settings import DATA_DIR_ENV, SETTINGS_ENV, default_settings_path
from feedback_pipeline.simulate.landing import (
    _dirty_feedback,
    _dirty_inferences,
    _to_user_names,
)
from feedback_pipeline.simulate.traffic import SimulationConfig, build_world, simulate_day

REFERENCE_DAY = dt.date(2026, 10, 1)
DAY = dt.date(2026, 10, 2)
REFERENCE_ROWS = 50_000
CHUNK_ROWS = 1_000_000
DEFAULT_SIZES = [100_000, 1_000_000]
DEFAULT_OUT = "data/bench/nightly.json"
MARKER = "bench-nightly.json"
# The project's instance settings, copied into each workdir's Dagster home.
INSTANCE_SETTINGS = Path(__file__).parents[2] / "dagster.yaml"
JOB = "daily_monitoring_job"
# Each sample takes Python's lock from the run: sampling every 10 ms made a 1M night about 1 s (5%)
# slower than every 100 ms, with the same peaks (the high-water mark catches what falls between).
SAMPLE_SECONDS = 0.1
# Worker processes' private memory is read less often: the kernel walks a child's page tables to
# count it (about 50 ms for a worker forked from a process holding 4 GiB), under the lock the
# child needs to grow its memory.
CHILDREN_SAMPLE_SECONDS = 0.25
SMALL_CHILD_BYTES = 128 * 2**20
# Targets for a day of N predictions end to end: seconds and peak resident memory.
TIME_TARGETS = {1_000_000: 20.0, 10_000_000: 75.0}
MEMORY_TARGETS = {1_000_000: 3 * GIB, 10_000_000: 8 * GIB}
LINEAR_TARGET = 10.0  # the 10M night at most 10x the 1M night
COMPARE_TARGET = 5.0  # realized performance, estimation and drift at least 5x NannyML's speed
# Which stage each step of the nightly job belongs to: assets, their checks (named after the
# asset) and the Great Expectations steps.
STAGES = {
    "ingest": ("inference_log", "feedback_events", "inference_expectations"),
    "attribute": ("attributed_feedback", "labeled_predictions", "labeled_expectations"),
    "metrics": ("performance_metrics",),
    "reports": ("monitoring_reports",),
    "queue": ("labeling_queue",),
}
STAGE_NAMES = ("startup", *STAGES, "other", "total")
# The phases of the reports step, from its metadata.
# drift, quality and part of saving are summed over the versions' workers; versions is the wall
# time the workers took together.
REPORT_PHASES = ("import", "versions", "drift", "quality", "saving", "tracking")


def stage_of(step: str) -> str:
    """The stage of a step key such as ``inference_log`` or ``inference_log_rows_are_conserved``."""
    for stage, prefixes in STAGES.items():
        if any(step == p or step.startswith(f"{p}_") for p in prefixes):
            return stage
    return "other"


# ---------------------------------------------------------------------------------------------
# Writing the data (not timed)
# ---------------------------------------------------------------------------------------------


def bench_settings(workdir: Path) -> Path:
    """The shipped settings with a one-day reference window, written into the workdir."""
    raw = yaml.safe_load(default_settings_path().read_text(encoding="utf-8"))
    raw["start_date"] = REFERENCE_DAY.isoformat()
    raw["reference_window"] = {**raw["reference_window"], "start": str(REFERENCE_DAY), "days": 1}
    path = workdir / "settings.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def environment(workdir: Path) -> dict[str, str]:
    """The environment of a run on the workdir: its data, settings and Dagster instance."""
    return {
        **os.environ,
        DATA_DIR_ENV: str(workdir),
        SETTINGS_ENV: str(workdir / "settings.yaml"),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }


def _renumber(ids: pd.Series, prefix: str, offset: int, width: int) -> pd.Series:
    """Ids such as ``p-20261002-0000012`` moved by ``offset`` so that every part's are unique."""
    numbers = ids.str.rsplit("-", n=1).str[-1].astype("int64") + offset
    return prefix + numbers.astype(str).str.zfill(width)


def write_day(
    settings_path: Path, workdir: Path, day: dt.date, rows: int, seed: int
) -> dict[str, Any]:
    """Simulates ``rows`` predictions of ``day`` and all their feedback into the landing zone.

    The simulator runs once per part of at most ``CHUNK_ROWS`` rows on one shared world (the
    same customers all day); prediction and feedback ids are renumbered by the part's offset.

    Returns:
        Rows, events, files and bytes written.
    """
    from feedback_pipeline.lib.settings import load_settings

    settings = load_settings(settings_path)
    chunk = min(rows, CHUNK_ROWS)
    world = build_world(SimulationConfig(start_date=day, rows_per_day=chunk, seed=seed))
    rng = np.random.default_rng(seed + 1)
    roots = {
        "inferences": workdir / settings.landing.inferences / f"date={day}",
        "feedback": workdir / settings.landing.feedback / f"date={day}",
    }
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    last = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(milliseconds=1)
    files, events = [], 0
    for number, offset in enumerate(range(0, rows, chunk)):
        config = SimulationConfig(start_date=day, rows_per_day=min(chunk, rows - offset), seed=seed)
        predictions, feedback = simulate_day(config, world, 0)
        predictions = predictions.drop(columns="true_label")
        if offset:
            prefix = f"p-{day:%Y%m%d}-"
            predictions["prediction_id"] = _renumber(
                predictions["prediction_id"], prefix, offset, 8
            )
            named = feedback["prediction_id"].notna()
            feedback.loc[named, "prediction_id"] = _renumber(
                feedback.loc[named, "prediction_id"], prefix, offset, 8
            )
            feedback["feedback_id"] = _renumber(
                feedback["feedback_id"], f"f-{day:%Y%m%d}-", 2 * offset, 9
            )
        feedback["timestamp"] = feedback["timestamp"].where(feedback["timestamp"] <= last, last)
        parts = {
            "inferences": (predictions, settings.inference_columns.source_names()),
            "feedback": (feedback, settings.feedback_columns.source_names()),
        }
        for name, (frame, mapping) in parts.items():
            # The simulator's dirtying sets cells one by one: it is applied to slices.
            if name == "inferences":
                frame = _to_user_names(frame, mapping)
            slices = [
                frame.iloc[i : i + DIRTY_SLICE].copy() for i in range(0, len(frame), DIRTY_SLICE)
            ]
            for part in slices:
                if name == "inferences":
                    _dirty_inferences(part, settings.inference_columns, rng, 0.01, text=False)
                else:
                    _dirty_feedback(part, rng, text=False)
            path = roots[name] / f"part-{number:05d}.parquet"
            _to_user_names(pd.concat(slices), mapping).to_parquet(path, index=False)
            files.append(str(path.relative_to(workdir)))
        events += len(feedback)
        del predictions, feedback, parts
        gc.collect()
    return {
        "rows": rows,
        "events": events,
        "files": files,
        "file_bytes": sum((workdir / f).stat().st_size for f in files),
    }


def prepare(workdir: Path, rows: int, seed: int, reuse: bool, reserve_bytes: int) -> dict:
    """Makes sure the workdir holds the reference day, processed, and the benchmark day.

    A marker file records what the benchmark wrote, so that a directory it did not write is
    never deleted, and so that ``reuse`` can keep a workdir written with the same parameters.

    Returns:
        What was written, and the seconds writing and the reference took.
    """
    marker = workdir / MARKER
    wanted = {"day": str(DAY), "rows": rows, "seed": seed, "reference_rows": REFERENCE_ROWS}
    if marker.exists():
        written = json.loads(marker.read_text())
        if reuse and {k: written.get(k) for k in wanted} == wanted:
            print(f"  reusing the day of {rows:,} predictions in {workdir}", flush=True)
            # The instance's settings as the project has them now, not as when it was written.
            shutil.copy(INSTANCE_SETTINGS, workdir / "dagster_home" / "dagster.yaml")
            return {**written, "generation_seconds": None}
        shutil.rmtree(workdir)
    elif workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"{workdir} holds files the benchmark did not write; choose another")
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    settings_path = bench_settings(workdir)
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_SETTINGS, home / "dagster.yaml")
    print(f"  writing the reference day ({REFERENCE_ROWS:,} predictions) ...", flush=True)
    reference = write_day(settings_path, workdir, REFERENCE_DAY, REFERENCE_ROWS, seed + 100)
    print(f"  writing {rows:,} predictions and their feedback ...", flush=True)
    day = write_day(settings_path, workdir, DAY, rows, seed)
    generated = time.perf_counter() - start
    print("  running the reference day and building the reference ...", flush=True)
    command = [sys.executable, "-m", "feedback_pipeline.bench.nightly", "--child", "--setup"]
    setup = run_watched([*command, "--workdir", str(workdir)], environment(workdir), reserve_bytes)
    if "error" in setup:
        raise SystemExit(f"the reference could not be built: {setup['error']}")
    written = {
        **wanted,
        "events": day["events"],
        "files": day["files"],
        "file_bytes": day["file_bytes"],
        "reference_events": reference["events"],
        "generation_seconds": round(generated, 2),
        "reference_seconds": round(time.perf_counter() - start - generated, 2),
    }
    marker.write_text(json.dumps(written, indent=2))
    return written


# ---------------------------------------------------------------------------------------------
# One night (in its own process)
# ---------------------------------------------------------------------------------------------


class MemorySampler:
    """Reads the process's resident set size and its high-water mark every ``interval`` seconds.

    The sampling thread needs Python's lock, which a long call into a library can hold past a
    short peak; the kernel's high-water mark (``VmHWM``) misses nothing, so a step whose
    interval saw the mark rise is charged with it. Processes forked by the run add the memory
    that is theirs (``private_bytes``): a worker forked by a step its private pages, the pages
    it still shares with this process being counted once, here; the run's helper process and
    the workers it forks (which draw the reports) their proportional share of the pages they
    share among themselves.
    """

    def __init__(
        self, interval: float = SAMPLE_SECONDS, children_interval: float = CHILDREN_SAMPLE_SECONDS
    ) -> None:
        self.interval = interval
        self.children_interval = children_interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        known: dict[str, int] = {}  # each child's private bytes, as last read
        next_read = 0.0
        with open("/proc/self/status", encoding="ascii") as status:
            while not self._stop.is_set():
                status.seek(0)
                fields = dict(line.split(":", 1) for line in status.read().splitlines())
                rss, hwm = (int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))
                now = time.time()
                # Children are listed every time (an ended one stops counting at once, a new one
                # counts from its first sample); their pages are counted again only now and then:
                # a large worker's count takes a twentieth of the time at most.
                alive = descendants()
                again = now >= next_read
                known = {
                    pid: private_bytes(pid, plain) if again or pid not in known else known[pid]
                    for pid, plain in alive.items()
                }
                if again:
                    next_read = now + max(self.children_interval, 20 * (time.time() - now))
                self.samples.append((now, rss + sum(known.values()), hwm))
                self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int | None:
        """The peak between two wall-clock instants (None if no sample fell between).

        The largest sample, or the high-water mark where it rose from the last sample before
        ``start`` to the first one after ``end``. Which side of a window's edge a rise between
        two samples happened cannot be told, so it is charged to both: a step can be charged
        with a peak the next step reached in its first ``interval``.
        """
        inside = [rss for t, rss, _ in self.samples if start <= t <= end]
        if not inside:
            return None
        before = [hwm for t, _, hwm in self.samples if t < start]
        after = [hwm for t, _, hwm in self.samples if t > end]
        if before and after and after[0] > before[-1]:
            return max(max(inside), after[0])
        return max(inside)


def child_processes() -> list[str]:
    """The process ids of this process's children (of every one of its threads)."""
    return _children("self")


def _children(pid: str) -> list[str]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process ended meanwhile
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listed:
                found += listed.read().split()
        except OSError:  # the thread ended meanwhile
            continue
    return found


def descendants() -> dict[str, bool]:
    """This process's descendants, each with whether it shares its pages with this process.

    A child forked from this process shares this process's pages, which this process's
    resident size counts; a process forked from a child (a worker of the run's helper process)
    and a child with children of its own share pages among themselves that this process has
    never had.
    """
    out: dict[str, bool] = {}
    for child in child_processes():
        below, pending = [], _children(child)
        while pending:
            pid = pending.pop()
            below.append(pid)
            pending += _children(pid)
        out[child] = not below
        out |= dict.fromkeys(below, False)
    return out


def private_bytes(pid: str, shares_with_parent: bool = True) -> int:
    """The memory of a descendant process that no other process counts (0 once it has ended).

    A large one is asked for its pages, which the kernel counts by walking its page tables: a
    worker forked from this process, its private pages (the ones it shares are this process's);
    a process whose pages are shared with its own workers or its parent's other workers, its
    proportional share of them (Pss), which counts each such page once across the processes
    sharing it, and counts at most a share of this process's pages they still share again. A
    small process (Dagster's log tails) is charged its whole resident set, cheaply read, which
    can only overstate it by the little it shares.
    """
    total = 0
    fields = ("Private_Clean:", "Private_Dirty:") if shares_with_parent else ("Pss:",)
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        if resident < SMALL_CHILD_BYTES:
            return resident
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith(fields):
                    total += int(line.split()[1]) * 1024
    except OSError:  # the process ended meanwhile
        return 0
    return total


def step_intervals(instance: Any, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's start and end (wall-clock seconds) from the run's event log."""
    import dagster as dg

    starts: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for record in instance.all_logs(run_id):
        event, step = record.dagster_event, record.step_key
        if event is None or step is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[step] = float(record.timestamp)
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            end = float(record.timestamp)
            intervals[step] = (starts.get(step, end), end)
    return intervals


def _run_metadata(instance: Any, run_id: str) -> dict[str, Any]:
    """Counts the night's assets recorded: rows in, valid, quarantined, events and labels."""
    import dagster as dg

    wanted = {
        "inference_log": ("rows_in", "rows_valid", "rows_quarantined"),
        "feedback_events": ("rows_in", "rows_valid", "rows_quarantined"),
        "attributed_feedback": ("events_attributed", "events_late", "events_orphaned"),
        "labeled_predictions": ("n_predictions", "n_labeled", "n_pending"),
        "monitoring_reports": tuple(f"seconds_{phase}" for phase in REPORT_PHASES),
    }
    found: dict[str, Any] = {}
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        name = materialization.asset_key.to_user_string()
        for key in wanted.get(name, ()):
            if key in materialization.metadata:
                found[f"{name}.{key}"] = materialization.metadata[key].value
    return found


def daily_job() -> Any:
    """The nightly job, loaded from the project's definitions (for ``dg.reconstructable``)."""
    from feedback_pipeline.definitions import defs

    return defs().resolve_job_def(JOB)


def _setup(instance: Any, quiet: dict) -> None:
    """The reference day's night and the reference, in process (not timed)."""
    from feedback_pipeline.definitions import defs

    definitions = defs()
    for job, day in ((JOB, REFERENCE_DAY.isoformat()), ("reference_job", None)):
        result = definitions.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=day, run_config=quiet, raise_on_error=False
        )
        if not result.success:
            raise SystemExit(f"the run {result.run_id} of {job} failed; see its event log")


def run_night(setup: bool = False) -> dict[str, Any]:
    """Runs the benchmark day's night (or, with ``setup``, the reference day and the reference).

    The night runs as a launched run does (``dg.execute_job`` on the reconstructable job, the
    day as its partition tag), not through ``execute_in_process``, which keeps every step's
    output in memory for the caller. The data directory, the settings and the Dagster instance
    come from the environment.
    """
    with MemorySampler() as sampler:
        started, cpu_start, steal_start = time.time(), processor_seconds(), stolen_seconds()
        import dagster as dg

        from feedback_pipeline.bench import nightly

        daily_job()  # imports and definitions, as a run worker loads them
        loaded = time.time()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        with dg.DagsterInstance.get() as instance:
            if setup:
                _setup(instance, quiet)
                return {"setup": True}
            result = dg.execute_job(
                dg.reconstructable(nightly.daily_job),
                instance=instance,
                run_config=quiet,
                tags={"dagster/partition": DAY.isoformat()},
            )
            finished = time.time()
            cpu = {k: v - cpu_start[k] for k, v in processor_seconds().items()}
            steal_end = stolen_seconds()
            stolen = None if steal_start is None or steal_end is None else steal_end - steal_start
            if not result.success:
                raise SystemExit(f"the run {result.run_id} failed; see its event log")
            intervals = step_intervals(instance, result.run_id)
            counts = _run_metadata(instance, result.run_id)
    steps = {
        step: {
            "stage": stage_of(step),
            "seconds": end - start,
            "peak_rss_bytes": sampler.peak(start, end),
        }
        for step, (start, end) in sorted(intervals.items(), key=lambda kv: kv[1][0])
    }
    stages: dict[str, dict[str, Any]] = {
        "startup": {"seconds": loaded - started, "peak_rss_bytes": sampler.peak(started, loaded)}
    }
    for stage in STAGES:
        mine = [s for s in steps.values() if s["stage"] == stage]
        peaks = [s["peak_rss_bytes"] for s in mine if s["peak_rss_bytes"] is not None]
        stages[stage] = {
            "seconds": sum(s["seconds"] for s in mine),
            "peak_rss_bytes": max(peaks) if peaks else None,
        }
    in_steps = sum(s["seconds"] for s in steps.values())
    other = [s for s in steps.values() if s["stage"] == "other"]
    stages["other"] = {
        "seconds": (finished - loaded) - in_steps + sum(s["seconds"] for s in other),
        "peak_rss_bytes": None,
    }
    sampled = max((rss for _, rss, _ in sampler.samples), default=0)  # forked workers included
    stages["total"] = {
        "seconds": finished - started,
        "peak_rss_bytes": max(peak_rss_bytes(), sampled),
    }
    return {
        "run_id": result.run_id,
        "stages": stages,
        "steps": steps,
        "counts": counts,
        "processor_seconds": cpu,
        "stolen_seconds": stolen,
        "rss_end_bytes": current_rss_bytes(),
    }


def processor_seconds() -> dict[str, float]:
    """The processor time of this process, and of the processes it forked that have ended.

    The run's helper and the workers it and the steps fork have all ended and been waited for
    when the run is over, so the second pair then counts them all (a descendant's own ended
    descendants included). This process's own time includes the memory sampler's thread.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "own_user": own.ru_utime,
        "own_system": own.ru_stime,
        "forked_user": ended.ru_utime,
        "forked_system": ended.ru_stime,
    }


def stolen_seconds() -> float | None:
    """Processor seconds the host gave to others while this guest had work (``steal``).

    Summed over every core, from /proc/stat; None where the system does not count them. On a
    shared virtual machine the same night takes longer when the host is busy: a night
    that was robbed of seconds says so beside its time.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_child(workdir: Path, reserve_bytes: int) -> dict[str, Any]:
    """One night in a fresh interpreter, watched for memory."""
    command = [sys.executable, "-m", "feedback_pipeline.bench.nightly", "--child"]
    return run_watched([*command, "--workdir", str(workdir)], environment(workdir), reserve_bytes)


# ---------------------------------------------------------------------------------------------
# Summary, comparison, table and JSON
# ---------------------------------------------------------------------------------------------


def _median(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _phase(run: dict[str, Any], phase: str) -> float:
    return float(run["counts"].get(f"monitoring_reports.seconds_{phase}") or 0.0)


def summarize(rows: int, written: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of one size's nights per stage and per step, judged against the targets."""
    ok = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {
        "rows": rows,
        "events": written.get("events"),
        "file_bytes": written.get("file_bytes"),
        "generation_seconds": written.get("generation_seconds"),
        "repeats": len(runs),
        "failed_repeats": len(runs) - len(ok),
        "time_target_seconds": TIME_TARGETS.get(rows),
        "memory_target_bytes": MEMORY_TARGETS.get(rows),
        "runs": runs,
    }
    if not ok:
        return {**summary, "time_target": "FAIL", "memory_target": "FAIL"}
    stages = {
        stage: {
            "median_seconds": _median([r["stages"][stage]["seconds"] for r in ok]),
            "min_seconds": min(r["stages"][stage]["seconds"] for r in ok),
            "max_seconds": max(r["stages"][stage]["seconds"] for r in ok),
            "median_peak_rss_bytes": _median([r["stages"][stage]["peak_rss_bytes"] for r in ok]),
        }
        for stage in STAGE_NAMES
    }
    names = list(dict.fromkeys(step for r in ok for step in r["steps"]))
    steps = {
        step: {
            "stage": stage_of(step),
            "median_seconds": _median([r["steps"].get(step, {}).get("seconds") for r in ok]),
            "median_peak_rss_bytes": _median(
                [r["steps"].get(step, {}).get("peak_rss_bytes") for r in ok]
            ),
        }
        for step in names
    }
    total = stages["total"]
    summary |= {
        "stages": stages,
        "steps": steps,
        "median_seconds": total["median_seconds"],
        "median_peak_rss_bytes": total["median_peak_rss_bytes"],
        "rows_per_second": rows / total["median_seconds"],
        # The work NannyML is compared with: realized and estimated performance (the metrics
        # step, reading and writing included) and the drift reports' own time.
        "monitoring_seconds": _median(
            [r["stages"]["metrics"]["seconds"] + _phase(r, "drift") for r in ok]
        ),
        "monitoring_steps_seconds": _median(
            [r["stages"]["metrics"]["seconds"] + r["stages"]["reports"]["seconds"] for r in ok]
        ),
        "report_phases": {
            phase: _median([_phase(r, phase) for r in ok]) for phase in REPORT_PHASES
        },
        "processor_seconds": _processor_medians(ok),
        "stolen_seconds": _median([r.get("stolen_seconds") for r in ok]),
        "counts": ok[-1]["counts"],
    }
    summary["time_target"] = _verdict(summary["median_seconds"], TIME_TARGETS.get(rows))
    summary["memory_target"] = _verdict(summary["median_peak_rss_bytes"], MEMORY_TARGETS.get(rows))
    return summary


def _processor_medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per kind, and in all (``total``), the median processor seconds of the nights."""
    timed = [r["processor_seconds"] for r in runs if r.get("processor_seconds")]
    if not timed:
        return {}
    kinds = list(timed[0])
    out: dict[str, float | None] = {k: _median([t[k] for t in timed]) for k in kinds}
    out["total"] = _median([sum(t.values()) for t in timed])
    out["own"] = _median([t["own_user"] + t["own_system"] for t in timed])
    out["forked"] = _median([t["forked_user"] + t["forked_system"] for t in timed])
    return out


def linearity(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 10M night's time over the 1M night's, against at most 10x."""
    by_rows = {r["rows"]: r for r in results if "median_seconds" in r}
    if 1_000_000 not in by_rows or 10_000_000 not in by_rows:
        return None
    ratio = by_rows[10_000_000]["median_seconds"] / by_rows[1_000_000]["median_seconds"]
    return {"ratio_10m_to_1m": ratio, "target": LINEAR_TARGET, "verdict": _verdict(ratio, 10)}


def comparison_ratio(
    result: dict[str, Any],
    tool: str,
    figures: dict[str, Any],
    alone: dict[str, Any] | None = None,
) -> dict:
    """How many times longer the other tool took for the same work than the pipeline.

    NannyML's realized performance, CBPE and univariate drift (its loading left out) are set
    against the pipeline's metrics and drift run alone (``alone``: the ``pipeline`` tool of
    ``bench/compare.py``, its loading left out likewise: the metrics' computing, and drawing
    the drift reports from rows already read). Without them, they are set against the night's
    figure: the metrics step whole (reading and writing included) and the seconds the drift
    reports took to draw (their rows' reading left out), while they shared the machine with the
    run. Both ratios are kept. The naive script, which also reads and joins, is set against the
    whole night. The ``pipeline`` tool's own entry gives its time alone and in the night.
    """
    stages = _finished_stages(figures)
    if not stages:
        return {"tool": tool, "ratio": None, "verdict": "FAIL"}
    in_night = result.get("monitoring_seconds")
    if tool == "pipeline":
        return {
            "tool": tool,
            "seconds": _alone_seconds(figures),
            "in_night": in_night,
            "ratio": None,
            "target": None,
            "verdict": None,
        }
    extra: dict[str, Any] = {}
    if tool == "nannyml":
        theirs = sum(stages[s]["median_seconds"] for s in ("realized", "estimated", "drift"))
        by_itself = _alone_seconds(alone)
        ours, target = in_night if by_itself is None else by_itself, COMPARE_TARGET
        extra = {
            "ours_measured": "in the night" if by_itself is None else "alone",
            "in_night": in_night,
            "ratio_in_night": theirs / in_night if in_night else None,
        }
    else:
        theirs = sum(s["median_seconds"] for s in stages.values())
        ours, target = result.get("median_seconds"), None
    ratio = theirs / ours if ours else None
    verdict = None
    if target is not None:
        verdict = "FAIL" if ratio is None else _verdict(target, ratio)
    return {
        "tool": tool,
        "seconds": theirs,
        "ours": ours,
        "ratio": ratio,
        "target": target,
        "verdict": verdict,
        **extra,
    }


def _finished_stages(figures: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's stages, if its runs finished (none if every one failed)."""
    if not figures or "error" in figures:
        return {}
    return figures.get("stages") or {}


def _alone_seconds(figures: dict[str, Any] | None) -> float | None:
    """The pipeline's metrics and drift, run alone (``pipeline`` of ``bench/compare.py``)."""
    stages = _finished_stages(figures)
    if not stages:
        return None
    return stages["metrics"]["median_seconds"] + stages["drift"]["median_seconds"]


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _comparison_line(compared: dict[str, Any]) -> str:
    """One tool's comparison, as the table says it."""
    tool = compared["tool"]
    if compared.get("seconds") is None or (tool != "pipeline" and compared.get("ratio") is None):
        return f"{tool}: FAILED ({compared.get('error')})"
    if tool == "pipeline":
        return f"pipeline alone: metrics + drift {compared['seconds']:.2f} s" + (
            f" ({compared['in_night']:.2f} s in the night)" if compared.get("in_night") else ""
        )
    work = "realized + estimated + drift" if tool == "nannyml" else "night"
    line = (
        f"{tool}: {work} {compared['seconds']:.2f} s against the pipeline's "
        f"{compared['ours']:.2f} s"
        + (" alone" if compared.get("ours_measured") == "alone" else "")
        + f": {compared['ratio']:.1f}x"
    )
    if compared.get("target"):
        line += f" (target >= {compared['target']:g}x {compared['verdict']})"
    if compared.get("ours_measured") == "alone" and compared.get("ratio_in_night"):
        line += (
            f"; {compared['ratio_in_night']:.1f}x against its "
            f"{compared['in_night']:.2f} s in the night"
        )
    return line


def format_table(results: list[dict[str, Any]], linear: dict[str, Any] | None) -> str:
    """Per size: each stage's median time and peak memory, then the totals and the verdicts."""
    lines = []
    for r in results:
        lines.append(f"\n{r['rows']:,} predictions, {r.get('events') or 0:,} feedback events")
        if "stages" not in r:
            lines.append(f"  FAIL: {r['runs'][-1].get('error') if r['runs'] else 'no run'}")
            continue
        width = max(len(step) for step in r["steps"]) + 2
        header = f"  {'stage':<{width}} {'median s':>9} {'min s':>7} {'max s':>7} {'peak GiB':>9}"
        lines += [header, "  " + "-" * (len(header) - 2)]
        for stage, figures in r["stages"].items():
            lines.append(
                f"  {stage:<{width}} {_seconds(figures['median_seconds']):>9} "
                f"{_seconds(figures['min_seconds']):>7} {_seconds(figures['max_seconds']):>7} "
                f"{_gib(figures['median_peak_rss_bytes']):>9}"
            )
            for step, own in r["steps"].items():
                if own["stage"] == stage:
                    lines.append(
                        f"    {step:<{width - 2}} {_seconds(own['median_seconds']):>9} "
                        f"{'':>7} {'':>7} {_gib(own['median_peak_rss_bytes']):>9}"
                    )
        time_target, memory_target = r["time_target_seconds"], r["memory_target_bytes"]
        lines.append(
            f"  total {r['median_seconds']:.2f} s ({r['rows_per_second']:,.0f} predictions/s), "
            f"peak {_gib(r['median_peak_rss_bytes'])} GiB"
            + (f"; target <= {time_target:g} s {r['time_target']}" if time_target else "")
            + (f", <= {memory_target / GIB:g} GiB {r['memory_target']}" if memory_target else "")
        )
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["report_phases"].items() if v)
        lines.append(f"  reports step: {phases} s")
        cpu = r.get("processor_seconds") or {}
        if cpu.get("total") is not None:
            lines.append(
                f"  processor time {cpu['total']:.1f} s: the run's process {cpu['own']:.1f} s "
                f"({cpu['own_system']:.1f} s in the kernel), the processes it forked "
                f"{cpu['forked']:.1f} s; {cpu['total'] / r['median_seconds']:.2f} cores busy "
                f"of {len(os.sched_getaffinity(0))}"
                + (
                    f"; the host took {r['stolen_seconds']:.1f} s of them (steal)"
                    if r.get("stolen_seconds") is not None
                    else ""
                )
            )
        for compared in r.get("comparisons", []):
            lines.append(f"  {_comparison_line(compared)}")
    if linear:
        lines.append(
            f"\n10M night / 1M night: {linear['ratio_10m_to_1m']:.1f}x "
            f"(target <= {LINEAR_TARGET:g}x {linear['verdict']})"
        )
    lines.append(
        "\nstartup: imports and definitions; other: the run outside its steps. Steps are timed "
        "from the run's event log; peaks are the process's resident memory, sampled every "
        f"{SAMPLE_SECONDS * 1000:g} ms (or its high-water mark, where it rose between two "
        "samples), the private memory of the workers a step forks, and the run's helper "
        "process and its workers' proportional share of the pages they share."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: sizes, repeats, where the data and the figures go, what to compare."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_pipeline.bench.nightly",
        description="Time one night of the pipeline through Dagster, per stage.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep each size's data under WORKDIR/n=<size> (else a temp dir)",
    )
    parser.add_argument("--reuse", action="store_true", help="keep data written earlier")
    parser.add_argument(
        "--compare",
        nargs="*",
        choices=["nannyml", "naive", "pipeline"],
        default=[],
        help="do the same monitoring work with these tools too (nannyml brings pipeline: "
        "the pipeline's own metrics and drift, run alone)",
    )
    parser.add_argument("--compare-repeats", type=int, default=None)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON figures go")
    parser.add_argument("--label", help="a name for this run in the JSON (a commit, a branch)")
    parser.add_argument("--reserve-gib", type=float, default=2.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="profile one night in-process")
    return parser.parse_args(argv)


def _profiled(workdir: Path) -> dict[str, Any]:
    import cProfile
    import pstats

    os.environ.update(environment(workdir))
    profiler = cProfile.Profile()
    figures = profiler.runcall(run_night)
    profiler.dump_stats(workdir / "night.prof")  # for pstats, snakeviz or gprof2dot
    stats = pstats.Stats(profiler).sort_stats("cumulative")
    stats.print_stats("feedback_pipeline", 60)
    stats.sort_stats("tottime").print_stats(45)
    return figures


def compared_tools(asked: list[str]) -> list[str]:
    """The tools to run, in order: NannyML's work is set against the pipeline's, run alone first."""
    tools = list(dict.fromkeys(asked))
    if "nannyml" in tools or "pipeline" in tools:  # first, whatever the order asked
        tools = ["pipeline", *(tool for tool in tools if tool != "pipeline")]
    return tools


def benchmark(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every size: prepare its workdir, run its nights, compare; returns all the figures."""
    reserve = int(args.reserve_gib * GIB)
    results = []
    for rows in args.sizes:
        workdir = root / f"n={rows}"
        print(f"{rows:,} predictions:", flush=True)
        written = prepare(workdir, rows, args.seed, args.reuse, reserve)
        runs = []
        for repeat in range(args.repeats):
            run = run_child(workdir, reserve)
            total = run.get("stages", {}).get("total", {}).get("seconds")
            shown = f"{total:.2f} s" if total is not None else run.get("error")
            print(f"  night {repeat + 1}/{args.repeats}: {shown}", flush=True)
            runs.append(run)
        result = summarize(rows, written, runs)
        comparisons, alone = [], None
        for tool in compared_tools(args.compare):
            from feedback_pipeline.bench.compare import run_comparison

            print(f"  {tool} ...", flush=True)
            figures = run_comparison(
                tool,
                workdir,
                DAY.isoformat(),
                args.compare_repeats or args.repeats,
                args.reserve_gib,
            )
            if tool == "pipeline":
                alone = figures
            comparisons.append(
                {
                    **comparison_ratio(result, tool, figures, alone),
                    "error": figures.get("error"),
                    "figures": figures,
                }
            )
        result["comparisons"] = comparisons
        results.append(result)
    return {
        "benchmark": "one night of daily_monitoring_job through Dagster, per stage",
        "label": args.label,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": {
            "day": str(DAY),
            "reference_rows": REFERENCE_ROWS,
            "repeats": args.repeats,
            "seed": args.seed,
            "settings": str(default_settings_path()),
            "sample_seconds": SAMPLE_SECONDS,
        },
        "targets": {
            "seconds": {str(k): v for k, v in TIME_TARGETS.items()},
            "peak_rss_bytes": {str(k): v for k, v in MEMORY_TARGETS.items()},
            "linear_10m_to_1m": LINEAR_TARGET,
            "nannyml_ratio": COMPARE_TARGET,
        },
        "results": results,
        "linearity": linearity(results),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with ``--child``, one night) and prints and writes the figures."""
    args = parse_args(argv)
    if args.child:
        figures = _profiled(args.workdir) if args.profile else run_night(setup=args.setup)
        print(RESULT_PREFIX + json.dumps(figures), flush=True)
        return 0
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = benchmark(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="feedback-bench-") as temp:
            report = benchmark(args, Path(temp))
    print(format_table(report["results"], report["linearity"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nfigures written to {out}")
    failed = any("stages" not in r for r in report["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
