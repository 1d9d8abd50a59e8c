"""The data a retraining learns from, written as a versioned, point-in-time dataset."""

import dagster as dg
import fsspec
import pandas as pd

from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.training import dataset_version, training_rows


def _recent_days(pipeline: PipelineSettings, n: int) -> dict[str, pd.DataFrame]:
    root = pipeline.data_path("warehouse")
    fs, path = fsspec.core.url_to_fs(f"{root}/labeled_predictions")
    folders = sorted(p.rsplit("date=", 1)[-1] for p in fs.glob(f"{path}/date=*"))
    days = folders[-n:]
    return {
        day: storage.read_parquet(storage.partition_path(root, "labeled_predictions", day))
        for day in days
    }


@dg.asset(
    group_name="training",
    kinds={"pandas", "parquet"},
    deps=[dg.AssetKey("labeled_predictions")],
)
def training_dataset(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """Labeled predictions of the most recent days, as a versioned Parquet dataset."""
    settings = pipeline.settings
    cols = settings.inference_columns
    days = _recent_days(pipeline, settings.training.days)
    rows = training_rows(days, cols.features + cols.categorical_features + cols.segments)
    version = dataset_version(rows)
    path = f"{pipeline.data_path('training')}/datasets/version={version}/part-0.parquet"
    storage.write_parquet(rows, path)
    balance = rows["label"].mean() if len(rows) else float("nan")
    return dg.MaterializeResult(
        metadata={
            "dataset_version": version,
            "path": dg.MetadataValue.path(path),
            "partitions": dg.MetadataValue.json(sorted(days)),
            "feedback_cutoff": str(rows["as_of"].max()) if len(rows) else "none",
            "n_rows": len(rows),
            "positive_share": float(balance) if len(rows) else None,
        }
    )
