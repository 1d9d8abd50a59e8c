"""Benchmark: attribute one day of feedback, label its predictions and compute its metrics.

For each size N a day of N predictions and its feedback (about 0.85 N events: by prediction id,
by entity only, late ones and orphans, on a Zipf-skewed entity column) are built in memory by
``feedback_pipeline.bench.synthetic``; building them is not timed. The shipped settings
(``default_settings_path()``) are used. Five stages are then timed with ``time.perf_counter``,
each ``--repeats`` times, and their median, min and max quoted:

1. ``attribute``: ``attribute_feedback(feedback, predictions, settings)``;
2. ``label``: ``label_predictions(predictions, attributed, settings, as_of)`` with ``as_of``
   2026-10-20 UTC, when every window of the day has passed;
3. ``join``: the two together (per repeat, the sum of 1 and 2);
4. ``metrics``: ``performance_metrics(labeled, settings, "final")``;
5. ``baseline``: a plain polars as-of join of every feedback event on the predictions by entity,
   the conversion from pandas and the sorts included: the least any attribution could cost.

Each size runs in a fresh Python process, so that the memory one size leaves behind does not
count for the next. Memory is the peak resident set size during a stage over the resident size
just before it (the peak is reset before each stage where Linux allows it, and memory freed
earlier is handed back first); for ``join`` it is counted from the start of ``attribute``, so
the attributed events held between the two count. It is quoted in MiB and in bytes per
prediction row, so that whether memory grows linearly in rows, skew notwithstanding, can be read
across sizes.

polars' allocator keeps freed memory for a while and a later stage reuses it unseen, so the
memory quoted comes from one more process per size (one repeat, not timed) in which polars
returns memory as soon as it is freed (``_RJEM_MALLOC_CONF``), which would slow the timed runs;
``--no-memory-run`` skips it and quotes the timed runs' own, lower bound, figures. Medians and
memory are printed with the targets, and everything is written as JSON with the machine it was
measured on::

    python -m feedback_pipeline.bench.attribution                     # 1M and 10M rows, 5 repeats
    python -m feedback_pipeline.bench.attribution --sizes 1000000 --repeats 3

A size that would exhaust the machine's memory is stopped (``--reserve-gib``) and reported as
failed. One size can be profiled in-process (its progress and figures go to stdout)::

    python -m cProfile -s cumtime -m feedback_pipeline.bench.attribution --child --size 1000000
"""

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from feedback_pipeline.bench import synthetic
from feedback_pipeline.bench.ingest import (
    GIB,
    RESULT_PREFIX,
    _verdict,
    _version,
    current_rss_bytes,
    machine_info,
    peak_rss_bytes,
    reset_peak_rss,
    run_watched,
)
from feedback_pipeline.lib import memory
from feedback_pipeline.lib.attribution import attribute_feedback, label_predictions
from feedback_pipeline.lib.metrics import performance_metrics
from feedback_pipeline.lib.settings import default_settings_path, load_settings

AS_OF = pd.Timestamp("2026-10-20", tz="UTC")
DEFAULT_SIZES = [1_000_000, 10_000_000]
DEFAULT_OUT = "data/bench/attribution.json"
STAGES = ("attribute", "label", "join", "metrics", "baseline")
# Targets: seconds of the join (attribute + label) and of the metrics of a day of N predictions;
# the join's median over the baseline's at the same size; the join's median at 10M over 1M.
JOIN_TARGETS = {1_000_000: 0.6, 10_000_000: 6.0}
METRICS_TARGETS = {1_000_000: 2.0}
BASELINE_RATIO_TARGET = 2.0
LINEAR_SIZES = (1_000_000, 10_000_000)
LINEAR_TARGET = 10.0
MIB = 2**20
# polars' jemalloc returns freed pages at once under this setting (the memory run only).
POLARS_ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
RETURN_MEMORY = "dirty_decay_ms:0,muzzy_decay_ms:0"
PACKAGES = ("feedback_pipeline", "pandas", "polars", "numpy", "scikit-learn", "pyarrow")


# ---------------------------------------------------------------------------------------------
# One size (in its own process)
# ---------------------------------------------------------------------------------------------


def baseline_asof(feedback: pd.DataFrame, predictions: pd.DataFrame) -> pl.DataFrame:
    """Every event's latest prediction of its entity at or before it: a plain polars as-of join.

    Both sides are sorted by time as a whole, which leaves them sorted within each entity too;
    polars warns that it cannot check that when ``by`` is given, and the warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")
        return (
            pl.from_pandas(feedback[["feedback_id", "entity_id", "timestamp"]])
            .sort("timestamp")
            .join_asof(
                pl.from_pandas(predictions[["prediction_id", "entity_id", "timestamp"]]).sort(
                    "timestamp"
                ),
                on="timestamp",
                by="entity_id",
                strategy="backward",
            )
        )


def release_memory() -> None:
    """Hands memory that is free but kept by Python, Arrow and glibc back to the system.

    So that a stage's peak increase is not hidden by memory an earlier stage freed. polars' own
    allocator cannot be asked from here; ``--return-memory`` makes it return memory as it goes.
    """
    gc.collect()
    memory.release_unused()


def _timed(call: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """Runs ``call`` once; its wall seconds, resident memory before and peak increase, result."""
    release_memory()
    peak_reset = reset_peak_rss()
    rss_before = current_rss_bytes()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    figures = {
        "seconds": seconds,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak - rss_before,
        "peak_reset": peak_reset,
    }
    return figures, result


def _counts(column: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in column.value_counts(dropna=False).items()}


def measure_size(
    rows: int, repeats: int, seed: int = 7, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Builds one day of ``rows`` predictions and its feedback, then times every stage.

    Within a repeat the stages run in the order attribute, label, metrics, baseline, so that
    the join's first repeat starts from an allocator that none of the other stages has warmed.
    Results are dropped as soon as the next stage no longer needs them.

    Args:
        rows: predictions in the day.
        repeats: timed runs of each stage.
        seed: seed of the predictions; the feedback's is ``seed + 1``.
        log: where progress lines go (none by default).

    Returns:
        The figures of every repeat per stage under ``runs``, the data's size under ``data`` and
        the row counts that show nothing was lost under ``conservation``.
    """

    def say(text: str) -> None:
        if log is not None:
            log(text)

    settings = load_settings(default_settings_path())
    say(f"building {rows:,} predictions and their feedback ...")
    start = time.perf_counter()
    preds = synthetic.predictions(rows, seed)
    feedback = synthetic.feedback(preds, seed + 1)
    generation_seconds = time.perf_counter() - start
    top_entity = preds["entity_id"].value_counts()
    data = {
        "predictions": len(preds),
        "feedback": len(feedback),
        "entities": len(top_entity),
        "top_entity_share": float(top_entity.iloc[0] / len(preds)),
        "feedback_by_entity_only": int(feedback["prediction_id"].isna().sum()),
        "predictions_frame_bytes": int(preds.memory_usage(deep=True).sum()),
        "feedback_frame_bytes": int(feedback.memory_usage(deep=True).sum()),
        "generation_seconds": generation_seconds,
    }
    del top_entity
    gc.collect()
    data["rss_after_generation_bytes"] = current_rss_bytes()
    say(
        f"built {len(preds):,} predictions and {len(feedback):,} events in "
        f"{generation_seconds:.1f} s"
    )

    runs: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
    conservation: dict[str, Any] = {}
    for repeat in range(repeats):
        attribute, attributed = _timed(lambda: attribute_feedback(feedback, preds, settings))
        label, labeled = _timed(
            lambda attributed=attributed: label_predictions(preds, attributed, settings, AS_OF)
        )
        held = label["rss_before_bytes"] - attribute["rss_before_bytes"]
        join = {
            "seconds": attribute["seconds"] + label["seconds"],
            "rss_before_bytes": attribute["rss_before_bytes"],
            "peak_increase_bytes": max(
                attribute["peak_increase_bytes"], held + label["peak_increase_bytes"]
            ),
            "peak_reset": attribute["peak_reset"] and label["peak_reset"],
        }
        if repeat == 0:
            conservation |= {
                "feedback_rows": len(feedback),
                "attributed_rows": len(attributed),
                "status_missing": int(attributed["status"].isna().sum()),
                "status_counts": _counts(attributed["status"]),
                "match_counts": _counts(attributed["match"]),
                "prediction_rows": len(preds),
                "labeled_rows": len(labeled),
                "label_status_counts": _counts(labeled["label_status"]),
            }
        del attributed
        metrics, table = _timed(
            lambda labeled=labeled: performance_metrics(labeled, settings, "final")
        )
        if repeat == 0:
            conservation["metrics_slices"] = len(table)
        del labeled, table
        baseline, joined = _timed(lambda: baseline_asof(feedback, preds))
        if repeat == 0:
            conservation["baseline_rows"] = len(joined)
            conservation["baseline_matched"] = int(
                joined.get_column("prediction_id").is_not_null().sum()
            )
        del joined
        for stage, figures in zip(STAGES, (attribute, label, join, metrics, baseline), strict=True):
            runs[stage].append(figures)
        say(
            f"repeat {repeat + 1}/{repeats}: "
            + ", ".join(f"{s} {runs[s][-1]['seconds']:.3f} s" for s in STAGES)
        )
    conservation["conserved"] = (
        conservation["attributed_rows"] == conservation["feedback_rows"]
        and conservation["status_missing"] == 0
        and sum(conservation["status_counts"].values()) == conservation["feedback_rows"]
        and conservation["labeled_rows"] == conservation["prediction_rows"]
        and conservation["baseline_rows"] == conservation["feedback_rows"]
    )
    return {
        "rows": rows,
        "repeats": repeats,
        "seed": seed,
        "polars_threads": pl.thread_pool_size(),
        "polars_allocator_conf": os.environ.get(POLARS_ALLOCATOR_ENV),
        "data": data,
        "conservation": conservation,
        "runs": runs,
    }


def run_child(
    rows: int, repeats: int, seed: int, reserve_bytes: int, return_memory: bool = False
) -> dict[str, Any]:
    """Runs ``measure_size`` in a fresh interpreter, echoing its progress.

    While it runs, the machine's available memory is watched; should it fall below
    ``reserve_bytes`` the child is stopped, so that a size too large for the machine fails on
    its own instead of calling in the kernel's out-of-memory killer on other processes.

    Args:
        rows: predictions in the day.
        repeats: timed runs of each stage.
        seed: seed of the synthetic day.
        reserve_bytes: the available memory below which the child is stopped.
        return_memory: make polars' allocator return freed memory at once (slower).

    Returns:
        The child's figures, or ``{"error": ...}`` if it failed or was stopped.
    """
    command = [sys.executable, "-m", "feedback_pipeline.bench.attribution", "--child"]
    command += ["--size", str(rows), "--repeats", str(repeats), "--seed", str(seed)]
    env = dict(os.environ)
    if return_memory:
        env[POLARS_ALLOCATOR_ENV] = RETURN_MEMORY
    return run_watched(command, env, reserve_bytes, echo=True)


# ---------------------------------------------------------------------------------------------
# Summary, table and JSON
# ---------------------------------------------------------------------------------------------


def _increases(runs: list[dict[str, Any]]) -> list[int]:
    # The peak and the RSS before come from two counters; a stage that needs no new memory can
    # show a few pages less than nothing.
    return [max(r["peak_increase_bytes"], 0) for r in runs]


def _stage_summary(
    rows: int, runs: list[dict[str, Any]], memory_runs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    timed = _increases(runs)
    quoted = _increases(memory_runs) if memory_runs else timed
    median = statistics.median(seconds)
    return {
        "median_seconds": median,
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
        "rows_per_second": rows / median if median > 0 else None,
        "peak_increase_bytes": max(quoted),
        "bytes_per_row": max(quoted) / rows,
        "timed_runs_max_peak_increase_bytes": max(timed),
        "timed_runs_median_peak_increase_bytes": statistics.median(timed),
    }


def summarize(
    rows: int, measured: dict[str, Any], memory: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One size's medians per stage, judged against the targets.

    Args:
        rows: predictions in the day.
        measured: what ``measure_size`` returned for the timed runs (or ``{"error": ...}``).
        memory: what it returned for the memory run, if there was one (or ``{"error": ...}``).

    Returns:
        The size's summary with a ``stages`` entry per stage and the verdicts under ``targets``.
        Its memory figures come from the memory run where that succeeded, else from the timed
        runs (the largest of the repeats); ``memory_source`` says which.
    """
    targets = {
        "join_seconds": JOIN_TARGETS.get(rows),
        "join_to_baseline": BASELINE_RATIO_TARGET,
        "metrics_seconds": METRICS_TARGETS.get(rows),
    }
    if "error" in measured:
        failed = {k: f"<= {v:g} FAIL" for k, v in targets.items() if v is not None}
        return {"rows": rows, "error": measured["error"], "targets": failed}
    memory_runs = memory["runs"] if memory is not None and "error" not in memory else None
    stages = {
        stage: _stage_summary(
            rows, measured["runs"][stage], memory_runs[stage] if memory_runs else None
        )
        for stage in STAGES
    }
    join = stages["join"]["median_seconds"]
    ratio = join / stages["baseline"]["median_seconds"]
    verdicts = {
        "join_seconds": _verdict(join, targets["join_seconds"]),
        "join_to_baseline": _verdict(ratio, BASELINE_RATIO_TARGET),
        "metrics_seconds": _verdict(
            stages["metrics"]["median_seconds"], targets["metrics_seconds"]
        ),
    }
    return {
        "rows": rows,
        "feedback_rows": measured["data"]["feedback"],
        "stages": stages,
        "join_to_baseline": ratio,
        "targets": {k: {"target": targets[k], "verdict": v} for k, v in verdicts.items()},
        "memory_source": "memory run" if memory_runs else "timed runs",
        "memory_run": memory,
        **measured,
    }


def linearity(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The join's median at 10M over 1M (at most 10 if it is linear), and the same for memory."""
    small, large = LINEAR_SIZES
    by_rows = {r["rows"]: r for r in results if "stages" in r}
    out: dict[str, Any] = {"sizes": list(LINEAR_SIZES), "target": LINEAR_TARGET}
    if small not in by_rows or large not in by_rows:
        return {**out, "ratio": None, "verdict": None}
    join_small, join_large = by_rows[small]["stages"]["join"], by_rows[large]["stages"]["join"]
    ratio = join_large["median_seconds"] / join_small["median_seconds"]
    return {
        **out,
        "ratio": ratio,
        "verdict": _verdict(ratio, LINEAR_TARGET),
        "bytes_per_row_ratio": join_large["bytes_per_row"] / join_small["bytes_per_row"],
    }


def _target_text(result: dict[str, Any], stage: str) -> str:
    targets = result["targets"]
    parts = []
    if stage == "join":
        seconds = targets["join_seconds"]
        if seconds["target"] is not None:
            parts.append(f"<= {seconds['target']:g} s {seconds['verdict']}")
        baseline = targets["join_to_baseline"]
        parts.append(
            f"<= {baseline['target']:g}x baseline ({result['join_to_baseline']:.1f}x) "
            f"{baseline['verdict']}"
        )
    elif stage == "metrics" and targets["metrics_seconds"]["target"] is not None:
        metrics = targets["metrics_seconds"]
        parts.append(f"<= {metrics['target']:g} s {metrics['verdict']}")
    return "; ".join(parts)


def format_table(results: list[dict[str, Any]], linear: dict[str, Any]) -> str:
    """The results as a text table, medians first, the targets and verdicts beside them."""
    header = (
        f"{'rows':>11} {'stage':<9} {'median s':>9} {'min s':>7} {'max s':>7} {'rows/s':>11} "
        f"{'peak MiB':>9} {'B/row':>6}  target"
    )
    lines = [header, "-" * (len(header) + 40)]
    for r in results:
        if "stages" not in r:
            failed = ", ".join(f"{k} {v}" for k, v in r["targets"].items())
            lines.append(f"{r['rows']:>11,} FAIL ({failed}): {r['error']}")
            continue
        for stage in STAGES:
            s = r["stages"][stage]
            rate = f"{s['rows_per_second']:>11,.0f}" if s["rows_per_second"] else f"{'-':>11}"
            lines.append(
                f"{r['rows']:>11,} {stage:<9} {s['median_seconds']:>9.3f} "
                f"{s['min_seconds']:>7.3f} {s['max_seconds']:>7.3f} {rate} "
                f"{s['peak_increase_bytes'] / MIB:>9.1f} {s['bytes_per_row']:>6.0f}  "
                f"{_target_text(r, stage)}"
            )
        conservation = r["conservation"]
        lines.append(
            f"{'':>11} {'':<9} {r['feedback_rows']:,} events: "
            + ", ".join(f"{k} {v:,}" for k, v in conservation["status_counts"].items())
            + f"; top entity {r['data']['top_entity_share']:.1%} of predictions; "
            + ("conserved" if conservation["conserved"] else "NOT CONSERVED")
            + f"; memory from the {r['memory_source']}"
        )
    small, large = (f"{n // 1_000_000}M" for n in LINEAR_SIZES)
    if linear["ratio"] is None:
        lines.append(f"\nlinear: not judged (needs both {small} and {large} to run)")
    else:
        lines.append(
            f"\nlinear: join median {large} / {small} = {linear['ratio']:.2f} "
            f"(<= {LINEAR_TARGET:g} {linear['verdict']}); join bytes/row {large} / {small} = "
            f"{linear['bytes_per_row_ratio']:.2f}"
        )
    lines += [
        "",
        "Medians of the repeats; each size in a fresh process. join = attribute + label. rows/s",
        "counts prediction rows for every stage. peak MiB: peak RSS during the stage minus the",
        "RSS just before it (for join, from the start of attribute), measured in the memory run",
        "(one untimed repeat with polars returning freed memory at once); B/row: that over the",
        "prediction rows. Without the memory run (--no-memory-run, or if it failed) the largest",
        "of the timed repeats is quoted instead: a lower bound, as polars' allocator keeps freed",
        "memory and a later stage reuses it unseen.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_pipeline.bench.attribution",
        description="Benchmarks attribution, labeling and metrics of one day of feedback.",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="predictions per day"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each stage")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON figures")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic day")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        default=2.0,
        help="stop a size when the machine has less memory than this available (default 2)",
    )
    parser.add_argument(
        "--memory-run",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure memory in one more, untimed, run per size with polars returning freed "
        "memory at once (default: on)",
    )
    parser.add_argument("--label", help="free text stored in the JSON, such as a commit id")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.sizes) < 1:
        parser.error("--sizes and --repeats must be positive")
    if args.child and (args.size is None or args.size < 1):
        parser.error("--child needs a positive --size")
    return args


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measures every size in its own process; returns the report."""
    results = []
    for rows in args.sizes:
        print(f"{rows:,} predictions:", flush=True)
        reserve = int(args.reserve_gib * GIB)
        measured = run_child(rows, args.repeats, args.seed, reserve)
        memory = None
        if "error" in measured:
            print(f"  failed: {measured['error']}", flush=True)
        elif args.memory_run:
            print("  memory run (one repeat, not timed):", flush=True)
            memory = run_child(rows, 1, args.seed, reserve, return_memory=True)
            if "error" in memory:
                print(f"  memory run failed: {memory['error']}", flush=True)
        results.append(summarize(rows, measured, memory))
    machine = machine_info()
    machine["packages"] = {p: _version(p) for p in PACKAGES}
    return {
        "benchmark": "attribute_feedback + label_predictions + performance_metrics of one day",
        "label": args.label,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "parameters": {
            "day": str(synthetic.DAY.date()),
            "as_of": AS_OF.isoformat(),
            "settings": str(default_settings_path()),
            "repeats": args.repeats,
            "seed": args.seed,
            "reserve_gib": args.reserve_gib,
            "memory_run": args.memory_run,
            "memory_run_allocator": {POLARS_ALLOCATOR_ENV: RETURN_MEMORY},
            "stages": list(STAGES),
        },
        "targets": {
            "join_seconds": {str(k): v for k, v in JOIN_TARGETS.items()},
            "join_to_baseline": BASELINE_RATIO_TARGET,
            "metrics_seconds": {str(k): v for k, v in METRICS_TARGETS.items()},
            "linear_join_ratio": LINEAR_TARGET,
        },
        "results": results,
        "linear": linearity(results),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with ``--child``, one size in-process) and reports it."""
    args = parse_args(argv)
    if args.child:
        measured = measure_size(
            args.size, args.repeats, args.seed, log=lambda t: print(t, flush=True)
        )
        print(RESULT_PREFIX + json.dumps(measured), flush=True)
        return 0
    report = benchmark(args)
    print()
    print(format_table(report["results"], report["linear"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    failed = any("error" in r or not r["conservation"]["conserved"] for r in report["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
