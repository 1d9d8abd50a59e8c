"""Benchmark: read, validate and quarantine one day of inference landing files.

For each size N one day of N simulated predictions is written as Parquet parts (``--rows-per-file``
rows each) under ``<workdir>/landing/inferences/date=2026-10-05/``, with the user's column names
from the settings in force and about 1% dirty rows of the kinds the simulator writes to Parquet
(null ids or score, score 1.7 or -0.3, negative latency, unknown country or platform, a timestamp
in 2099, a repeated id). Writing the data is not timed.

Each repeat then runs in a fresh Python process that imports the package and times only
``ingest_inferences(settings, day)`` with the data directory pointed at the workdir, so that the
peak resident memory it reports belongs to that one run. Medians are quoted; the figures and the
machine they were taken on are written as JSON so that runs can be compared between commits::

    python -m feedback_pipeline.bench.ingest                  # 100k and 1M rows, 3 repeats
    python -m feedback_pipeline.bench.ingest --sizes 10000000 --repeats 1   # needs a big machine

A run that would exhaust the machine's memory is stopped (``--reserve-gib``) and reported as
failed.

Without ``--workdir`` the data goes to a temporary directory that is removed afterwards; with it
the last size's day is kept (``--reuse`` skips writing it again), and one run of it can be
profiled on its own::

    python -m cProfile -s cumtime -m feedback_pipeline.bench.ingest --child --workdir DIR
"""

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from feedback_pipeline.lib.ingestion import ingest_inferences
from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings, load_settings, settings_path
from feedback_pipeline.simulate.landing import _dirty_inferences, _to_user_names
from feedback_pipeline.simulate.traffic import SimulationConfig, build_world, simulate_day

DAY = dt.date(2026, 10, 5)
DEFAULT_SIZES = [100_000, 1_000_000]
DEFAULT_OUT = "data/bench/ingest.json"
# Targets: seconds for read + validate + quarantine of a day of N rows, and the largest peak
# memory (the increase over the process before the call) as a multiple of the valid frame's size.
TIME_TARGETS = {1_000_000: 2.0, 10_000_000: 15.0}
MEMORY_TARGET_RATIO = 3.0
# The simulator's dirtying sets cells one by one, which costs time in proportion to the frame's
# length; applied to slices of this many rows it stays fast.
DIRTY_SLICE = 100_000
MARKER = "bench-landing.json"
RESULT_PREFIX = "BENCH-RESULT "
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# Writing the day (not timed)
# ---------------------------------------------------------------------------------------------


def landing_day_dir(settings: Settings, workdir: Path) -> Path:
    """The day's inference landing folder, which must lie inside the workdir.

    Args:
        settings: the settings in force, resolved with the data directory set to the workdir.
        workdir: the benchmark's working directory.

    Returns:
        The folder the day's parts are written to and read from.

    Raises:
        SystemExit: if the settings place the landing zone outside the workdir.
    """
    root = settings.resolve(settings.landing.inferences)
    day_dir = Path(root) / f"date={DAY:%Y-%m-%d}"
    if "://" in root or not day_dir.resolve().is_relative_to(workdir.resolve()):
        raise SystemExit(
            f"the settings put the inference landing zone at {root}, outside the workdir "
            f"{workdir}; use settings whose landing.inferences is a relative path"
        )
    return day_dir


def write_day(
    settings: Settings, day_dir: Path, rows: int, rows_per_file: int, seed: int
) -> list[Path]:
    """Simulates one day of ``rows`` predictions and writes it as dirty Parquet parts.

    The simulator runs once per part (``rows_per_file`` rows) on one shared world, so the
    customers are the same throughout the day while every part draws new traffic; prediction
    ids are renumbered by their offset in the day so that they stay unique. The simulator's own
    dirtying is applied to slices of ``DIRTY_SLICE`` rows (a repeated id repeats one of its
    slice).

    Args:
        settings: the settings in force; their inference column names are used in the files.
        day_dir: the day's landing folder (created if missing).
        rows: predictions in the day.
        rows_per_file: predictions per Parquet part.
        seed: seed of the simulation and of the dirty rows.

    Returns:
        The paths of the parts written, in order.
    """
    cols = settings.inference_columns
    chunk = min(rows, rows_per_file)
    world = build_world(SimulationConfig(start_date=DAY, rows_per_day=chunk, seed=seed))
    dirty_rng = np.random.default_rng(seed + 1)
    width = max(7, len(str(rows - 1)))
    day_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    parts = -(-rows // chunk)
    for number, offset in enumerate(range(0, rows, chunk)):
        print(f"    part {number + 1}/{parts}", flush=True)
        config = SimulationConfig(start_date=DAY, rows_per_day=min(chunk, rows - offset), seed=seed)
        predictions, feedback = simulate_day(config, world, 0)
        del feedback  # the benchmark reads predictions only
        if offset:
            predictions["prediction_id"] = [
                f"p-{DAY:%Y%m%d}-{offset + i:0{width}d}" for i in range(len(predictions))
            ]
        frame = _to_user_names(predictions.drop(columns="true_label"), cols.source_names())
        del predictions
        slices = [frame.iloc[i : i + DIRTY_SLICE].copy() for i in range(0, len(frame), DIRTY_SLICE)]
        del frame
        for part in slices:
            _dirty_inferences(part, cols, dirty_rng, config.dirty_share, text=False)
        frame = pd.concat(slices)
        del slices
        path = day_dir / f"part-{number:05d}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
        del frame
        gc.collect()
    return paths


def prepare_day(
    settings: Settings, workdir: Path, rows: int, rows_per_file: int, seed: int, reuse: bool
) -> dict[str, Any]:
    """Makes sure the workdir holds the day of ``rows`` predictions, writing it if needed.

    A marker file records what the benchmark wrote, so that a day it did not write (such as a
    real data directory passed as the workdir by mistake) is never deleted.

    Args:
        settings: the settings in force, resolved with the data directory set to the workdir.
        workdir: the benchmark's working directory.
        rows: predictions in the day.
        rows_per_file: predictions per Parquet part.
        seed: seed of the simulation.
        reuse: keep a day written earlier with the same parameters instead of writing it again.

    Returns:
        What was written: rows, parts, their total size and the seconds it took.

    Raises:
        SystemExit: if the day's folder holds files the benchmark did not write.
    """
    day_dir = landing_day_dir(settings, workdir)
    marker = workdir / MARKER
    wanted = {
        "day": str(DAY),
        "rows": rows,
        "rows_per_file": rows_per_file,
        "seed": seed,
        "dirty_slice": DIRTY_SLICE,
    }
    if marker.exists():
        written = json.loads(marker.read_text())
        same = {k: written.get(k) for k in wanted} == wanted
        if reuse and same and all((day_dir / name).exists() for name in written["files"]):
            print(f"  reusing the {rows:,} rows already in {day_dir}", flush=True)
            return {**written, "generation_seconds": None}
        marker.unlink()
        shutil.rmtree(day_dir, ignore_errors=True)
    elif day_dir.exists() and any(day_dir.iterdir()):
        raise SystemExit(
            f"{day_dir} holds files the benchmark did not write; choose another --workdir"
        )
    print(f"  writing {rows:,} rows to {day_dir} ...", flush=True)
    start = time.perf_counter()
    paths = write_day(settings, day_dir, rows, rows_per_file, seed)
    written = {
        **wanted,
        "files": [p.name for p in paths],
        "file_bytes": sum(p.stat().st_size for p in paths),
        "generation_seconds": round(time.perf_counter() - start, 2),
    }
    marker.write_text(json.dumps(written, indent=2))
    return written


# ---------------------------------------------------------------------------------------------
# One timed run (in its own process)
# ---------------------------------------------------------------------------------------------


def _kib_to_bytes(value: int) -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return value if sys.platform == "darwin" else value * 1024


def peak_rss_bytes() -> int:
    """The largest resident set size of this process so far (since ``reset_peak_rss``).

    Linux's ``VmHWM``, the high-water mark of the process's own memory, where there is one.
    Not ``ru_maxrss``: a process started by another begins with the resident size its parent
    had when it forked (and keeps it past ``exec``), so a child of a 3 GiB parent would report
    a 3 GiB peak whatever it did; nor does the reset clear ``ru_maxrss``.
    """
    found = _meminfo_bytes("VmHWM", "/proc/self/status")
    if found is not None:
        return found
    return _kib_to_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def current_rss_bytes() -> int:
    """The resident set size of this process now (the peak so far where /proc is missing)."""
    return _meminfo_bytes("VmRSS", "/proc/self/status") or peak_rss_bytes()


def shared_frame_bytes(frame: Any) -> int:
    """The frame's memory counting each Python object once, however many cells refer to it.

    ``memory_usage(deep=True)`` adds the size of the object in every cell, but Arrow's
    conversion to pandas shares repeated strings and a scalar assigned to a column is one
    object, so for object columns this is the smaller, real figure.
    """
    total = int(frame.index.memory_usage(deep=True))
    for _, column in frame.items():
        if column.dtype != object:
            total += int(column.memory_usage(index=False, deep=True))
            continue
        values = column.to_numpy()
        unique = {id(v): v for v in values}
        total += values.nbytes + sum(sys.getsizeof(v) for v in unique.values())
    return total


def reset_peak_rss() -> bool:
    """Makes the peak RSS start again from the current RSS (Linux), so imports do not count."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def measure_once() -> dict[str, Any]:
    """Times one ``ingest_inferences`` of the benchmark day and measures its memory.

    The data directory is taken from ``FEEDBACK_PIPELINE_DATA_DIR``; only the call is timed. The
    peak RSS is reset just before the call where Linux allows it, so it is the call's own peak
    even when importing went higher; ``peak_rss_before_bytes`` keeps the peak of the imports.

    Returns:
        Wall seconds and the CPU seconds in the process and in the kernel (page faults of fresh
        memory land there), resident memory before and at peak, row counts and the valid
        frame's size.
    """
    settings = load_settings()
    gc.collect()
    peak_before = peak_rss_bytes()
    peak_reset = reset_peak_rss()
    rss_before = current_rss_bytes()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = ingest_inferences(settings, DAY)
    seconds = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_bytes()
    rows_in = int(result.files["rows_in"].fillna(0).sum())
    return {
        "seconds": seconds,
        "user_seconds": cpu.ru_utime - cpu_before.ru_utime,
        "system_seconds": cpu.ru_stime - cpu_before.ru_stime,
        "rss_before_bytes": rss_before,
        "peak_rss_before_bytes": peak_before,
        "peak_reset": peak_reset,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak - rss_before,
        "files": len(result.files),
        "rows_in": rows_in,
        "rows_valid": len(result.valid),
        "rows_quarantined": len(result.quarantine),
        "conserved": rows_in == len(result.valid) + len(result.quarantine),
        "valid_frame_bytes": int(result.valid.memory_usage(deep=True).sum()),
        "valid_frame_shared_bytes": shared_frame_bytes(result.valid),
        "top_reasons": result.top_reasons,
    }


def _meminfo_bytes(key: str, path: str = "/proc/meminfo") -> int | None:
    """A ``kB`` field of /proc/meminfo or /proc/<pid>/status, in bytes (None if unavailable)."""
    try:
        with open(path, encoding="ascii") as info:
            for line in info:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_watched(
    command: list[str], env: dict[str, str], reserve_bytes: int, echo: bool = False
) -> dict[str, Any]:
    """Runs a benchmark child and returns the figures it printed after ``RESULT_PREFIX``.

    While it runs, the machine's available memory is watched; should it fall below
    ``reserve_bytes`` the child is stopped, so that a size too large for the machine fails on
    its own instead of calling in the kernel's out-of-memory killer on other processes.

    Args:
        command: the child's command line.
        env: its environment.
        reserve_bytes: the available memory below which the child is stopped.
        echo: print the child's other output lines as they come (its progress).

    Returns:
        The child's figures, or ``{"error": ...}`` if it failed or was stopped.
    """
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results: list[str] = []
    errors: list[str] = []

    def read(stream: IO[str], keep: list[str], show: bool) -> None:
        for line in stream:
            if line.startswith(RESULT_PREFIX) or not show:
                keep.append(line)
            else:
                print(f"  {line.rstrip()}", flush=True)

    assert child.stdout is not None and child.stderr is not None
    readers = [
        threading.Thread(target=read, args=(child.stdout, results, echo), daemon=True),
        threading.Thread(target=read, args=(child.stderr, errors, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    stopped, start = None, time.perf_counter()
    while child.poll() is None:
        available = _meminfo_bytes("MemAvailable")
        if stopped is None and available is not None and available < reserve_bytes:
            peak = _meminfo_bytes("VmHWM", f"/proc/{child.pid}/status") or 0
            child.kill()
            stopped = (
                f"stopped after {time.perf_counter() - start:.0f} s at a peak RSS of "
                f"{peak / GIB:.1f} GiB: the machine had less than {reserve_bytes / GIB:g} GiB "
                "available (--reserve-gib)"
            )
        time.sleep(0.1)
    for reader in readers:
        reader.join()
    if stopped:
        return {"error": stopped}
    found = [line for line in results if line.startswith(RESULT_PREFIX)]
    if child.returncode != 0 or not found:
        tail = "".join(errors[-5:]).strip()
        return {"error": f"exit status {child.returncode}: {tail}"}
    return json.loads(found[-1].removeprefix(RESULT_PREFIX))


def run_child(workdir: Path, reserve_bytes: int) -> dict[str, Any]:
    """Runs ``measure_once`` in a fresh interpreter with the data directory set to the workdir.

    Args:
        workdir: the benchmark's working directory, which holds the day.
        reserve_bytes: the available memory below which the child is stopped.

    Returns:
        The child's figures, or ``{"error": ...}`` if it failed or was stopped.
    """
    command = [sys.executable, "-m", "feedback_pipeline.bench.ingest", "--child"]
    command += ["--workdir", str(workdir)]
    return run_watched(command, {**os.environ, DATA_DIR_ENV: str(workdir)}, reserve_bytes)


# ---------------------------------------------------------------------------------------------
# Summary, table and JSON
# ---------------------------------------------------------------------------------------------


def _verdict(value: float | None, target: float | None) -> str | None:
    if value is None or target is None:
        return None
    return "PASS" if value <= target else "MISS"


def summarize(rows: int, written: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of one size's runs, judged against the targets.

    Args:
        rows: predictions in the day.
        written: what ``prepare_day`` wrote.
        runs: the figures of each repeat (failed ones carry ``error``).

    Returns:
        The size's summary, with every run's figures under ``runs``.
    """
    ok = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {
        "rows": rows,
        "files": len(written["files"]),
        "file_bytes": written.get("file_bytes"),
        "generation_seconds": written.get("generation_seconds"),
        "repeats": len(runs),
        "failed_repeats": len(runs) - len(ok),
        "runs": runs,
    }
    time_target = TIME_TARGETS.get(rows)
    summary["time_target_seconds"] = time_target
    summary["memory_target_ratio"] = MEMORY_TARGET_RATIO
    if not ok:
        return {**summary, "time_target": "FAIL", "memory_target": "FAIL"}

    def median(key: str) -> float:
        return statistics.median(r[key] for r in ok)

    seconds = [r["seconds"] for r in ok]
    increase_ratio = statistics.median(
        r["peak_increase_bytes"] / r["valid_frame_bytes"] for r in ok
    )
    summary |= {
        "median_seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
        "rows_per_second": rows / statistics.median(seconds),
        "median_peak_rss_bytes": median("peak_rss_bytes"),
        "median_peak_increase_bytes": median("peak_increase_bytes"),
        "median_rss_before_bytes": median("rss_before_bytes"),
        "median_valid_frame_bytes": median("valid_frame_bytes"),
        "median_valid_frame_shared_bytes": median("valid_frame_shared_bytes"),
        "peak_to_frame": statistics.median(
            r["peak_rss_bytes"] / r["valid_frame_bytes"] for r in ok
        ),
        "increase_to_frame": increase_ratio,
        "increase_to_shared_frame": statistics.median(
            r["peak_increase_bytes"] / r["valid_frame_shared_bytes"] for r in ok
        ),
        "rows_valid": ok[-1]["rows_valid"],
        "rows_quarantined": ok[-1]["rows_quarantined"],
        "conserved": all(r["conserved"] for r in ok),
        "top_reasons": ok[-1]["top_reasons"],
    }
    summary["time_target"] = _verdict(summary["median_seconds"], time_target)
    summary["memory_target"] = _verdict(increase_ratio, MEMORY_TARGET_RATIO)
    return summary


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as a text table, medians first, the targets and verdicts beside them."""
    header = (
        f"{'rows':>11} {'median s':>9} {'min s':>7} {'max s':>7} {'rows/s':>10} "
        f"{'peak GiB':>9} {'+GiB':>6} {'frame GiB':>9} {'peak/fr':>7} {'+/fr':>5} {'+/sh':>5} "
        f"{'valid':>11} {'quarant.':>8}  {'time target':<17} {'memory target':<16}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        time_target = r["time_target_seconds"]
        time_text = f"<= {time_target:g} s {r['time_target']}" if time_target else "(none)"
        if "median_seconds" not in r:
            error = r["runs"][-1]["error"]
            lines.append(f"{r['rows']:>11,} FAIL ({time_text}, memory target MISS): {error}")
            continue
        memory_text = f"+ <= {MEMORY_TARGET_RATIO:g}x {r['memory_target']}"
        lines.append(
            f"{r['rows']:>11,} {r['median_seconds']:>9.2f} {r['min_seconds']:>7.2f} "
            f"{r['max_seconds']:>7.2f} {r['rows_per_second']:>10,.0f} "
            f"{r['median_peak_rss_bytes'] / GIB:>9.2f} "
            f"{r['median_peak_increase_bytes'] / GIB:>6.2f} "
            f"{r['median_valid_frame_bytes'] / GIB:>9.2f} {r['peak_to_frame']:>7.2f} "
            f"{r['increase_to_frame']:>5.2f} {r['increase_to_shared_frame']:>5.2f} "
            f"{r['rows_valid']:>11,} {r['rows_quarantined']:>8,}  "
            f"{time_text:<17} {memory_text:<16}"
        )
    lines += [
        "",
        "Medians of the repeats, each in a fresh process. peak GiB: peak RSS of the process",
        "during the call; +GiB: its increase over the RSS just before the call; frame GiB: the",
        "valid frame's memory_usage(deep=True); peak/fr and +/fr: those two over the frame size.",
        "The memory target is judged on +/fr, so the ~0.15 GiB of imports does not count.",
        "+/sh: +GiB over the frame counting each shared Python object once (deep=True counts a",
        "string shared by a million cells a million times), the frame's real footprint.",
    ]
    return "\n".join(lines)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the figures depend on besides the code: CPU, memory, Python and library versions."""
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu_model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")),
                None,
            )
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_total_bytes": memory,
        "python": platform.python_version(),
        "packages": {
            p: _version(p) for p in ("feedback_pipeline", "pandas", "pandera", "pyarrow", "numpy")
        },
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_pipeline.bench.ingest",
        description="Benchmarks read + validate + quarantine of one day of inference logs.",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="rows per day to benchmark"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON figures")
    parser.add_argument(
        "--workdir", type=Path, help="where to write the landing files (default: a temporary dir)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep a day already written in --workdir if it fits"
    )
    parser.add_argument("--rows-per-file", type=int, default=1_000_000, help="rows per part")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated traffic")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        default=2.0,
        help="stop a run when the machine has less memory than this available (default 2)",
    )
    parser.add_argument("--label", help="free text stored in the JSON, such as a commit id")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rows_per_file < 1 or min(args.sizes) < 1:
        parser.error("--sizes, --repeats and --rows-per-file must be positive")
    if args.child and args.workdir is None:
        parser.error("--child needs --workdir")
    return args


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Writes and benchmarks every size in the workdir; returns the report."""
    os.environ[DATA_DIR_ENV] = str(workdir)
    settings = load_settings()
    results = []
    for rows in args.sizes:
        print(f"{rows:,} rows:", flush=True)
        written = prepare_day(settings, workdir, rows, args.rows_per_file, args.seed, args.reuse)
        runs = []
        for repeat in range(args.repeats):
            run = run_child(workdir, int(args.reserve_gib * GIB))
            runs.append(run)
            if "error" in run:
                print(f"  run {repeat + 1}: failed: {run['error']}", flush=True)
                break  # the next repeat would fail the same way (most often: out of memory)
            print(
                f"  run {repeat + 1}: {run['seconds']:.2f} s (CPU {run['user_seconds']:.2f} s "
                f"user, {run['system_seconds']:.2f} s system), peak RSS "
                f"{run['peak_rss_bytes'] / GIB:.2f} GiB "
                f"(+{run['peak_increase_bytes'] / GIB:.2f}), valid {run['rows_valid']:,}, "
                f"quarantined {run['rows_quarantined']:,}",
                flush=True,
            )
        results.append(summarize(rows, written, runs))
    return {
        "benchmark": "ingest_inferences: read + validate + quarantine of one day",
        "label": args.label,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": {
            "day": str(DAY),
            "settings": str(settings_path()),
            "repeats": args.repeats,
            "rows_per_file": args.rows_per_file,
            "seed": args.seed,
            "format": "parquet",
            "reserve_gib": args.reserve_gib,
        },
        "targets": {
            "seconds": {str(k): v for k, v in TIME_TARGETS.items()},
            "peak_increase_to_valid_frame": MEMORY_TARGET_RATIO,
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with ``--child``, one timed run) and reports it."""
    args = parse_args(argv)
    if args.child:
        os.environ[DATA_DIR_ENV] = str(args.workdir.resolve())
        print(RESULT_PREFIX + json.dumps(measure_once()), flush=True)
        return 0
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-")) if temporary else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = benchmark(args, workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(format_table(report["results"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    failed = any(r["failed_repeats"] for r in report["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
