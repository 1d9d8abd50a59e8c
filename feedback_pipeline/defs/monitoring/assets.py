"""How the model really did: realized performance per day, version and segment."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib.attribution import day_maturity
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.metrics import performance_metrics as compute_metrics
from feedback_pipeline.lib.storage import day_end

HEADLINE = [
    "accuracy",
    "roc_auc",
    "f1",
    "label_coverage",
    "n_labeled",
    "latency_p95_ms",
    "thumbs_up_share",
    "mean_rating",
    "negative_feedback_share",
    "click_rate",
    "business_value",
    "n_thumbs",
    "n_ratings",
]


@dg.asset(partitions_def=daily_partitions, group_name="monitoring", kinds={"pandas", "scikitlearn"})
def performance_metrics(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings, labeled_predictions: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    """Realized metrics, latency and feedback rates of the day per model version and segment."""
    settings = pipeline.settings
    end = day_end(context.partition_key)
    as_of = labeled_predictions["as_of"].max() if len(labeled_predictions) else end
    maturity = day_maturity(end, settings, as_of)
    table = compute_metrics(labeled_predictions, settings, maturity)
    table.insert(0, "date", context.partition_key)
    overall = table[(table["model_version"] == ALL) & (table["segment"] == ALL)].iloc[0]
    per_version = table[(table["model_version"] != ALL) & (table["segment"] == ALL)]
    metadata: dict = {k: _number(overall[k]) for k in HEADLINE}
    for _, row in per_version.iterrows():
        for key in ("accuracy", "roc_auc", "latency_p95_ms", "n_labeled"):
            metadata[f"{key}__{row['model_version']}"] = _number(row[key])
    metadata |= {
        "maturity": maturity,
        "score_cutoff": settings.score_cutoff,
        "missing_feedback_policy": settings.missing_feedback_policy.value,
    }
    return dg.Output(table, metadata=metadata)


def _number(value: object) -> float | None:
    """Metadata wants plain numbers; a missing metric stays missing."""
    return None if pd.isna(value) else float(value)  # type: ignore[arg-type]
