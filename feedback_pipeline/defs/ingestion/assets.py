"""Landing files in, validated day partitions and their quarantine out."""

from collections.abc import Callable

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.partitions import daily_partitions, partition_day
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import privacy, quarantine, storage
from feedback_pipeline.lib.ingestion import IngestResult, ingest_feedback, ingest_inferences


def quarantine_path(pipeline: PipelineSettings, asset: str, day: str) -> str:
    """Where an asset's quarantined rows of one day are kept."""
    return storage.partition_path(pipeline.data_path("quarantine"), asset, day)


def _column_schema(dtypes: pd.Series) -> dg.TableSchema:
    """The day's columns and their types, as Dagster shows them.

    Built here, in a frame that holds nothing but the types: the first ``TableSchema`` of a
    process compiles its constructor with the caller's local variables as its namespace and
    keeps them, which from ``_ingest_day`` kept the whole first ingested day alive to the end
    of the run (3 GiB of a 10M-prediction night).
    """
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in dtypes.items()])


def _ingest_day(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    ingest: Callable[..., IngestResult],
    id_column: str,
) -> dg.Output[pd.DataFrame]:
    settings, day, asset = pipeline.settings, partition_day(context), context.asset_key.path[-1]
    earlier = storage.days_before(day, settings.dedupe_lookback_days)
    seen = storage.columns_of_days(pipeline.data_path("warehouse"), asset, earlier, [id_column])
    corrections = quarantine.load_corrections(
        pipeline.data_path("corrections"), asset, context.partition_key
    )
    result = ingest(settings, day, seen_ids=pd.Index(seen[id_column]), corrections=corrections)
    storage.write_parquet(
        result.quarantine, quarantine_path(pipeline, asset, context.partition_key)
    )
    for row in result.quarantine.head(5).to_dict(orient="records"):
        # The message quotes the offending value; with personal columns, logs leave it out.
        text = (
            f"{row['source_file']} row {row['source_row']}: {row['column']} failed {row['check']}"
            if privacy.enabled(settings)
            else row["message"]
        )
        context.log.info(f"quarantined {text}")
    n_in = len(result.valid) + len(result.quarantine)
    return dg.Output(
        result.valid,
        metadata={
            "rows_in": n_in,
            "rows_valid": len(result.valid),
            "rows_quarantined": len(result.quarantine),
            "quarantined_share": len(result.quarantine) / n_in if n_in else 0.0,
            "files": dg.MetadataValue.json(result.files.to_dict(orient="records")),
            "files_unreadable": int((~result.files["readable"].astype(bool)).sum()),
            "corrections_applied": len(corrections),
            "top_reasons": dg.MetadataValue.json(result.top_reasons),
            "dagster/column_schema": _column_schema(result.valid.dtypes),
            "dagster/row_count": len(result.valid),
        },
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    # Its rows' ids are fingerprinted as stored: a labeled day, which extends this one, then
    # knows whether these are still the rows it was made on (``storage.write_parquet``).
    metadata={"rows_key": "prediction_id"},
)
def inference_log(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.Output[pd.DataFrame]:
    """Every valid prediction served on the day, in canonical columns, one row per prediction id."""
    return _ingest_day(context, pipeline, ingest_inferences, "prediction_id")


@dg.asset(
    partitions_def=daily_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    # Fingerprinted as stored, like the inference day: the attributed day extends this one.
    metadata={"rows_key": "feedback_id"},
)
def feedback_events(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.Output[pd.DataFrame]:
    """Every valid feedback event received on the day, one row per feedback id."""
    return _ingest_day(context, pipeline, ingest_feedback, "feedback_id")
