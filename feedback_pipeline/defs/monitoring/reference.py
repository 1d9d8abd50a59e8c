"""The reference period: what drift is measured against and what calibrates estimated scores."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import REACH_INPUT_METADATA, by_partition, reference_days
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import registry, storage
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.lib.storage import day_end

# Feedback columns of a labeled prediction that a reference has no use for.
DROPPED = ["as_of", "label_source", "feedback_delay_s", "n_feedback", "contradictory"]
SEED = 0


@dg.asset(
    group_name="reference",
    kinds={"pandas", "parquet"},
    # A promotion replaces the reference: in the retraining job it is rebuilt after the gate.
    deps=[dg.AssetKey("model_promotion")],
    ins={
        "labeled_predictions": dg.AssetIn(
            partition_mapping=reference_days, metadata=REACH_INPUT_METADATA
        )
    },
)
def reference_data(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings, labeled_predictions: object
) -> dg.Output[pd.DataFrame]:
    """The champion's training data, or before any promotion the reference window's predictions.

    Drift is measured against its features and scores, and its labeled rows calibrate the scores
    for estimated performance. Until the window's labels have matured it is refreshed each night.
    Once a model is promoted (MLflow alias ``champion``), its training data scored by it replaces
    the window, and only its holdout rows calibrate; a rollback brings the earlier one back.
    A seeded sample of at most ``reference_window.sample_rows`` rows is kept.
    """
    settings = pipeline.settings
    champion = registry.alias(settings, registry.CHAMPION)
    path = champion.tags.get(f"{registry.TAG}reference_path") if champion else None
    if champion is not None and path:
        return _champion_reference(settings, champion, path)
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
    frame = storage.concat([f.assign(date=day) for day, f in days.items()]).drop(
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


def _champion_reference(
    settings: Settings, champion: registry.ModelRef, path: str
) -> dg.Output[pd.DataFrame]:
    frame = storage.read_parquet(path)
    rows = settings.reference_window.sample_rows
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=SEED).sort_index().reset_index(drop=True)
    calibration = frame["calibration"] if "calibration" in frame else frame["label"].notna()
    return dg.Output(
        frame,
        metadata={
            "source": f"champion version {champion.version}",
            "serving_label": champion.serving_label,
            "days": dg.MetadataValue.json(sorted(frame["day"].astype(str).unique().tolist())),
            "rows": len(frame),
            "labeled_rows": int(frame["label"].notna().sum()),
            "calibration_rows": int(calibration.sum()),
            "positive_share": float(frame["label"].mean()),
            "labels_final": True,
            "complete": True,
            "dagster/row_count": len(frame),
        },
    )
