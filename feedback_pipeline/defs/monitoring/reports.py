"""Evidently reports and MLflow monitoring runs of each day, per model version."""

import functools
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from feedback_pipeline.defs.partitions import OPTIONAL_INPUT_METADATA, daily_partitions
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import parallel, privacy, reports, tracking, workspace
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.settings import Settings

# A version with fewer reference rows than this is compared with the reference of all versions.
MIN_REFERENCE_ROWS = 1000
# The overall row's numbers that go to MLflow beside the reports'.
TRACKED = [
    "n_predictions",
    "n_labeled",
    "label_coverage",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
    "estimated_roc_auc",
    "estimation_error_accuracy",
    "estimation_error_roc_auc",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "thumbs_up_share",
    "mean_rating",
    "negative_feedback_share",
    "click_rate",
    "conversion_rate",
    "business_value",
]


def settings_used(settings: Settings) -> dict[str, str]:
    """The settings a day's numbers depend on, as MLflow parameters."""
    return {
        "score_cutoff": str(settings.score_cutoff),
        "missing_feedback_policy": settings.missing_feedback_policy.value,
        "label_kinds": ",".join(k.value for k in settings.label_kinds),
        **{
            f"window_{kind.value}": f"{rule.window}/{rule.conflict.value}"
            for kind, rule in settings.feedback_kinds.items()
        },
        "reports_sample_rows": str(settings.reports.sample_rows),
        "feedback_quality_exclude": ",".join(f.value for f in settings.feedback_quality.exclude),
    }


class PhaseTimer:
    """Wall seconds spent per phase of a step, summed over its calls, for its metadata."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Adds the time spent inside the ``with`` block to ``phase``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def metadata(self) -> dict[str, float]:
        """``seconds_<phase>`` per phase, for the materialization's metadata."""
        return {f"seconds_{phase}": round(s, 3) for phase, s in self.seconds.items()}


@dataclass
class VersionJob:
    """What one model version's reports are drawn from: samples, small enough to send."""

    version: str
    day: str
    drift: reports.DriftInput | None
    quality: reports.QualityInput | None


@dataclass
class Filed:
    """One report as the step records it: its numbers, its files and its workspace snapshot."""

    kind: str
    numbers: dict
    html: str
    json: str
    snapshot_id: str


@dataclass
class Drawn:
    """One version's reports, and the seconds of each phase of drawing and filing them."""

    version: str
    filed: list[Filed]
    seconds: dict[str, float]
    process: int  # the process that drew them


def draw_versions(
    jobs: list[VersionJob], settings: Settings, directory: str, workers: int
) -> list[Drawn]:
    """Draws each version's reports, writes them as HTML and JSON and stores their snapshots.

    Evidently's work is Python through and through: the versions are drawn side by side in
    forked workers, each on a core, rather than one after the other. Each worker also stores its
    snapshots in the workspace (a file each); the workspace's index of them is written here, once.
    """
    # Opened before the workers are forked: they share it, and a missing project is created here
    # once rather than by two workers at a time.
    workspace.open_project(settings)
    made = parallel.forked_map(
        functools.partial(_draw, settings=settings, directory=directory), jobs, workers
    )
    drawn = [
        Drawn(job.version, filed, seconds, process)
        for job, (filed, seconds, process) in zip(jobs, made, strict=True)
    ]
    start = time.perf_counter()
    workspace.index_snapshots(
        settings,
        [
            (job.day, job.version, filed.kind, filed.snapshot_id)
            for job, made_one in zip(jobs, drawn, strict=True)
            for filed in made_one.filed
        ],
    )
    if drawn:  # the index is written once: it counts in the first version's saving
        drawn[0].seconds["saving"] = drawn[0].seconds.get("saving", 0.0) + (
            time.perf_counter() - start
        )
    return drawn


def _draw(
    job: VersionJob, settings: Settings, directory: str
) -> tuple[list[Filed], dict[str, float], int]:
    """The version's reports, filed: their numbers, files and stored snapshots (no polars)."""
    day_reports, timed = [], PhaseTimer()
    if job.drift is not None:
        with timed("drift"):
            day_reports.append(reports.draw_drift(job.drift))
    with timed("quality"):
        if job.quality is not None:
            day_reports.append(reports.draw_quality(job.quality))
    filed = []
    with timed("saving"):
        for report in day_reports:
            html, data = reports.save(report, directory)
            snapshot_id = workspace.store_snapshot(settings, report)
            filed.append(Filed(report.kind, report.numbers, html, data, snapshot_id))
    return filed, dict(timed.seconds), os.getpid()


def _reference_for(reference: pd.DataFrame, version: str) -> pd.DataFrame:
    own = reference[reference["model_version"].astype(str) == version]
    return own if len(own) >= MIN_REFERENCE_ROWS else reference


@dg.asset(
    partitions_def=daily_partitions,
    group_name="monitoring",
    kinds={"evidently", "mlflow"},
    ins={
        "labeled_predictions": dg.AssetIn(
            metadata={
                "columns": ["model_version", "score", "latency_ms", "label"],
                "settings_columns": ["features", "categorical_features", "segments"],
            }
        ),
        "performance_metrics": dg.AssetIn(),
        "reference_data": dg.AssetIn(metadata=OPTIONAL_INPUT_METADATA),
    },
)
def monitoring_reports(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    helper: Helper,
    labeled_predictions: pd.DataFrame,
    performance_metrics: pd.DataFrame,
    reference_data: pd.DataFrame | None,
) -> dg.Output[pd.DataFrame]:
    """Per model version: Evidently drift and quality reports, their snapshots, an MLflow run.

    Reports go to ``reports/version=<v>/date=<day>/<kind>.{html,json}`` under the data
    directory and into the Evidently workspace; the MLflow run of the day and version holds the
    day's metrics, the settings used and the reports, and is updated (never duplicated) when the
    day is re-run.
    """
    settings, day = pipeline.settings, context.partition_key
    cols = settings.inference_columns
    hidden = privacy.personal(settings)  # reports leave the pipeline: no personal column in them
    numeric = [c for c in [*cols.features, "score", "latency_ms"] if c not in hidden]
    categorical = [c for c in [*cols.categorical_features, *cols.segments] if c not in hidden]
    directory = pipeline.data_path(settings.reports.directory)
    if reference_data is None:
        context.log.warning("no reference_data yet: the drift reports are left out")
    rows, metadata, timed = [], {}, PhaseTimer()
    with timed("import"):  # Evidently takes seconds to import: its own phase, not the reports'
        if helper.started:  # the helper has imported it since the run started
            for problem in helper.prepared():
                context.log.warning(f"the helper could not prepare {problem}")
        else:
            import evidently  # noqa: F401
    # Each version's rows by position: its reports sample them without copying them first.
    codes, versions = pd.factorize(labeled_predictions["model_version"], sort=True)
    known = labeled_predictions["label"].notna().to_numpy()
    summaries = {str(v): _summary(performance_metrics, str(v)) for v in versions}
    jobs = []
    for code, version in enumerate(map(str, versions)):
        at = np.flatnonzero(codes == code)
        sampling = {
            "day": day,
            "model_version": version,
            "sample_rows": settings.reports.sample_rows,
            "seed": settings.reports.seed,
        }
        drift = None
        if reference_data is not None and len(reference_data):
            drift = reports.drift_input(
                labeled_predictions,
                _reference_for(reference_data, version),
                numeric,
                categorical,
                {k: summaries[version].get(k) for k in reports.PIPELINE_NUMBERS},
                at=at,
                **sampling,
            )
        quality = reports.quality_input(
            labeled_predictions, settings.score_cutoff, at=at[known[at]], **sampling
        )
        jobs.append(VersionJob(version, day, drift, quality))
    workers = settings.reports.workers or parallel.default_workers()
    with timed("versions"):
        drawn = helper.call(draw_versions, jobs, settings, directory, workers)
    for made in drawn:
        version = made.version
        for phase, seconds in made.seconds.items():
            timed.seconds[phase] += seconds
        summary, artifacts, numbers = summaries[version], [], {}
        for report in made.filed:
            artifacts += [report.html, report.json]
            numbers |= {f"{report.kind}_{k}": v for k, v in report.numbers.items()}
            rows.append(
                {
                    "date": day,
                    "model_version": version,
                    "report": report.kind,
                    "html": report.html,
                    "json": report.json,
                    "snapshot_id": report.snapshot_id,
                    "numbers": reports.plain(report.numbers),
                }
            )
        with timed("tracking"):
            run = helper.call(
                tracking.log_monitoring_run,
                settings,
                day,
                version,
                metrics={**{k: summary.get(k) for k in TRACKED}, **_flat_numbers(numbers)},
                params=settings_used(settings),
                artifacts=artifacts,
                tags={"feedback_pipeline.maturity": str(summary.get("maturity", ""))},
                dagster_run_id=context.run.run_id,
            )
        for row in rows:
            if row["model_version"] == version:
                row["mlflow_run_id"] = run.run_id
        metadata |= _version_metadata(version, numbers, run, settings)
    table = pd.DataFrame(
        rows,
        columns=[
            "date",
            "model_version",
            "report",
            "html",
            "json",
            "snapshot_id",
            "numbers",
            "mlflow_run_id",
        ],
    )
    drift = [v for k, v in metadata.items() if k.startswith("drift_share__") and v is not None]
    metadata["drift_share"] = max(drift) if drift else None
    metadata["n_predictions"] = len(labeled_predictions)
    # Where the step's time went: waiting for Evidently's import, Evidently's drift and quality
    # reports, writing them (files and the workspace), and the MLflow runs. drift, quality and
    # part of saving are summed over the versions' workers; versions is the wall time of drawing
    # and filing them all.
    metadata |= timed.metadata()
    metadata["report_workers"] = len({made.process for made in drawn})
    metadata["report_helper"] = helper.started
    return dg.Output(table, metadata=metadata)


def _summary(table: pd.DataFrame, version: str) -> dict:
    rows = table[(table["model_version"] == version) & (table["segment"] == ALL)]
    return rows.iloc[0].to_dict() if len(rows) else {}


def _flat_numbers(numbers: dict) -> dict[str, float | None]:
    """The reports' scalar numbers, and each column's drift score, as MLflow metrics."""
    out: dict[str, float | None] = {}
    for key, value in numbers.items():
        if isinstance(value, bool) or key.endswith("_day") or key.endswith("model_version"):
            continue
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            out[key] = float(value)
    for column, score in (numbers.get("drift_column_drift_scores") or {}).items():
        out[f"drift_score/{column}"] = score
    return out


def _version_metadata(
    version: str, numbers: dict, run: tracking.MonitoringRun, settings: Settings
) -> dict:
    def get(key: str) -> float | None:
        value = numbers.get(key)
        return float(value) if isinstance(value, int | float) else None

    return {
        f"drift_share__{version}": get("drift_drift_share"),
        f"drifted_columns__{version}": get("drift_drifted_columns"),
        f"score_drift__{version}": get("drift_score_drift"),
        f"evidently_accuracy__{version}": get("quality_accuracy"),
        f"evidently_roc_auc__{version}": get("quality_roc_auc"),
        f"drifted_column_names__{version}": dg.MetadataValue.json(
            numbers.get("drift_drifted_column_names") or []
        ),
        f"column_drift_scores__{version}": dg.MetadataValue.json(
            numbers.get("drift_column_drift_scores") or {}
        ),
        f"report_sample_rows__{version}": float(numbers.get("drift_sample_rows") or 0),
        f"mlflow_run__{version}": dg.MetadataValue.url(tracking.run_url(settings, run)),
    }
