"""Landing files in, validated day partitions and their quarantine out."""

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import daily_partitions, partition_day
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.ingestion import IngestResult, ingest_feedback, ingest_inferences


def quarantine_path(pipeline: PipelineSettings, asset: str, day: str) -> str:
    """Where an asset's quarantined rows of one day are kept."""
    return storage.partition_path(pipeline.data_path("quarantine"), asset, day)


def _publish(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings, result: IngestResult
) -> dg.Output[pd.DataFrame]:
    storage.write_parquet(
        result.quarantine,
        quarantine_path(pipeline, context.asset_key.to_user_string(), context.partition_key),
    )
    n_in = len(result.valid) + len(result.quarantine)
    for line in result.quarantine["reason"].head(5):
        context.log.warning(f"quarantined: {line}")
    return dg.Output(
        result.valid,
        metadata={
            "rows_in": n_in,
            "rows_valid": len(result.valid),
            "rows_quarantined": len(result.quarantine),
            "quarantined_share": len(result.quarantine) / n_in if n_in else 0.0,
            "files": dg.MetadataValue.json(result.files.to_dict(orient="records")),
            "files_unreadable": int((~result.files["readable"].astype(bool)).sum()),
            "top_reasons": dg.MetadataValue.json(result.top_reasons),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(str(c), str(t)) for c, t in result.valid.dtypes.items()]
            ),
            "dagster/row_count": len(result.valid),
        },
    )


@dg.asset(partitions_def=daily_partitions, group_name="ingestion", kinds={"pandas", "parquet"})
def inference_log(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.Output[pd.DataFrame]:
    """Every valid prediction served on the day, in canonical columns, one row per prediction id."""
    result = ingest_inferences(pipeline.settings, partition_day(context))
    return _publish(context, pipeline, result)


@dg.asset(partitions_def=daily_partitions, group_name="ingestion", kinds={"pandas", "parquet"})
def feedback_events(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.Output[pd.DataFrame]:
    """Every valid feedback event received on the day, one row per feedback id."""
    result = ingest_feedback(pipeline.settings, partition_day(context))
    return _publish(context, pipeline, result)
