"""One timed run of the day's monitoring work with NannyML, for ``bench/compare.py``.

Runs under the benchmark's own venv (``data/bench/nannyml-venv``, from
``nannyml-requirements.lock``), where the project is not installed: it imports no
``feedback_pipeline`` module, and everything it needs (paths, columns, cutoff, the result
prefix) comes as one JSON argument. On the pipeline's ``labeled_predictions`` of the day and its
``reference_data``, with one chunk per day (``chunk_period="D"``):

- ``load``: both Parquet files, the columns the work needs;
- ``realized``: ``PerformanceCalculator`` fitted on the labeled reference, calculated on the
  day's labeled rows of every slice the pipeline measures (model version or all, crossed with
  segment value or all);
- ``estimated``: ``CBPE`` fitted on the labeled reference of each model version (and all),
  estimated on every row of each slice the pipeline estimates (model version or all, crossed
  with segment value or all), labels unseen;
- ``drift``: ``UnivariateDriftCalculator`` (Kolmogorov-Smirnov for continuous columns, chi2 for
  categorical ones) of the pipeline's drift columns, per model version against the reference.

A model version is fitted on its own reference rows if it has at least ``min_reference_rows``
of them, else on the whole reference, as the pipeline's drift reports do.
"""
# pyright: reportMissingImports=false

import gc
import importlib
import json
import math
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import pandas as pd

METRICS = ["roc_auc", "f1", "precision", "recall", "accuracy"]
PACKAGES = ["nannyml", "pandas", "numpy", "scikit-learn", "scipy", "pyarrow"]


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_bytes("VmHWM") or (maxrss if sys.platform == "darwin" else maxrss * 1024)


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # the peak then counts from the start of the process


class Stages:
    """Times each stage and measures its peak memory, appending each to a progress file."""

    def __init__(self, progress: str | None) -> None:
        self.progress = progress
        self.figures: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Runs the block as the stage ``name``."""
        gc.collect()
        _reset_peak()
        before = _status_bytes("VmRSS") or _peak_bytes()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        peak = _peak_bytes()
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
        print(f"{name}: {seconds:.2f} s, peak RSS {peak / 2**30:.2f} GiB", flush=True)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def load(job: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's labeled predictions and the reference, ready for NannyML.

    Timestamps become naive UTC (NannyML's period chunker drops the zone anyway, with a
    warning); categorical columns become ``category``, since NannyML's chi2 fails on pandas'
    nullable string counts.
    """
    categorical = list(dict.fromkeys(["model_version", *job["categorical"]]))
    columns = list(dict.fromkeys(["timestamp", "score", "label", *job["numeric"], *categorical]))
    # A day is the list of its part files, in row order (see ``storage.write_parquet``). The
    # labeled day stores its labels by prediction id beside the inference day's columns, as an
    # outside reader finds them: the rows are the inference day's, in order, unless that day
    # was written again since; then the two are joined on the id.
    labels = _day(job["labeled_predictions"], ["prediction_id", "label"])
    log = _day(job["inference_log"], ["prediction_id", *(c for c in columns if c != "label")])
    if labels["prediction_id"].equals(log["prediction_id"]):
        day = log.assign(label=labels["label"])
    else:
        day = labels.merge(log, on="prediction_id", how="left", validate="one_to_one")
    frames = []
    for frame in (day[columns], _day([job["reference"]], columns)):
        frame = frame.copy()
        frame["timestamp"] = frame["timestamp"].dt.tz_convert(None)
        frame["y_pred"] = (frame["score"] >= job["score_cutoff"]).astype("int8")
        for column in categorical:
            frame[column] = frame[column].astype("category")
        frames.append(frame)
    return frames[0], frames[1]


def _day(paths: list[str], columns: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)


def _labeled(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["label"].notna()].copy()
    rows["label"] = rows["label"].astype("int8")
    return rows


def _versions(frame: pd.DataFrame, everything: str) -> list[tuple[str, pd.DataFrame]]:
    groups = frame.groupby("model_version", observed=True, sort=True)
    return [(everything, frame), *((str(v), rows) for v, rows in groups)]


def _reference_for(reference: pd.DataFrame, version: str, job: dict[str, Any]) -> pd.DataFrame:
    own = reference[reference["model_version"].astype(str) == version]
    return own if len(own) >= job["min_reference_rows"] else reference


def _day_values(result: Any, day: str, names: list[str]) -> dict[str, float | None]:
    table = result.filter(period="analysis").to_df()
    row = table[table[("chunk", "key")].astype(str) == day]
    return {m: _number(row[(m, "value")].iloc[0]) if len(row) else None for m in names}


def realized(nml: Any, day: pd.DataFrame, reference: pd.DataFrame, job: dict[str, Any]) -> dict:
    """Realized metrics of every slice of the day's labeled rows, keyed ``version|segment``."""
    everything, labeled, known_reference = job["all"], _labeled(day), _labeled(reference)
    out = {}
    for version, rows in _versions(labeled, everything):
        calculator = nml.PerformanceCalculator(
            metrics=METRICS,
            y_true="label",
            y_pred="y_pred",
            y_pred_proba="score",
            problem_type="classification_binary",
            timestamp_column_name="timestamp",
            chunk_period="D",
        )
        calculator.fit(_reference_for(known_reference, version, job))
        for segment, part in _segments(rows, job, everything):
            values = _day_values(calculator.calculate(part), job["day"], METRICS)
            out[f"{version}|{segment}"] = {"n_labeled": len(part), **values}
    return out


def _segments(
    rows: pd.DataFrame, job: dict[str, Any], everything: str
) -> list[tuple[str, pd.DataFrame]]:
    """A version's rows whole, then split by each segment column's values: its slices."""
    slices = [(everything, rows)]
    for column in job["segments"]:
        groups = rows.groupby(column, observed=True, sort=True)
        slices += [(f"{column}={value}", part) for value, part in groups]
    return slices


def estimated(nml: Any, day: pd.DataFrame, reference: pd.DataFrame, job: dict[str, Any]) -> dict:
    """CBPE's estimates over every prediction of every slice, keyed ``version|segment``.

    The pipeline estimates each slice it measures, so NannyML does too: fitted once per model
    version (and all) on that version's labeled reference, then estimated on each slice.
    """
    everything, known_reference = job["all"], _labeled(reference)
    out = {}
    for version, rows in _versions(day, everything):
        estimator = nml.CBPE(
            metrics=METRICS,
            y_true="label",
            y_pred="y_pred",
            y_pred_proba="score",
            problem_type="classification_binary",
            timestamp_column_name="timestamp",
            chunk_period="D",
        )
        estimator.fit(_reference_for(known_reference, version, job))
        for segment, part in _segments(rows, job, everything):
            out[f"{version}|{segment}"] = _day_values(estimator.estimate(part), job["day"], METRICS)
    return out


def drift(nml: Any, day: pd.DataFrame, reference: pd.DataFrame, job: dict[str, Any]) -> dict:
    """Univariate drift of the pipeline's drift columns per model version: KS and chi2.

    Alerts are NannyML's defaults: chi2's p-value below 0.05, and for KS a threshold from the
    spread of the reference's daily chunks, which a one-day reference leaves at the reference's
    own value (so every column alerts). The benchmark is about the work's cost; the alerts are
    reported as NannyML gives them.
    """
    columns = [*job["numeric"], *job["categorical"]]
    out = {}
    for version, rows in day.groupby("model_version", observed=True, sort=True):
        calculator = nml.UnivariateDriftCalculator(
            column_names=columns,
            treat_as_categorical=job["categorical"],
            timestamp_column_name="timestamp",
            continuous_methods=["kolmogorov_smirnov"],
            categorical_methods=["chi2"],
            chunk_period="D",
        )
        calculator.fit(_reference_for(reference, str(version), job))
        table = calculator.calculate(rows).filter(period="analysis").to_df()
        alerts = [c for c in table.columns if c[-1] == "alert"]
        drifted = sorted(c[0] for c in alerts if bool(table[c].iloc[0]))
        out[str(version)] = {
            "columns": len(alerts),
            "drifted_columns": len(drifted),
            "drift_share": len(drifted) / len(alerts) if alerts else None,
            "drifted_column_names": drifted,
        }
    return out


def main(argv: list[str]) -> int:
    """Runs the four stages on the job given as JSON and prints the figures."""
    job = json.loads(argv[0])
    start = time.perf_counter()
    import nannyml as nml

    importlib.import_module("pyarrow.parquet")  # else pandas imports it inside the clock

    import_seconds = time.perf_counter() - start
    # One chunk per day is the point here: NannyML's "too few chunks" and similar notes are
    # expected, and would bury a real error in the output the benchmark keeps.
    warnings.simplefilter("ignore")
    stages = Stages(job.get("progress"))
    after_imports = _status_bytes("VmRSS") or _peak_bytes()
    with stages("load"):
        day, reference = load(job)
    with stages("realized"):
        performance = realized(nml, day, reference, job)
    with stages("estimated"):
        estimates = estimated(nml, day, reference, job)
    with stages("drift"):
        drifts = drift(nml, day, reference, job)
    for key, values in estimates.items():
        performance.setdefault(key, {}).update({f"estimated_{m}": v for m, v in values.items()})
    overall = {
        key.split("|")[0]: {m: v for m, v in values.items() if m != "n_labeled"}
        for key, values in performance.items()
        if key.endswith(f"|{job['all']}")
    }
    peak = max(s["peak_rss_bytes"] for s in stages.figures.values())
    figures = {
        "stages": stages.figures,
        "import_seconds": import_seconds,
        "rss_after_imports_bytes": after_imports,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak - after_imports,
        "rows": {
            "predictions": len(day),
            "labeled": int(day["label"].notna().sum()),
            "reference": len(reference),
            "reference_labeled": int(reference["label"].notna().sum()),
        },
        "overall": overall,
        "slices": performance,
        "drift": drifts,
        "packages": {p: metadata.version(p) for p in PACKAGES},
    }
    print(job["result_prefix"] + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
