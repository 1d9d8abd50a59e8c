"""Evidently reports and MLflow monitoring runs of each day, per model version."""

import functools
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import dagster as dg
import numpy as np
import pandas as pd

from feedback_pipeline.defs.partitions import OPTIONAL_INPUT_METADATA, daily_partitions
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import parallel, privacy, reports, storage, tracking, workspace
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.settings import Settings

# A version with fewer reference rows than this is compared with the reference of all versions.
MIN_REFERENCE_ROWS = 1000
REPORTS = dg.AssetKey("monitoring_reports")
# How far the drift reports drawn early stand back for the run's own work (see ``os.nice``).
EARLY_NICENESS = 10
# The most predictions in a day for which the drift drawn early draws the versions side by side.
# Beyond, attribution takes long enough for one worker to be done well before the reports step,
# and a second worker would only add its memory beside attribution's peak: 0.2-0.4 GiB more in
# the 10M benchmark's night, 7.92 GiB against a target of 8.
SIDE_BY_SIDE_ROWS = 2_000_000
# Where the reference_data asset is stored, under the warehouse.
REFERENCE_FILE = "reference_data.parquet"
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
    summary: reports.SummaryInput | None = None
    # The drift report drawn early (``begin_drift``), to be filed with the rest, and its seconds.
    drawn: tuple[reports.DayReport, float] | None = None


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
    jobs: list[VersionJob],
    settings: Settings,
    directory: str,
    workers: int,
    early: str | None = None,
) -> list[Drawn]:
    """Draws each version's reports, writes them as HTML and JSON and stores their snapshots.

    Evidently's work is Python through and through: the versions are drawn side by side in
    forked workers, each on a core, rather than one after the other. Each worker also stores its
    snapshots in the workspace (a file each); the workspace's index of them is written here, once.
    With ``early``, the key of drift reports drawn early (``begin_drift``), each version's
    worker files its version's with the rest.
    """
    # Opened before the workers are forked: they share it, and a missing project is created here
    # once rather than by two workers at a time.
    workspace.open_project(settings)
    if early is not None:
        drawn_early = cast(EarlyDrift, parallel.finish(early)).reports
        jobs = [replace(job, drawn=drawn_early.get(job.version)) for job in jobs]
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
    if job.drawn is not None:  # drawn early: its seconds are still the reports' drift
        report, timed.seconds["drift"] = job.drawn
        day_reports.append(report)
    if job.drift is not None:
        with timed("drift"):
            day_reports.append(reports.draw_drift(job.drift))
    with timed("quality"):
        if job.quality is not None:
            day_reports.append(reports.draw_quality(job.quality))
    if job.summary is not None:
        with timed("summary"):
            day_reports.append(reports.draw_summary(job.summary))
    with timed("saving"):
        filed = [_file(report, settings, directory) for report in day_reports]
    return filed, dict(timed.seconds), os.getpid()


def _file(report: reports.DayReport, settings: Settings, directory: str) -> Filed:
    """Writes the report's files and stores its snapshot."""
    html, data = reports.save(report, directory)
    snapshot_id = workspace.store_snapshot(settings, report)
    return Filed(report.kind, report.numbers, html, data, snapshot_id)


def drift_columns(settings: Settings) -> tuple[list[str], list[str]]:
    """The numeric and categorical columns the drift reports test (no personal column)."""
    cols = settings.inference_columns
    hidden = privacy.personal(settings)  # reports leave the pipeline: no personal column in them
    numeric = [c for c in [*cols.features, "score", "latency_ms"] if c not in hidden]
    categorical = [c for c in [*cols.categorical_features, *cols.segments] if c not in hidden]
    return numeric, categorical


@dataclass
class EarlyDrift:
    """The drift reports of a day drawn early (``begin_drift``), as their worker hands them back."""

    rows: dict[str, int]  # each version's rows in the day, to check against the labeled day's
    reports: dict[str, tuple[reports.DayReport, float]]  # per version, with its drawing seconds


def early_key(day: str) -> str:
    """The key under which the day's drift reports are drawn early (``parallel.begin``)."""
    return f"drift reports {day}"


def begin_drift(
    context: dg.AssetExecutionContext, helper: Helper, pipeline: PipelineSettings
) -> bool:
    """Begins the day's drift reports on the spare core, if this run draws its reports.

    Drift compares the day's predictions with the reference, and neither changes once the day
    is ingested; so a step that runs after ingestion begins them, in a worker of the helper
    (which draws the versions in workers of its own), while attribution, labeling and metrics
    go on in the run's process. The reports step then takes them over (``monitoring_reports``).
    Without the helper, or without a reference yet, or in a run that does not draw the day's
    reports, nothing is begun. The worker ends once it has drawn them, handing them back to the
    helper, which keeps them until the reports step.
    """
    settings = pipeline.settings
    warehouse = pipeline.data_path("warehouse")
    if (
        not helper.started
        or REPORTS not in context.job_def.asset_layer.selected_asset_keys
        or not Path(f"{warehouse}/{REFERENCE_FILE}").exists()
    ):
        return False
    day = context.partition_key
    helper.begin(early_key(day), _draw_early, settings, day, warehouse)
    return True


def _draw_early(settings: Settings, day: str, warehouse: str) -> EarlyDrift:
    """Draws the day's drift reports from the stored day and the reference.

    Reads only the day's model versions, as codes, and its sampled rows (``drift_inputs``), so
    the worker stays small. The sample is the one the reports step would take from the labeled
    day, whose rows are the day's predictions in the same order. In a day of up to
    ``SIDE_BY_SIDE_ROWS`` predictions the versions are drawn side by side, in workers forked from
    this one (``reports.workers``), as the reports step draws them: one worker could use no more
    than one core, and at 1M predictions, once the metrics are done, the run waits on these
    reports with a core idle.
    """
    # Behind the run's own work: the workers take the time the run's process leaves free.
    os.nice(EARLY_NICENESS)
    numeric, categorical = drift_columns(settings)
    reference = storage.read_parquet(
        f"{warehouse}/{REFERENCE_FILE}",
        ["model_version", *numeric, *categorical],
        only_present=True,  # the reference's columns only: not its ids, labels and feedback
    )
    inputs = drift_inputs(settings, day, warehouse, reference)
    workers = settings.reports.workers or parallel.default_workers()
    if sum(rows for rows, _ in inputs.values()) > SIDE_BY_SIDE_ROWS:
        workers = 1
    drawn = parallel.forked_map(_timed_drift, [job for _, job in inputs.values()], workers)
    out = EarlyDrift({}, {})
    for (version, (rows, _)), made in zip(inputs.items(), drawn, strict=True):
        out.reports[version] = made
        out.rows[version] = rows
    return out


def _timed_drift(job: reports.DriftInput) -> tuple[reports.DayReport, float]:
    """A version's drift report, and the seconds it took to draw."""
    start = time.perf_counter()
    return reports.draw_drift(job), time.perf_counter() - start


def drift_inputs(
    settings: Settings, day: str, warehouse: str, reference: pd.DataFrame
) -> dict[str, tuple[int, reports.DriftInput]]:
    """Each model version's rows in a stored day, and its drift input: only its sample is read.

    What the drift drawn early is drawn from (``_draw_early``); the same rows as the reports
    step samples from the labeled day. The nightly benchmark times reading them and drawing
    apart (``bench/compare.py``).

    Args:
        settings: the drift columns and the sampling.
        day: the day, ``YYYY-MM-DD``.
        warehouse: where the inference day is stored.
        reference: every version's reference rows (the drift columns and ``model_version``).
    """
    path = storage.partition_path(warehouse, "inference_log", day)
    codes, versions = storage.read_codes(path, "model_version")
    out = {}
    for code, version in enumerate(versions):
        at = np.flatnonzero(codes == code)
        out[str(version)] = (
            len(at),
            _drift_of_stored_day(path, at, reference, settings, day, version),
        )
    return out


def _drift_of_stored_day(
    path: str,
    at: np.ndarray,
    reference: pd.DataFrame,
    settings: Settings,
    day: str,
    version: str,
) -> reports.DriftInput:
    """A version's drift input from a stored day: only its sampled rows are read.

    Args:
        path: the stored day (the inference log's, or the labeled predictions': the same rows
            in the same order, so the same sample).
        at: the version's rows in the day.
        reference: every version's reference rows.
        settings: the drift columns and the sampling.
        day: the day.
        version: the model version.
    """
    numeric, categorical = drift_columns(settings)
    sample_rows, seed = settings.reports.sample_rows, settings.reports.seed
    own = at[reports.sample_positions(len(at), sample_rows, reports.day_seed(seed, day, version))]
    return reports.drift_input(
        storage.read_rows(path, [*numeric, *categorical], own),
        _reference_for(reference, version),
        numeric,
        categorical,
        day=day,
        model_version=version,
        sample_rows=sample_rows,
        seed=seed,
        rows=len(at),
    )


def early_drift(key: str) -> tuple[dict[str, int] | None, str | None]:
    """Waits for the drift reports begun under ``key``: each version's rows, or why there are none.

    The reports stay in this process (``draw_versions`` takes them). Work that failed is
    dropped, and its reason returned: the reports step then draws the drift itself.
    """
    if not parallel.begun(key):
        return None, None
    try:
        return cast(EarlyDrift, parallel.wait(key)).rows, None
    except Exception as error:
        parallel.discard(key)
        return None, f"{type(error).__name__}: {error}"


def _take_early(
    context: dg.AssetExecutionContext,
    helper: Helper,
    day: str,
    codes: np.ndarray,
    versions: pd.Index,
    reference_data: pd.DataFrame | None,
) -> str | None:
    """The key of the day's drift reports drawn early, if they match the labeled day; else None.

    They match when they cover the same versions with the same rows each: the labeled day is
    the day's predictions in order, so the rows sampled are the same. Otherwise (or if they
    failed) they are dropped, and the step draws the drift itself.
    """
    key = early_key(day)
    if not helper.begun(key):
        return None
    rows, problem = helper.call(early_drift, key)
    counts = np.bincount(codes, minlength=len(versions))
    own = {str(v): int(n) for v, n in zip(versions, counts, strict=True)}
    if rows == own and reference_data is not None and len(reference_data):
        return key
    if problem:
        context.log.warning(f"the drift reports begun early failed ({problem}): drawn again")
    elif rows is not None:
        context.log.warning(f"the drift reports begun early cover {rows}, not {own}: drawn again")
    helper.call(parallel.discard, key)
    return None


def _reference_for(reference: pd.DataFrame, version: str) -> pd.DataFrame:
    own = reference[reference["model_version"].astype(str) == version]
    return own if len(own) >= MIN_REFERENCE_ROWS else reference


@dg.asset(
    partitions_def=daily_partitions,
    group_name="monitoring",
    kinds={"evidently", "mlflow"},
    ins={
        # Not the features: the drift reports read their sampled rows of the stored day.
        "labeled_predictions": dg.AssetIn(
            metadata={"columns": ["model_version", "score", "label"]}
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
    labeled = storage.partition_path(pipeline.data_path("warehouse"), "labeled_predictions", day)
    codes, versions = pd.factorize(labeled_predictions["model_version"], sort=True)
    known = labeled_predictions["label"].notna().to_numpy()
    summaries = {str(v): _summary(performance_metrics, str(v)) for v in versions}
    early = _take_early(context, helper, day, codes, versions, reference_data)
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
        if early is None and reference_data is not None and len(reference_data):
            drift = _drift_of_stored_day(labeled, at, reference_data, settings, day, version)
        quality = reports.quality_input(
            labeled_predictions, settings.score_cutoff, at=at[known[at]], **sampling
        )
        summary = reports.summary_input(summaries[version], day=day, model_version=version)
        jobs.append(VersionJob(version, day, drift, quality, summary))
    workers = settings.reports.workers or parallel.default_workers()
    with timed("versions"):
        drawn = helper.call(draw_versions, jobs, settings, directory, workers, early)
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
    metadata["drift_drawn_early"] = early is not None
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
