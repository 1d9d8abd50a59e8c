"""How the model really did: realized performance per day, version and segment."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import OPTIONAL_INPUT_METADATA, daily_partitions
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib.attribution import KIND_COLUMNS, day_maturity
from feedback_pipeline.lib.estimation import Calibrator, fit_calibrator
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.metrics import performance_metrics as compute_metrics
from feedback_pipeline.lib.parallel import default_workers
from feedback_pipeline.lib.quality import coverage_bias
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.lib.storage import day_end

HEADLINE = [
    "n_predictions",
    "accuracy",
    "estimated_accuracy",
    "estimation_error_accuracy",
    "roc_auc",
    "estimated_roc_auc",
    "estimation_error_roc_auc",
    "f1",
    "label_coverage",
    "n_labeled",
    "latency_p95_ms",
    "thumbs_up_share",
    "mean_rating",
    "negative_feedback_share",
    "click_rate",
    "conversion_rate",
    "comment_sentiment",
    "business_value",
    "n_thumbs",
    "n_ratings",
]
# What the metrics read of a labeled day: not its features.
METRICS_COLUMNS = [
    "model_version",
    "score",
    "latency_ms",
    "label",
    "label_status",
    "as_of",
    *KIND_COLUMNS.values(),
]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="monitoring",
    kinds={"pandas", "scikitlearn"},
    ins={
        "labeled_predictions": dg.AssetIn(
            metadata={"columns": METRICS_COLUMNS, "settings_columns": ["segments"]}
        ),
        "reference_data": dg.AssetIn(metadata=OPTIONAL_INPUT_METADATA),
    },
)
def performance_metrics(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    labeled_predictions: pd.DataFrame,
    reference_data: pd.DataFrame | None,
) -> dg.Output[pd.DataFrame]:
    """Realized and estimated metrics, latency and feedback rates per model version and segment.

    Estimated performance (CBPE) needs the reference period's calibration; until the reference
    has been built, or while it holds too few labels, the estimated columns are missing.
    """
    settings = pipeline.settings
    table, calibrator, maturity = measure_day(
        labeled_predictions, reference_data, settings, context.partition_key
    )
    if calibrator is None:
        context.log.info("no calibration yet: estimated performance is left out")
    overall = table[(table["model_version"] == ALL) & (table["segment"] == ALL)].iloc[0]
    per_version = table[(table["model_version"] != ALL) & (table["segment"] == ALL)]
    metadata: dict = {k: _number(overall[k]) for k in HEADLINE}
    for _, row in per_version.iterrows():
        for key in ("accuracy", "estimated_accuracy", "roc_auc", "latency_p95_ms", "n_labeled"):
            metadata[f"{key}__{row['model_version']}"] = _number(row[key])
    biased = table[table["coverage_biased"]]
    metadata |= {
        "maturity": maturity,
        "calibration": dg.MetadataValue.json(calibrator.rows if calibrator else {}),
        "coverage_biased_slices": dg.MetadataValue.json(
            [f"{r.model_version}/{r.segment}: {r.coverage_ratio:.2f}" for r in biased.itertuples()]
        ),
        "score_cutoff": settings.score_cutoff,
        "missing_feedback_policy": settings.missing_feedback_policy.value,
    }
    return dg.Output(table, metadata=metadata)


def measure_day(
    labeled: pd.DataFrame,
    reference: pd.DataFrame | None,
    settings: Settings,
    day: str,
    workers: int | None = None,
) -> tuple[pd.DataFrame, Calibrator | None, str]:
    """The day's metrics table, the calibration it was estimated with, and the day's maturity.

    What ``performance_metrics`` does between reading its inputs and writing its table (the
    nightly benchmark also times it alone, see ``bench/compare.py``).

    Args:
        labeled: the day's labeled predictions (``METRICS_COLUMNS`` and the segments).
        reference: the reference data, if it has been built.
        settings: the pipeline's settings.
        day: the day, ``YYYY-MM-DD``.
        workers: processes measuring the slices side by side (default: the cores).
    """
    end = day_end(day)
    as_of = labeled["as_of"].max() if len(labeled) else end
    maturity = day_maturity(end, settings, as_of)
    calibrator = fit_calibrator(reference) if reference is not None else None
    workers = default_workers() if workers is None else workers
    measured = compute_metrics(labeled, settings, maturity, calibrator, workers)
    table = coverage_bias(measured, settings)
    table.insert(0, "date", day)
    return table, calibrator, maturity


def _number(value: object) -> float | None:
    """Metadata wants plain numbers; a missing metric stays missing."""
    return None if pd.isna(value) else float(value)  # type: ignore[arg-type]
