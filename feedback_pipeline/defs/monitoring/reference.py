"""The reference period: what drift is measured against and what calibrates estimated scores."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import REACH_INPUT_METADATA, by_partition, reference_days
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib.storage import day_end

# Feedback columns of a labeled prediction that a reference has no use for.
DROPPED = ["as_of", "label_source", "feedback_delay_s", "n_feedback", "contradictory"]
SEED = 0


@dg.asset(
    group_name="reference",
    kinds={"pandas", "parquet"},
    ins={
        "labeled_predictions": dg.AssetIn(
            partition_mapping=reference_days, metadata=REACH_INPUT_METADATA
        )
    },
)
def reference_data(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings, labeled_predictions: object
) -> dg.Output[pd.DataFrame]:
    """A seeded sample of the reference window's labeled predictions.

    Drift is measured against its features and scores, and its labeled rows calibrate the scores
    for estimated performance. Until the window's labels have matured it is refreshed each night;
    a promoted champion's training data replaces it.
    """
    settings = pipeline.settings
    days = by_partition(context, "labeled_predictions", labeled_predictions)
    if not days:
        raise dg.Failure(
            "none of the reference window's days has labeled predictions yet: "
            f"{settings.reference_window.start} for {settings.reference_window.days} days"
        )
    final = all(
        len(f) == 0 or f["as_of"].min() >= day_end(day) + settings.longest_window
        for day, f in days.items()
    )
    frame = pd.concat([f.assign(date=day) for day, f in days.items()], ignore_index=True).drop(
        columns=DROPPED, errors="ignore"
    )
    rows = settings.reference_window.sample_rows
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=SEED).sort_index().reset_index(drop=True)
    labeled = frame["label"].notna()
    return dg.Output(
        frame,
        metadata={
            "source": "reference_window",
            "days": dg.MetadataValue.json(sorted(days)),
            "rows": len(frame),
            "labeled_rows": int(labeled.sum()),
            "positive_share": float(frame.loc[labeled, "label"].mean()) if labeled.any() else None,
            "labels_final": final,
            "complete": final and len(days) == settings.reference_window.days,
            "dagster/row_count": len(frame),
        },
    )
