"""The daily labeling queue: where a label would teach the model most."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import labeling_queue as queue
from feedback_pipeline.lib import privacy, storage

# What the queue is chosen on besides the ids and scores: the strata (the segments by default).
# The features shown are read for the chosen rows only.
QUEUED = ["segments"]


@dg.asset(
    partitions_def=daily_partitions,
    group_name="labeling",
    kinds={"pandas", "csv", "json"},
    ins={
        "labeled_predictions": dg.AssetIn(
            metadata={
                "columns": [*queue.QUEUE_COLUMNS[2:], "score", "label_status"],
                "settings_columns": QUEUED,
            }
        )
    },
)
def labeling_queue(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    labeled_predictions: pd.DataFrame,
) -> dg.MaterializeResult:
    """The day's most uncertain unlabeled predictions, spread over the segments.

    Written under ``labeling_queue/date=<day>/`` as ``queue.csv``, as Label Studio tasks
    (``tasks.json``, the model's guess as a pre-annotation) and the labeling configuration they go
    with (``label_config.xml``). Labels given there come back as feedback of kind ``label``.
    """
    settings = pipeline.settings
    config = settings.labeling_queue
    strata = (
        config.stratify_by
        if config.stratify_by is not None
        else settings.inference_columns.segments
    )
    features = [
        *settings.inference_columns.features,
        *settings.inference_columns.categorical_features,
    ]
    # Strata may name features, which the input does not read for every row.
    absent = [c for c in strata if c not in labeled_predictions]
    if absent:
        more = pipeline.stored("labeled_predictions", context.partition_key, absent)
        labeled_predictions = pd.concat([labeled_predictions, more], axis=1)
    day = storage.partition_path(
        pipeline.data_path("warehouse"), "labeled_predictions", context.partition_key
    )
    chosen = queue.select(
        labeled_predictions,
        config.per_day,
        list(strata),
        settings.score_cutoff,
        features,
        fetch=lambda rows, columns: storage.read_rows(day, columns, rows),
    )
    # What goes to a labeling tool leaves the pipeline: personal columns as pseudonyms.
    chosen = privacy.frame(chosen, settings)
    directory = queue.day_directory(pipeline.data_path(config.directory), context.partition_key)
    paths = queue.write(chosen, directory, settings.score_cutoff, features)
    open_rows = int((labeled_predictions["label_status"] != "labeled").sum())
    return dg.MaterializeResult(
        metadata={
            "n_queued": len(chosen),
            "n_unlabeled": open_rows,
            "strata": dg.MetadataValue.json(
                {str(k): int(v) for k, v in chosen["stratum"].value_counts().items()}
            ),
            "mean_uncertainty": float(chosen["uncertainty"].mean()) if len(chosen) else None,
            "min_uncertainty": float(chosen["uncertainty"].min()) if len(chosen) else None,
            "csv": dg.MetadataValue.path(paths["csv"]),
            "label_studio_tasks": dg.MetadataValue.path(paths["tasks"]),
            "label_config": dg.MetadataValue.path(paths["label_config"]),
            "dagster/row_count": len(chosen),
        }
    )
