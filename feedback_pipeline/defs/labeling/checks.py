"""Checks that attribution neither lost nor doubled anything."""

import dagster as dg

from feedback_pipeline.defs.labeling.assets import attributed_feedback, labeled_predictions
from feedback_pipeline.defs.labeling.expectations import begin_labeled_expectations
from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import quarantine
from feedback_pipeline.lib.attribution import STATUSES, feedback_counts
from feedback_pipeline.lib.expectations import repeated_ids
from feedback_pipeline.lib.ids import all_among, all_unique


@dg.asset_check(
    asset=attributed_feedback,
    name="feedback_is_conserved",
    partitions_def=daily_partitions,
    blocking=True,
)
def feedback_is_conserved(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """Every event of the day is attributed, late or orphaned exactly once, or a duplicate.

    Duplicates never reach attribution: ingestion quarantines them, and they are counted here
    from the day's quarantine so that events received = attributed + late + orphaned + duplicate.
    """
    day = context.partition_key
    attributed_feedback = pipeline.stored("attributed_feedback", day, ["feedback_id", "status"])
    feedback_events = pipeline.stored("feedback_events", day, ["feedback_id"])
    counts = feedback_counts(attributed_feedback)
    ids = attributed_feedback["feedback_id"]
    same_events = len(ids) == len(feedback_events) and all_among(
        ids, feedback_events["feedback_id"]
    )
    held = quarantine.load(
        pipeline.data_path("quarantine"), "feedback_events", context.partition_key
    )
    duplicates = int((held["check"] == "duplicate_id").sum()) if len(held) else 0
    return dg.AssetCheckResult(
        passed=bool(
            sum(counts.values()) == len(feedback_events)
            and attributed_feedback["status"].isin(STATUSES).all()
            and all_unique(ids)
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
)
def one_row_per_prediction(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
) -> dg.AssetCheckResult:
    """The labeled dataset has exactly the day's predictions, each once.

    The day is stored by now: this check counts its repeated ids and begins its Great
    Expectations with the count, on the spare core (``begin_labeled_expectations``).
    """
    day = context.partition_key
    ids = pipeline.stored("labeled_predictions", day, ["prediction_id"])["prediction_id"]
    repeats = repeated_ids(ids)
    begin_labeled_expectations(context, helper, pipeline, repeats)
    logged = pipeline.stored("inference_log", day, ["prediction_id"])["prediction_id"]
    return dg.AssetCheckResult(
        passed=bool(repeats == 0 and len(ids) == len(logged) and all_among(ids, logged)),
        metadata={"rows": len(ids), "predictions": len(logged), "repeated_ids": repeats},
    )
