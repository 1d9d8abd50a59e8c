"""Checks that attribution neither lost nor doubled anything."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.labeling.assets import attributed_feedback, labeled_predictions
from feedback_pipeline.defs.labeling.expectations import begin_labeled_expectations
from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import quarantine, storage
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
    counts = feedback_counts(attributed_feedback)
    ids = attributed_feedback["feedback_id"]
    events_in, same_events = _same_ids(pipeline, ids, "feedback_events", day, "feedback_id")
    held = quarantine.load(
        pipeline.data_path("quarantine"), "feedback_events", context.partition_key
    )
    duplicates = int((held["check"] == "duplicate_id").sum()) if len(held) else 0
    return dg.AssetCheckResult(
        passed=bool(
            sum(counts.values()) == events_in
            and attributed_feedback["status"].isin(STATUSES).all()
            and all_unique(ids)
            and same_events
        ),
        metadata={
            "events_received": events_in + duplicates,
            "events_in": events_in,
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
    logged, same = _same_ids(pipeline, ids, "inference_log", day, "prediction_id")
    return dg.AssetCheckResult(
        passed=bool(repeats == 0 and same),
        metadata={"rows": len(ids), "predictions": logged, "repeated_ids": repeats},
    )


def _same_ids(
    pipeline: PipelineSettings, ids: pd.Series, asset: str, day: str, key: str
) -> tuple[int, bool]:
    """The rows of a stored day of ``asset``, and whether ``ids`` are its ``key``, in any order.

    First by the fingerprint of its keys the day stores, which ``ids`` match when they are the
    same in the same order (a day extending it, as written); else by reading its keys.
    """
    path = storage.partition_path(pipeline.data_path("warehouse"), asset, day)
    if storage.holds_keys(path, ids):
        return len(ids), True
    theirs = pipeline.stored(asset, day, [key])[key]
    return len(theirs), len(ids) == len(theirs) and all_among(ids, theirs)
