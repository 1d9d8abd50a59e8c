"""Benchmark: the day's monitoring work done by NannyML, by a naive pandas script, and alone.

The nightly benchmark (``bench/nightly.py``) runs the pipeline's nightly job on one day of a
workdir and then calls ``run_comparison`` for each tool on the same workdir, machine and run, so
that ratios can be quoted. Each tool does what the pipeline does for the day: realized accuracy,
precision, recall, F1 and ROC AUC per model version x segment value (``all`` included), and the
drift of the features, score and latency per model version against the pipeline's
``reference_data``.

- ``nannyml``: NannyML 0.13 on the pipeline's own ``labeled_predictions`` (so it does not join),
  CBPE estimates of every slice besides, as the pipeline estimates them; stages ``load``,
  ``realized``, ``estimated``, ``drift`` (see ``nannyml_child.py``). NannyML is never a
  dependency of the project: on first use a venv is made at ``data/bench/nannyml-venv`` from
  ``nannyml-requirements.lock`` (hash-checked, Python 3.11), and made again when the lock
  changes.
- ``pipeline``: the pipeline's own share of that work, outside the night and with nothing
  beside it, timed as NannyML's is: ``load`` (the labeled day's metric columns, the reference
  and each version's sampled rows for the drift), ``metrics`` (realized and estimated, the
  metrics step's work) and ``drift`` (each version's drift report drawn from those rows). In
  the night the same work shares the machine with the run; the benchmark sets NannyML against
  this (see ``run_pipeline``).
- ``naive``: what a team without the project would write, in the project's venv: ``read`` the
  landing files with pandas, ``join`` feedback to predictions by merging, then filtering,
  ``metrics`` with scikit-learn per slice, ``drift`` with Evidently's ``DataDriftPreset`` on all
  the day's rows of each version (no sampling).

Each repeat runs in a fresh process; each stage is timed with ``time.perf_counter`` and its peak
resident memory measured from a reset (Linux), so imports count in neither. A process that would
exhaust the machine's memory is stopped (``--reserve-gib``) and reported as failed, with the
stages it finished. ``monitoring_median_seconds`` is the median of the whole work (every stage).
Each tool's realized accuracy and ROC AUC (and NannyML's CBPE estimates) per model version, and
over every slice both measured, are compared with the pipeline's ``performance_metrics`` of the
day::

    python -m feedback_pipeline.bench.compare --tool pipeline nannyml naive \
        --workdir DIR --day 2026-10-05
"""

import argparse
import datetime as dt
import gc
import hashlib
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn import metrics as skm

from feedback_pipeline.bench.ingest import (
    GIB,
    RESULT_PREFIX,
    current_rss_bytes,
    machine_info,
    peak_rss_bytes,
    reset_peak_rss,
    run_watched,
)
from feedback_pipeline.lib import privacy, reports, storage
from feedback_pipeline.lib.estimation import ALL
from feedback_pipeline.lib.landing import FORMATS, file_format, landing_files
from feedback_pipeline.lib.settings import DATA_DIR_ENV, SETTINGS_ENV, Settings, load_settings

STAGES = {
    "pipeline": ("load", "metrics", "drift"),
    "nannyml": ("load", "realized", "estimated", "drift"),
    "naive": ("read", "join", "metrics", "drift"),
}
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NANNYML_VENV = REPO / "data" / "bench" / "nannyml-venv"
NANNYML_LOCK = HERE / "nannyml-requirements.lock"
NANNYML_CHILD = HERE / "nannyml_child.py"
STAMP = ".lock-sha256"
# The tool's numbers held against the pipeline's, on the overall segment of each model version.
AGREED = ("accuracy", "roc_auc", "estimated_accuracy", "estimated_roc_auc")
NAIVE_PACKAGES = ("pandas", "numpy", "scikit-learn", "evidently", "pyarrow")
PIPELINE_PACKAGES = ("pandas", "numpy", "scikit-learn", "evidently", "pyarrow", "polars")


# ---------------------------------------------------------------------------------------------
# What the tools are given
# ---------------------------------------------------------------------------------------------


def workdir_environment(workdir: Path) -> dict[str, str]:
    """The variables that point the settings at the workdir.

    Its data, and its settings file if it has one (the nightly benchmark writes one); without
    one, the settings file is whatever the caller's environment names.
    """
    pointed = {DATA_DIR_ENV: str(workdir)}
    if (workdir / "settings.yaml").exists():
        pointed[SETTINGS_ENV] = str(workdir / "settings.yaml")
    return pointed


@contextmanager
def data_dir(workdir: Path) -> Iterator[None]:
    """Points the settings at the workdir for the block, then restores the environment."""
    pointed = workdir_environment(workdir)
    before = {name: os.environ.get(name) for name in pointed}
    os.environ.update(pointed)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def describe_job(settings: Settings, day: str) -> dict[str, Any]:
    """Everything a tool's process needs, as plain JSON: paths, columns, windows and cutoff.

    The feedback files are those of the day and of the days its windows reach, the ones the
    pipeline's ``labeled_predictions`` of the day read.
    """
    # Imported here: the module brings Dagster and MLflow with it.
    from feedback_pipeline.defs.monitoring.reports import MIN_REFERENCE_ROWS

    cols, hidden = settings.inference_columns, privacy.personal(settings)
    warehouse = settings.resolve("warehouse")
    first = dt.date.fromisoformat(day)
    reach = [first + dt.timedelta(days=i) for i in range(settings.window_days + 1)]

    def files(root: str, days: list[dt.date]) -> list[str]:
        found = [p for d in days for p in landing_files(settings.resolve(root), d)]
        return [p for p in found if Path(p).suffix.lower() in FORMATS]

    return {
        "day": day,
        "all": ALL,
        "result_prefix": RESULT_PREFIX,
        "labeled_predictions": storage.day_files(
            storage.partition_path(warehouse, "labeled_predictions", day)
        ),
        "inference_log": storage.day_files(storage.partition_path(warehouse, "inference_log", day)),
        "performance_metrics": storage.partition_path(warehouse, "performance_metrics", day),
        "reference": f"{warehouse}/reference_data.parquet",
        "inference_files": files(settings.landing.inferences, [first]),
        "feedback_files": files(settings.landing.feedback, reach),
        "inference_names": {user: name for name, user in cols.source_names().items() if user},
        "feedback_names": {
            user: name for name, user in settings.feedback_columns.source_names().items()
        },
        "segments": cols.segments,
        "numeric": [c for c in [*cols.features, "score", "latency_ms"] if c not in hidden],
        "categorical": [c for c in [*cols.categorical_features, *cols.segments] if c not in hidden],
        "score_cutoff": settings.score_cutoff,
        "windows_s": {
            k.value: v.window.total_seconds() for k, v in settings.feedback_kinds.items()
        },
        "label_kinds": [k.value for k in settings.label_kinds],
        "min_reference_rows": MIN_REFERENCE_ROWS,
    }


def nannyml_python(venv: Path = NANNYML_VENV, lock: Path = NANNYML_LOCK) -> Path:
    """The NannyML venv's interpreter, the venv made (again) if missing or its lock changed.

    Args:
        venv: where the venv lives.
        lock: the hash-locked requirements it is installed from.

    Returns:
        The venv's ``python``.
    """
    python, stamp = venv / "bin" / "python", venv / STAMP
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"  installing NannyML into {venv} (once per lock) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    uv = Path(sys.executable).with_name("uv")
    uv_command = str(uv) if uv.exists() else shutil.which("uv") or "uv"
    install = [uv_command, "pip", "install", "--quiet", "--python", str(python), "--require-hashes"]
    subprocess.run([*install, "-r", str(lock)], check=True)
    stamp.write_text(digest + "\n")
    return python


# ---------------------------------------------------------------------------------------------
# The naive script, piece by piece
# ---------------------------------------------------------------------------------------------


def read_landing_files(paths: list[str], names: dict[str, str]) -> pd.DataFrame:
    """The files read with pandas and renamed to canonical names, as one frame.

    Timestamps are parsed file by file (CSV and JSON Lines hold them as text); what does not
    parse becomes NaT.
    """
    frames = []
    for path in paths:
        fmt = file_format(path)
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        elif fmt == "csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_json(path, lines=True)
        frame = frame.rename(columns=names)
        frame["timestamp"] = pd.to_datetime(
            frame["timestamp"], utc=True, errors="coerce", format="ISO8601"
        )
        frames.append(frame)
    if not frames:
        empty = pd.DataFrame(columns=list(names.values()))
        return empty.assign(timestamp=pd.to_datetime(empty["timestamp"], utc=True))
    return pd.concat(frames, ignore_index=True)


def clean_predictions(frame: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    """Numbers as numbers; rows without id, time or a score in [0, 1] dropped; ids made unique."""
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["prediction_id", "timestamp", "score"])
    return frame[frame["score"].between(0, 1)].drop_duplicates("prediction_id")


def clean_feedback(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as numbers; events without a time dropped; repeated event ids dropped."""
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame.dropna(subset=["timestamp"]).drop_duplicates("feedback_id")


def naive_join(
    predictions: pd.DataFrame,
    events: pd.DataFrame,
    windows: dict[str, pd.Timedelta],
    label_kinds: list[str],
) -> pd.DataFrame:
    """The predictions with a ``label`` column, by merging feedback onto them, then filtering.

    An event with a prediction id is merged on it; one with only an entity id is merged with
    every prediction of that entity. Either way a match counts if the prediction is at or before
    the event and within the kind's window, and of several the latest prediction is kept. A
    prediction's label is the latest 0 or 1 of its strongest label kind (the first of
    ``label_kinds``).

    Args:
        predictions: ``prediction_id``, ``entity_id``, ``timestamp`` and any other columns.
        events: ``feedback_id``, ``prediction_id``, ``entity_id``, ``timestamp``, ``kind``,
            ``value``.
        windows: the attribution window of each kind.
        label_kinds: the kinds that carry the class, strongest first.
    """
    keys = predictions[["prediction_id", "entity_id", "timestamp"]].rename(
        columns={"timestamp": "prediction_timestamp"}
    )
    needed = ["feedback_id", "prediction_id", "entity_id", "timestamp", "kind", "value"]
    events = events[needed].reset_index(drop=True).rename_axis("event").reset_index()
    named = events["prediction_id"].notna()
    direct = events[named].merge(keys.drop(columns="entity_id"), on="prediction_id")
    by_entity = (
        events[~named & events["entity_id"].notna()]
        .drop(columns="prediction_id")
        .merge(keys, on="entity_id")
    )
    matched = pd.concat([direct, by_entity], ignore_index=True)
    delay = matched["timestamp"] - matched["prediction_timestamp"]
    window = pd.to_timedelta(matched["kind"].map(windows))  # unknown kinds: NaT, never within
    matched = matched[(delay >= pd.Timedelta(0)) & (delay <= window)]
    attributed = matched.sort_values("prediction_timestamp").drop_duplicates("event", keep="last")
    strength = {kind: rank for rank, kind in enumerate(reversed(label_kinds))}
    labels = attributed[attributed["kind"].isin(list(strength)) & attributed["value"].isin([0, 1])]
    labels = labels.assign(strength=labels["kind"].map(strength))
    latest = labels.sort_values(["strength", "timestamp", "feedback_id"]).drop_duplicates(
        "prediction_id", keep="last"
    )
    found = latest[["prediction_id", "value"]].rename(columns={"value": "label"})
    return predictions.merge(found, on="prediction_id", how="left")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def naive_metrics(
    labeled: pd.DataFrame, segments: list[str], cutoff: float, everything: str = ALL
) -> dict[str, dict[str, Any]]:
    """scikit-learn's metrics of every model version x segment value slice, ``all`` included.

    Returns:
        ``{"<version>|<segment>": {"n_labeled", "accuracy", "precision", "recall", "f1",
        "roc_auc"}}``, segments written ``country=US``; ROC AUC is None on one class.
    """
    known = labeled[labeled["label"].notna()]
    out = {}
    versions = [(everything, known), *known.groupby("model_version", observed=True, sort=True)]
    for version, rows in versions:
        parts = [(everything, rows)]
        for column in segments:
            groups = rows.groupby(column, observed=True, sort=True)
            parts += [(f"{column}={value}", part) for value, part in groups]
        for segment, part in parts:
            truth = part["label"].astype(int)
            predicted = (part["score"] >= cutoff).astype(int)
            two_classes = truth.nunique() == 2
            out[f"{version}|{segment}"] = {
                "n_labeled": len(part),
                "accuracy": skm.accuracy_score(truth, predicted),
                "precision": skm.precision_score(truth, predicted),
                "recall": skm.recall_score(truth, predicted),
                "f1": skm.f1_score(truth, predicted),
                "roc_auc": skm.roc_auc_score(truth, part["score"]) if two_classes else None,
            }
    return out


def naive_drift(
    day: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    min_reference_rows: int,
) -> dict[str, dict[str, Any]]:
    """Evidently's ``DataDriftPreset`` on all of each version's rows against the reference.

    A version with fewer than ``min_reference_rows`` reference rows is compared with the whole
    reference, as the pipeline does.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    out = {}
    for version, current in day.groupby("model_version", observed=True, sort=True):
        own = reference[reference["model_version"].astype(str) == str(version)]
        against = own if len(own) >= min_reference_rows else reference
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(against[columns], data_definition=definition),
        )
        numbers = reports.drift_numbers(snapshot)
        out[str(version)] = {
            "columns": len(columns),
            "drifted_columns": numbers.get("drifted_columns"),
            "drift_share": numbers.get("drift_share"),
            "drifted_column_names": numbers.get("drifted_column_names"),
        }
    return out


# ---------------------------------------------------------------------------------------------
# One timed run of the naive script (in its own process)
# ---------------------------------------------------------------------------------------------


class StageClock:
    """Times each stage and measures its peak memory, appending each to a progress file."""

    def __init__(self, progress: str | None) -> None:
        self.progress = progress
        self.figures: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Runs the block as the stage ``name``."""
        gc.collect()
        reset_peak_rss()
        before = current_rss_bytes()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        peak = peak_rss_bytes()
        figures = {
            "seconds": seconds,
            "rss_before_bytes": before,
            "peak_rss_bytes": peak,
            "peak_increase_bytes": peak - before,
        }
        self.figures[name] = figures
        if self.progress:
            with open(self.progress, "a", encoding="utf-8") as progress:
                progress.write(json.dumps({"stage": name, **figures}) + "\n")
        print(f"{name}: {seconds:.2f} s, peak RSS {peak / GIB:.2f} GiB", flush=True)

    def run_figures(self, import_seconds: float, after_imports: int) -> dict[str, Any]:
        """The run's stages, its imports' seconds, and its peak over the process after them."""
        peak = max(s["peak_rss_bytes"] for s in self.figures.values())
        return {
            "stages": self.figures,
            "import_seconds": import_seconds,
            "rss_after_imports_bytes": after_imports,
            "peak_rss_bytes": peak,
            "peak_increase_bytes": peak - after_imports,
        }


def run_naive(job: dict[str, Any]) -> dict[str, Any]:
    """The naive script's four stages on the job; returns their figures and numbers."""
    start = time.perf_counter()
    for module in ("evidently.presets", "pyarrow.parquet"):  # imported before the clock starts
        importlib.import_module(module)
    import_seconds = time.perf_counter() - start
    windows = {kind: pd.Timedelta(seconds=s) for kind, s in job["windows_s"].items()}
    stages = StageClock(job.get("progress"))
    after_imports = current_rss_bytes()
    with stages("read"):
        predictions = read_landing_files(job["inference_files"], job["inference_names"])
        predictions = clean_predictions(predictions, job["numeric"])
        events = clean_feedback(read_landing_files(job["feedback_files"], job["feedback_names"]))
        reference = pd.read_parquet(job["reference"])
    with stages("join"):
        labeled = naive_join(predictions, events, windows, job["label_kinds"])
    with stages("metrics"):
        slices = naive_metrics(labeled, job["segments"], job["score_cutoff"], job["all"])
    with stages("drift"):
        drift = naive_drift(
            labeled, reference, job["numeric"], job["categorical"], job["min_reference_rows"]
        )
    overall = {
        key.split("|")[0]: {m: v for m, v in values.items() if m != "n_labeled"}
        for key, values in slices.items()
        if key.endswith(f"|{job['all']}")
    }
    return {
        **stages.run_figures(import_seconds, after_imports),
        "rows": {
            "predictions": len(labeled),
            "labeled": int(labeled["label"].notna().sum()),
            "events": len(events),
            "reference": len(reference),
        },
        "overall": overall,
        "slices": slices,
        "drift": drift,
        "packages": {p: metadata.version(p) for p in NAIVE_PACKAGES},
    }


def run_pipeline(job: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's own monitoring work on the job's day, alone: its three stages' figures.

    What the night does of NannyML's share of the work, with nothing beside it, timed as
    NannyML's is: in the night the metrics step shares the machine with the run, and the drift
    is drawn early, at a lower priority, while attribution and labeling go on.

    - ``load`` reads what the metrics step reads of the labeled day, the reference, and each
      version's sampled rows for the drift (NannyML's ``load`` reads its rows too);
    - ``metrics`` is the metrics step's work between reading and writing: realized and estimated
      metrics of every slice (``measure_day``), the slices measured side by side in one process
      per core, as the step measures them;
    - ``drift`` draws each version's drift report from those rows, as the reports step draws them
      when none were drawn early: the versions side by side in ``settings.reports.workers``
      processes (default: one per core).

    Imports, and Evidently's first report (``reports.warm_up``), come before the clock, as the
    night's helper has them done before the drift begins.
    """
    start = time.perf_counter()
    # Imported here: they bring Dagster, Evidently and MLflow with them.
    from feedback_pipeline.defs.monitoring.assets import METRICS_COLUMNS, measure_day
    from feedback_pipeline.defs.monitoring.reports import drift_inputs
    from feedback_pipeline.lib.parallel import default_workers, forked_map

    reports.warm_up()
    import_seconds = time.perf_counter() - start
    settings, day = load_settings(), job["day"]
    warehouse = settings.resolve("warehouse")
    workers = settings.reports.workers or default_workers()
    read = list(dict.fromkeys([*METRICS_COLUMNS, *settings.inference_columns.segments]))
    stages = StageClock(job.get("progress"))
    after_imports = current_rss_bytes()
    with stages("load"):
        labeled_path = storage.partition_path(warehouse, "labeled_predictions", day)
        labeled = storage.read_parquet(labeled_path, read, only_present=True)
        reference = storage.read_parquet(job["reference"])
        inputs = drift_inputs(settings, day, warehouse, reference)
    with stages("metrics"):
        table, _, _ = measure_day(labeled, reference, settings, day)
    with stages("drift"):
        made = forked_map(reports.draw_drift, [job for _, job in inputs.values()], workers)
        drawn = dict(zip(inputs, made, strict=True))
    overall = table[table["segment"] == ALL].set_index("model_version")
    return {
        **stages.run_figures(import_seconds, after_imports),
        "rows": {
            "predictions": len(labeled),
            "labeled": int(overall["n_labeled"].get(ALL, 0)),
            "reference": len(reference),
        },
        "overall": {
            str(version): {m: _finite(row[m]) for m in AGREED if m in row}
            for version, row in overall.iterrows()
        },
        "slices": {
            f"{r['model_version']}|{r['segment']}": {
                m: _finite(r[m]) for m in ("accuracy", "roc_auc", "n_labeled")
            }
            for r in table.to_dict(orient="records")
        },
        "drift": {
            version: {
                "columns": len(report.numbers.get("column_drift_scores") or {}),
                "drifted_columns": report.numbers.get("drifted_columns"),
                "drift_share": report.numbers.get("drift_share"),
                "drifted_column_names": report.numbers.get("drifted_column_names"),
                "column_drift_scores": report.numbers.get("column_drift_scores"),
            }
            for version, report in drawn.items()
        },
        "workers": workers,
        "packages": {p: metadata.version(p) for p in PIPELINE_PACKAGES},
    }


# ---------------------------------------------------------------------------------------------
# Running the repeats, agreement and summary
# ---------------------------------------------------------------------------------------------


def agreement(
    tool: dict[str, dict[str, Any]],
    pipeline: pd.DataFrame,
    tool_labeled: int | None,
    everything: str = ALL,
    slices: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The tool's numbers per model version against the pipeline's, on the overall segment.

    Args:
        tool: per model version (``all`` included), the tool's metrics by name.
        pipeline: the pipeline's ``performance_metrics`` of the day.
        tool_labeled: predictions the tool had a label for.
        everything: the marker of all versions and all segments.
        slices: the tool's metrics of every slice it measured, keyed ``version|segment``.

    Returns:
        ``max_abs_difference`` per metric compared, the figures ``by_version``, the labeled
        counts of the tool and of the pipeline (reported, not judged: the naive label rules are
        simpler than the pipeline's), and with ``slices`` the largest difference per metric over
        every slice both measured (``slices_max_abs_difference``) and how many were compared.
    """
    overall = pipeline[pipeline["segment"] == everything].set_index("model_version")
    worst: dict[str, float] = {}
    by_version: dict[str, dict[str, Any]] = {}
    for version, numbers in sorted(tool.items()):
        if version not in overall.index:
            continue
        for metric in AGREED:
            ours = _finite(numbers.get(metric))
            theirs = _finite(overall.at[version, metric]) if metric in overall else None
            if ours is None or theirs is None:
                continue
            difference = abs(ours - theirs)
            by_version.setdefault(version, {})[metric] = {
                "tool": ours,
                "pipeline": theirs,
                "abs_difference": difference,
            }
            worst[metric] = max(worst.get(metric, 0.0), difference)
    labeled = _finite(overall.at[everything, "n_labeled"]) if everything in overall.index else None
    found = {
        "max_abs_difference": worst,
        "by_version": by_version,
        "labeled": {"tool": tool_labeled, "pipeline": None if labeled is None else int(labeled)},
    }
    return found if slices is None else found | _slices_agreement(slices, pipeline)


def _slices_agreement(slices: dict[str, dict[str, Any]], pipeline: pd.DataFrame) -> dict[str, Any]:
    """The largest difference per metric of ``AGREED`` over the slices both measured."""
    ours = {(r["model_version"], r["segment"]): r for r in pipeline.to_dict(orient="records")}
    worst: dict[str, float] = {}
    compared = 0
    for key, numbers in slices.items():
        version, _, segment = key.partition("|")
        row = ours.get((version, segment))
        if row is None:
            continue
        compared += 1
        for metric in AGREED:
            theirs = _finite(numbers.get(metric))
            mine = _finite(row.get(metric))
            if theirs is not None and mine is not None:
                worst[metric] = max(worst.get(metric, 0.0), abs(theirs - mine))
    return {"slices_max_abs_difference": worst, "slices_compared": compared}


def _stage_summary(figures: list[dict[str, float]]) -> dict[str, Any]:
    seconds = [f["seconds"] for f in figures]
    return {
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "peak_rss_bytes": statistics.median(f["peak_rss_bytes"] for f in figures),
        "peak_increase_bytes": statistics.median(f["peak_increase_bytes"] for f in figures),
    }


def summarize(tool: str, runs: list[dict[str, Any]], pipeline: pd.DataFrame | None) -> dict:
    """Medians of the runs per stage and in total, the agreement, and what failed.

    Args:
        tool: ``pipeline``, ``nannyml`` or ``naive``.
        runs: each repeat's figures (a failed one carries ``error`` and ``completed_stages``).
        pipeline: the pipeline's ``performance_metrics`` of the day, if there are any.
    """
    ok = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {
        "tool": tool,
        "repeats": len(runs),
        "failed_repeats": len(runs) - len(ok),
    }
    if not ok:
        return {**summary, "error": runs[-1]["error"], "runs": runs}
    stages = STAGES[tool]
    totals = [sum(r["stages"][name]["seconds"] for name in stages) for r in ok]
    last = ok[-1]
    summary |= {
        "stages": {name: _stage_summary([r["stages"][name] for r in ok]) for name in stages},
        # Every stage: what the pipeline's nightly monitoring is compared with.
        "monitoring_median_seconds": statistics.median(totals),
        "total": {
            "seconds": totals,
            "median_seconds": statistics.median(totals),
            "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in ok),
            "peak_increase_bytes": statistics.median(r["peak_increase_bytes"] for r in ok),
            "import_seconds": statistics.median(r["import_seconds"] for r in ok),
        },
        "rows": last["rows"],
        "packages": last["packages"],
        "agreement": None
        if pipeline is None
        else agreement(
            last["overall"], pipeline, last["rows"].get("labeled"), slices=last["slices"]
        ),
        "overall": last["overall"],
        "slices": last["slices"],
        "drift": last["drift"],
        "runs": [
            {k: v for k, v in r.items() if k not in ("overall", "slices", "drift")} for r in runs
        ],
    }
    return summary


def _completed_stages(progress: Path) -> dict[str, Any]:
    lines = progress.read_text(encoding="utf-8").splitlines() if progress.exists() else []
    stages = {}
    for line in filter(None, lines):
        figures = json.loads(line)
        stages[figures.pop("stage")] = figures
    return stages


def run_once(
    tool: str, command: list[str], job: dict[str, Any], env: dict[str, str], reserve: int
) -> dict:
    """One repeat in a fresh, watched process.

    A failed one says which stage it failed in, and keeps the figures of those it finished.
    """
    handle, name = tempfile.mkstemp(prefix="bench-compare-", suffix=".jsonl")
    os.close(handle)
    progress = Path(name)
    try:
        run = run_watched(
            [*command, json.dumps({**job, "progress": name})], env, reserve, echo=True
        )
        if "error" in run:
            run["completed_stages"] = done = _completed_stages(progress)
            run["failed_stage"] = next((s for s in STAGES[tool] if s not in done), None)
        return run
    finally:
        progress.unlink(missing_ok=True)


def run_comparison(
    tool: str, workdir: Path, day: str, repeats: int, reserve_gib: float
) -> dict[str, Any]:
    """Runs one tool's monitoring work on the workdir's day ``repeats`` times and sums it up.

    Args:
        tool: ``pipeline``, ``nannyml`` or ``naive``.
        workdir: a pipeline data directory on which the nightly job has run for ``day``.
        day: the day, ``YYYY-MM-DD``.
        repeats: timed runs, each in a fresh process (the first failure ends them).
        reserve_gib: a run is stopped when the machine has less memory than this available.

    Returns:
        Per stage the seconds of each run, their median and the peak RSS (and its increase over
        the stage's start); the same in total (``monitoring_median_seconds``: the median of the
        whole work, every stage); rows, package versions and the agreement with the
        pipeline's ``performance_metrics``; or ``error`` if every run failed.
    """
    if tool not in STAGES:
        raise ValueError(f"unknown tool {tool!r}: choose one of {sorted(STAGES)}")
    workdir = workdir.resolve()
    with data_dir(workdir):
        job = {**describe_job(load_settings(), day), "tool": tool}
    env = {**os.environ, **workdir_environment(workdir), "NML_DISABLE_USAGE_LOGGING": "1"}
    if tool == "nannyml":
        command = [str(nannyml_python()), "-I", str(NANNYML_CHILD)]
    else:
        command = [sys.executable, "-m", "feedback_pipeline.bench.compare", "--child"]
    print(f"{tool} on {day} in {workdir}:", flush=True)
    runs = []
    for repeat in range(repeats):
        run = run_once(tool, command, job, env, int(reserve_gib * GIB))
        runs.append(run)
        if "error" in run:
            print(
                f"  run {repeat + 1}: failed in {run['failed_stage']}: {run['error']}", flush=True
            )
            break  # the next repeat would fail the same way (most often: out of memory)
        total = sum(s["seconds"] for s in run["stages"].values())
        print(
            f"  run {repeat + 1}: {total:.2f} s, peak RSS {run['peak_rss_bytes'] / GIB:.2f} GiB",
            flush=True,
        )
    metrics_path = Path(job["performance_metrics"])
    pipeline = pd.read_parquet(metrics_path) if metrics_path.exists() else None
    return {
        **summarize(tool, runs, pipeline),
        "day": day,
        "workdir": str(workdir),
        "reserve_gib": reserve_gib,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }


# ---------------------------------------------------------------------------------------------
# Table and command line
# ---------------------------------------------------------------------------------------------


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as a text table: per tool and stage the median seconds and peak memory."""
    header = (
        f"{'tool':<8} {'stage':<10} {'median s':>9} {'min s':>8} {'max s':>8} "
        f"{'peak GiB':>9} {'+GiB':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if "stages" not in r:
            stage = r["runs"][-1].get("failed_stage")
            lines.append(f"{r['tool']:<8} FAILED in {stage}: {r['error']}")
            for name, s in r["runs"][-1].get("completed_stages", {}).items():
                lines.append(
                    f"{'':<8} {name:<10} {s['seconds']:>9.2f} {'':>8} {'':>8} "
                    f"{s['peak_rss_bytes'] / GIB:>9.2f} {s['peak_increase_bytes'] / GIB:>6.2f}"
                )
            continue
        named = [*r["stages"].items(), ("total", r["total"])]
        for number, (name, s) in enumerate(named):
            lines.append(
                f"{r['tool'] if number == 0 else '':<8} {name:<10} {s['median_seconds']:>9.2f} "
                f"{min(s['seconds']):>8.2f} {max(s['seconds']):>8.2f} "
                f"{s['peak_rss_bytes'] / GIB:>9.2f} {s['peak_increase_bytes'] / GIB:>6.2f}"
            )
        found = r.get("agreement")
        if found:
            worst = ", ".join(f"{k} {v:.2g}" for k, v in found["max_abs_difference"].items())
            labeled = found["labeled"]
            lines.append(f"{'':<8} agreement, largest |tool - pipeline|: {worst or 'none'}")
            lines.append(
                f"{'':<8} labeled predictions: {labeled['tool']:,} (tool), "
                f"{labeled['pipeline']:,} (pipeline)"
            )
    lines += [
        "",
        "Medians of the repeats, each in a fresh process; imports are not timed. peak GiB: peak",
        "RSS during the stage (total: of the run); +GiB: its increase over the stage's start",
        "(total: over the process after its imports).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_pipeline.bench.compare",
        description="Times the day's monitoring work done by NannyML, by a naive pandas script, "
        "or by the pipeline alone.",
    )
    parser.add_argument("--tool", nargs="+", choices=sorted(STAGES), help="the tools to run")
    parser.add_argument("--workdir", type=Path, help="a data directory the pipeline has run on")
    parser.add_argument("--day", help="the day, YYYY-MM-DD")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        default=2.0,
        help="stop a run when the machine has less memory than this available (default 2)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and not (args.tool and args.workdir and args.day):
        parser.error("--tool, --workdir and --day are required")
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison (or, with ``--child``, one run of the naive script or the pipeline)."""
    args = parse_args(argv)
    if args.child is not None:
        job = json.loads(args.child)
        run = run_pipeline(job) if job.get("tool") == "pipeline" else run_naive(job)
        print(RESULT_PREFIX + json.dumps(run), flush=True)
        return 0
    results = [
        run_comparison(tool, args.workdir, args.day, args.repeats, args.reserve_gib)
        for tool in args.tool
    ]
    text = json.dumps(results, indent=2, default=str)
    print()
    print(format_table(results))
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 1 if any(r["failed_repeats"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
