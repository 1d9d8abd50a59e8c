"""Checks that attribution neither lost nor doubled anything."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.labeling.assets import attributed_feedback, labeled_predictions
from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import quarantine
from feedback_pipeline.lib.attribution import STATUSES, feedback_counts


@dg.asset_check(
    asset=attributed_feedback,
    name="feedback_is_conserved",
    partitions_def=daily_partitions,
    blocking=True,
    additional_ins={"feedback_events": dg.AssetIn()},
)
def feedback_is_conserved(
    context: dg.AssetCheckExecutionContext,
    pipeline: PipelineSettings,
    attributed_feedback: pd.DataFrame,
    feedback_events: pd.DataFrame,
) -> dg.AssetCheckResult:
    """Every event of the day is attributed, late or orphaned exactly once, or a duplicate.

    Duplicates never reach attribution: ingestion quarantines them, and they are counted here
    from the day's quarantine so that events received = attributed + late + orphaned + duplicate.
    """
    counts = feedback_counts(attributed_feedback)
    same_events = set(attributed_feedback["feedback_id"]) == set(feedback_events["feedback_id"])
    held = quarantine.load(
        pipeline.data_path("quarantine"), "feedback_events", context.partition_key
    )
    duplicates = int((held["check"] == "duplicate_id").sum()) if len(held) else 0
    return dg.AssetCheckResult(
        passed=bool(
            sum(counts.values()) == len(feedback_events)
            and attributed_feedback["status"].isin(STATUSES).all()
            and attributed_feedback["feedback_id"].is_unique
            and same_events
        ),
        metadata={
            "events_received": len(feedback_events) + duplicates,
            "events_in": len(feedback_events),
            **{f"events_{k}": v for k, v in counts.items()},
            "events_duplicate": duplicates,
        },
    )


@dg.asset_check(
    asset=labeled_predictions,
    name="one_row_per_prediction",
    partitions_def=daily_partitions,
    blocking=True,
    additional_ins={"inference_log": dg.AssetIn()},
)
def one_row_per_prediction(
    labeled_predictions: pd.DataFrame, inference_log: pd.DataFrame
) -> dg.AssetCheckResult:
    """The labeled dataset has exactly the day's predictions, each once."""
    ids = labeled_predictions["prediction_id"]
    return dg.AssetCheckResult(
        passed=bool(ids.is_unique and set(ids) == set(inference_log["prediction_id"])),
        metadata={"rows": len(labeled_predictions), "predictions": len(inference_log)},
    )
