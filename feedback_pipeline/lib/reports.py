"""Evidently reports of one day and model version: drift against the reference, and quality.

Three reports per day and version, each an Evidently 0.7 ``Report`` (the current API):

- ``drift``: every feature and the score of the day's predictions against ``reference_data``
  (the metrics of ``DataDriftPreset``: ``DriftedColumnsCount`` and one ``ValueDrift`` per
  column, with the preset's methods and thresholds). It reads the predictions alone, so it can
  be drawn as soon as the day is ingested.
- ``quality``: ``ClassificationPreset`` on the day's labeled predictions.
- ``summary``: the pipeline's own numbers of the day (realized and estimated accuracy and ROC
  AUC, label coverage, feedback rates) as ``MeanValue`` metrics of one-row columns, so that
  Evidently's dashboards can plot them beside the drift share.

**Sampling rule.** Evidently's cost grows with rows (a 10M-row day would take minutes and many
GB), so a report reads at most ``reports.sample_rows`` rows of the day (per version) and of the
reference: a uniform sample without replacement, seeded by ``reports.seed`` and the day, the
same rows on every re-run. Above 1,000 rows Evidently's default tests are distances
(Wasserstein for numbers, Jensen-Shannon for categories) whose values converge as the sample
grows, so a verdict on 100k sampled rows is the verdict on all of them; the tests hold this on
data with known drift. The sample sizes are recorded in the report's metadata and in the numbers.
"""

import datetime as dt
import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedback_pipeline.lib.schemas import TEXT
from feedback_pipeline.lib.storage import day_end, sample_positions

DRIFT, QUALITY, SUMMARY = "drift", "quality", "summary"
# The pipeline's numbers carried into the summary report, for Evidently's dashboards.
PIPELINE_NUMBERS = [
    "accuracy",
    "estimated_accuracy",
    "roc_auc",
    "estimated_roc_auc",
    "label_coverage",
    "thumbs_up_share",
    "mean_rating",
    "negative_feedback_share",
    "click_rate",
    "conversion_rate",
]
PIPELINE_PREFIX = "pipeline_"
QUALITY_METRICS = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "RocAuc": "roc_auc",
    "LogLoss": "log_loss",
}
METRIC_TYPE = "evidently:metric_v2:"


@dataclass
class DayReport:
    """One Evidently report of a day and model version, and the numbers read from it."""

    kind: str
    day: str
    model_version: str
    snapshot: Any  # evidently Snapshot
    numbers: dict[str, Any] = field(default_factory=dict)


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most ``rows`` rows, uniformly without replacement, the same ones for the same seed."""
    if len(frame) <= rows:
        return frame
    return frame.iloc[sample_positions(len(frame), rows, seed)]


def _sampled(frame: pd.DataFrame, at: np.ndarray | None, rows: int, seed: int) -> pd.DataFrame:
    """``sample(frame.iloc[at], rows, seed)`` (``at`` None: every row), without the copy."""
    if at is None:
        return sample(frame, rows, seed)
    return frame.iloc[at[sample_positions(len(at), rows, seed)]]


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its columns of categories as text, as Evidently compares values.

    A day's and the reference's categories differ (a version, a country seen in one only).
    """
    return frame.astype(
        {c: TEXT for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)}
    )


def day_seed(seed: int, day: str, model_version: str) -> int:
    """A seed of its own for each day and version, stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{day}:{model_version}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _definition(numeric: list[str], categorical: list[str], **extra: Any) -> Any:
    from evidently import DataDefinition

    return DataDefinition(numerical_columns=numeric, categorical_columns=categorical, **extra)


@dataclass
class DriftInput:
    """What a drift report is drawn from: the sampled rows, small enough to send to a helper."""

    current: pd.DataFrame  # the day's sampled rows
    reference: pd.DataFrame  # the reference's sampled rows, the same columns
    numeric: list[str]
    categorical: list[str]
    day: str
    model_version: str
    metadata: dict[str, Any]


@dataclass
class SummaryInput:
    """The pipeline's numbers of a day and version, shown as a report of their own."""

    numbers: dict[str, float]
    day: str
    model_version: str
    metadata: dict[str, Any]


@dataclass
class QualityInput:
    """What a quality report is drawn from: the sampled labeled rows."""

    frame: pd.DataFrame  # target, prediction, score
    day: str
    model_version: str
    metadata: dict[str, Any]


def drift_input(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    day: str,
    model_version: str,
    sample_rows: int,
    seed: int,
    at: np.ndarray | None = None,
    rows: int | None = None,
) -> DriftInput:
    """The rows the day's drift report compares (see ``drift_report`` for the arguments).

    ``rows``: the version's rows in the day, where ``current`` holds a sample of them already.
    """
    columns = [c for c in numeric + categorical if c in current and c in reference]
    own_seed = day_seed(seed, day, model_version)
    cur = _text(_sampled(current, at, sample_rows, own_seed)[columns].reset_index(drop=True))
    ref = _text(sample(reference, sample_rows, own_seed + 1)[columns].reset_index(drop=True))
    if rows is None:
        rows = len(current) if at is None else len(at)
    sizes = (rows, len(cur), len(reference), len(ref))
    return DriftInput(
        current=cur,
        reference=ref,
        numeric=[c for c in numeric if c in columns],
        categorical=[c for c in categorical if c in columns],
        day=day,
        model_version=model_version,
        metadata=_metadata(DRIFT, day, model_version, *sizes),
    )


def draw_drift(job: DriftInput) -> DayReport:
    """The drift report of sampled rows (the metrics of ``DataDriftPreset``, see the module)."""
    from evidently import Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    columns = job.numeric + job.categorical
    definition = _definition(job.numeric, job.categorical)
    # The preset's own metrics, listed: the preset itself would also draw a summary table that
    # computes every column's drift twice more, which doubles the report's time.
    report = Report(
        [DriftedColumnsCount(columns=columns), *(ValueDrift(column=c) for c in columns)]
    )
    current = Dataset.from_pandas(job.current, data_definition=definition)
    reference = Dataset.from_pandas(job.reference, data_definition=definition)
    return _run(report, DRIFT, job, current, reference, drift_numbers)


def summary_input(numbers: dict[str, Any], *, day: str, model_version: str) -> SummaryInput | None:
    """The pipeline's numbers of ``PIPELINE_NUMBERS`` that are known; None if none is."""
    known = {k: _number(numbers.get(k)) for k in PIPELINE_NUMBERS}
    shown = {k: v for k, v in known.items() if v is not None}
    if not shown:
        return None
    return SummaryInput(
        shown, day, model_version, _metadata(SUMMARY, day, model_version, 1, 1, 0, 0)
    )


def draw_summary(job: SummaryInput) -> DayReport:
    """The pipeline's numbers (realized and estimated performance, coverage, feedback rates).

    Each is the mean of a one-row column ``pipeline_<name>``, so that Evidently's dashboards
    plot it beside the drift and quality reports of the same day and version.
    """
    from evidently import Dataset, Report
    from evidently.metrics import MeanValue

    frame = pd.DataFrame({f"{PIPELINE_PREFIX}{k}": [v] for k, v in job.numbers.items()})
    columns = list(frame.columns)
    current = Dataset.from_pandas(frame, data_definition=_definition(columns, []))
    report = Report([MeanValue(column=c) for c in columns])
    return _run(report, SUMMARY, job, current, None, summary_numbers)


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    day: str,
    model_version: str,
    sample_rows: int,
    seed: int,
    at: np.ndarray | None = None,
) -> DayReport:
    """The drift of the day's features and score against the reference.

    Args:
        current: the day's predictions of one model version (or of all, with ``at``).
        reference: the reference predictions (every version).
        numeric: numeric columns to test, the score included.
        categorical: categorical columns to test.
        day: the day, ``YYYY-MM-DD``.
        model_version: the model version.
        sample_rows: the most rows of the day and of the reference read.
        seed: the reports' seed (combined with the day and version).
        at: the positions of the version's rows in ``current`` (default: every row); a big day
            is then sampled without first copying each version's rows.
    """
    return draw_drift(
        drift_input(
            current,
            reference,
            numeric,
            categorical,
            day=day,
            model_version=model_version,
            sample_rows=sample_rows,
            seed=seed,
            at=at,
        )
    )


def quality_input(
    labeled: pd.DataFrame,
    cutoff: float,
    *,
    day: str,
    model_version: str,
    sample_rows: int,
    seed: int,
    at: np.ndarray | None = None,
) -> QualityInput | None:
    """The rows the day's quality report reads (see ``quality_report``); None as it says."""
    labels = labeled["label"] if at is None else labeled["label"].iloc[at]
    if labels.empty or labels.nunique() < 2:
        return None
    rows = _sampled(labeled, at, sample_rows, day_seed(seed, day, model_version) + 2)
    frame = pd.DataFrame(
        {
            "target": rows["label"].to_numpy(dtype=int),
            "prediction": (rows["score"].to_numpy(dtype=float) >= cutoff).astype(int),
            "score": rows["score"].to_numpy(dtype=float),
        }
    )
    metadata = _metadata(QUALITY, day, model_version, len(labels), len(frame), 0, 0)
    return QualityInput(frame, day, model_version, metadata)


def draw_quality(job: QualityInput) -> DayReport:
    """``ClassificationPreset`` on the sampled labeled rows."""
    from evidently import BinaryClassification, Dataset, Report
    from evidently.presets import ClassificationPreset

    task = BinaryClassification(
        target="target", prediction_labels="prediction", prediction_probas="score"
    )
    definition = _definition(["score"], [], classification=[task])
    current = Dataset.from_pandas(job.frame, data_definition=definition)
    return _run(Report([ClassificationPreset()]), QUALITY, job, current, None, quality_numbers)


def _run(
    report: Any,
    kind: str,
    job: DriftInput | QualityInput | SummaryInput,
    current: Any,
    reference: Any,
    read: Callable[[Any], dict[str, Any]],
) -> DayReport:
    """Runs an Evidently report of the job's day and version, stamped, tagged and named."""
    snapshot = report.run(
        current,
        reference,
        timestamp=_when(job.day),
        metadata=job.metadata,
        tags=[kind, f"version={job.model_version}"],
        name=f"{kind} {job.day} {job.model_version}",
    )
    return DayReport(kind, job.day, job.model_version, snapshot, read(snapshot) | job.metadata)


def quality_report(
    labeled: pd.DataFrame,
    cutoff: float,
    *,
    day: str,
    model_version: str,
    sample_rows: int,
    seed: int,
    at: np.ndarray | None = None,
) -> DayReport | None:
    """Classification quality on the day's labeled predictions of one version.

    None when there are no labels, or labels of one class only: Evidently's per-class quality
    (ROC AUC by class) is undefined then and its preset fails.

    Args:
        labeled: predictions with a known ``label`` and their ``score``.
        cutoff: ``score >= cutoff`` is class 1.
        day: the day, ``YYYY-MM-DD``.
        model_version: the model version.
        sample_rows: the most rows read.
        seed: the reports' seed (combined with the day and version).
        at: the positions of the version's labeled rows in ``labeled`` (default: every row).
    """
    job = quality_input(
        labeled,
        cutoff,
        day=day,
        model_version=model_version,
        sample_rows=sample_rows,
        seed=seed,
        at=at,
    )
    return None if job is None else draw_quality(job)


def warm_up() -> None:
    """Draws and saves tiny reports of each kind, so that the plots' modules are imported.

    Saving renders the HTML and serializes the snapshot: modules the first report would
    otherwise import while it is saved.
    """
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "number": rng.normal(size=200),
            "score": rng.uniform(size=200),
            "category": pd.Categorical(rng.choice(["a", "b", "c"], size=200)),
            "label": rng.integers(0, 2, size=200).astype(float),
        }
    )
    made = [
        drift_report(
            frame,
            frame,
            ["number", "score"],
            ["category"],
            day="2000-01-01",
            model_version="warm-up",
            sample_rows=200,
            seed=0,
        )
    ]
    quality = quality_report(
        frame, 0.5, day="2000-01-01", model_version="warm-up", sample_rows=200, seed=0
    )
    if quality is not None:
        made.append(quality)
    summary = summary_input({"accuracy": 0.5}, day="2000-01-01", model_version="warm-up")
    if summary is not None:
        made.append(draw_summary(summary))
    with tempfile.TemporaryDirectory() as directory:
        for report in made:
            save(report, directory)
            report.snapshot.to_snapshot_model().dict()  # as the workspace stores it


def _metadata(
    kind: str, day: str, version: str, rows: int, sampled: int, ref_rows: int, ref_sampled: int
) -> dict[str, Any]:
    return {
        "report": kind,
        "day": day,
        "model_version": version,
        "rows": str(rows),
        "sample_rows": str(sampled),
        "reference_rows": str(ref_rows),
        "reference_sample_rows": str(ref_sampled),
    }


def _when(day: str) -> dt.datetime:
    """Reports are stamped at the end of their day, so dashboards plot them on the right date."""
    return (day_end(day) - pd.Timedelta(seconds=1)).to_pydatetime()


def _metrics(snapshot: Any) -> list[dict[str, Any]]:
    return snapshot.dict()["metrics"]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def drift_numbers(snapshot: Any) -> dict[str, Any]:
    """Drift share, drifted columns and each column's drift score, read from the snapshot.

    A column has drifted when its test says so: a p-value below the threshold, or a distance at
    or above it.
    """
    scores: dict[str, float | None] = {}
    drifted: list[str] = []
    out: dict[str, Any] = {}
    for metric in _metrics(snapshot):
        config = metric["config"]
        kind = config["type"].removeprefix(METRIC_TYPE)
        if kind == "DriftedColumnsCount":
            out["drift_share"] = _number(metric["value"]["share"])
            out["drifted_columns"] = int(metric["value"]["count"])
        elif kind == "ValueDrift":
            column, value = config["column"], _number(metric["value"])
            scores[column] = value
            threshold = float(config.get("threshold") or 0.0)
            p_value = "p_value" in str(config.get("method", ""))
            if value is not None and (value < threshold if p_value else value >= threshold):
                drifted.append(column)
    methods = {
        m["config"]["column"]: m["config"].get("method")
        for m in _metrics(snapshot)
        if m["config"]["type"].endswith("ValueDrift")
    }
    return out | {
        "column_drift_scores": scores,
        "drifted_column_names": sorted(drifted),
        "drift_methods": methods,
        "score_drift": scores.get("score"),
    }


def summary_numbers(snapshot: Any) -> dict[str, Any]:
    """The pipeline's numbers the summary report shows, as ``shown_<name>``."""
    out: dict[str, Any] = {}
    for metric in _metrics(snapshot):
        config = metric["config"]
        if config["type"].endswith("MeanValue") and config["column"].startswith(PIPELINE_PREFIX):
            name = config["column"].removeprefix(PIPELINE_PREFIX)
            out[f"shown_{name}"] = _number(metric["value"])
    return out


def quality_numbers(snapshot: Any) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC and log loss, read from the snapshot."""
    out: dict[str, Any] = {}
    for metric in _metrics(snapshot):
        kind = metric["config"]["type"].removeprefix(METRIC_TYPE)
        if kind in QUALITY_METRICS:
            out[QUALITY_METRICS[kind]] = _number(metric["value"])
    return out


def save(report: DayReport, directory: str) -> tuple[str, str]:
    """Writes the report as HTML and JSON (atomically); returns their paths."""
    folder = Path(directory) / f"version={report.model_version}" / f"date={report.day}"
    folder.mkdir(parents=True, exist_ok=True)
    html, data = folder / f"{report.kind}.html", folder / f"{report.kind}.json"
    for path, writer in (
        (html, report.snapshot.save_html),
        (data, report.snapshot.save_json),
    ):
        partial = path.with_name(f".{path.name}.partial")
        writer(str(partial))
        partial.replace(path)
    return str(html), str(data)


def plain(numbers: dict[str, Any]) -> str:
    """The numbers as JSON (for metadata and artifacts)."""
    return json.dumps(numbers, default=str, sort_keys=True)
