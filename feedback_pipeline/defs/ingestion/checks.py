"""Checks that ingestion kept every row: valid or quarantined, never lost."""

import dagster as dg

from feedback_pipeline.defs.ingestion.assets import feedback_events, inference_log, quarantine_path
from feedback_pipeline.defs.ingestion.expectations import begin_inference_expectations
from feedback_pipeline.defs.partitions import daily_partitions, partition_day
from feedback_pipeline.defs.resources import Helper, PipelineSettings
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.ingestion import FILE_ROW, conservation
from feedback_pipeline.lib.landing import landing_files


def _conserved(
    context: dg.AssetCheckExecutionContext,
    pipeline: PipelineSettings,
    asset: str,
    landing: str,
) -> dg.AssetCheckResult:
    settings, day = pipeline.settings, context.partition_key
    paths = landing_files(settings.resolve(landing), partition_day(context))
    valid = pipeline.stored(asset, day, [FILE_ROW])
    quarantine = storage.read_parquet(
        quarantine_path(pipeline, asset, day), ["source_file", "check"]
    )
    table = conservation(paths, valid, quarantine)
    broken = table[~table["conserved"]]
    return dg.AssetCheckResult(
        passed=bool(
            broken.empty
            and len(valid) + len(quarantine) == table["valid"].sum() + table["quarantined"].sum()
        ),
        metadata={
            "files": len(table),
            "rows_in": int(table["rows_in"].fillna(0).sum()),
            "rows_valid": len(valid),
            "rows_quarantined": len(quarantine),
            "files_not_conserved": dg.MetadataValue.json(broken.to_dict(orient="records")),
        },
    )


@dg.asset_check(
    asset=inference_log, name="rows_are_conserved", partitions_def=daily_partitions, blocking=True
)
def inference_rows_are_conserved(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
) -> dg.AssetCheckResult:
    """Every row of every landing file of the day is either in the log or in quarantine.

    The day is stored by now: this first of its checks begins its Great Expectations on the
    spare core (``begin_inference_expectations``).
    """
    begin_inference_expectations(context, helper, pipeline)
    landing = pipeline.settings.landing.inferences
    return _conserved(context, pipeline, "inference_log", landing)


@dg.asset_check(
    asset=feedback_events, name="rows_are_conserved", partitions_def=daily_partitions, blocking=True
)
def feedback_rows_are_conserved(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """Every row of every feedback file of the day is either an event or in quarantine."""
    landing = pipeline.settings.landing.feedback
    return _conserved(context, pipeline, "feedback_events", landing)


def _quarantine_share(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, asset: str
) -> dg.AssetCheckResult:
    limits, day = pipeline.settings.quarantine, context.partition_key
    n_valid = pipeline.stored_rows(asset, day)
    n_bad = storage.parquet_rows(quarantine_path(pipeline, asset, day))
    share = n_bad / (n_bad + n_valid) if n_bad + n_valid else 0.0
    severity = dg.AssetCheckSeverity.WARN if share <= limits.error_share else None
    return dg.AssetCheckResult(
        passed=share <= limits.warn_share,
        severity=severity or dg.AssetCheckSeverity.ERROR,
        metadata={
            "quarantined_share": share,
            "warn_share": limits.warn_share,
            "error_share": limits.error_share,
            "rows_quarantined": n_bad,
        },
    )


@dg.asset_check(
    asset=inference_log, name="quarantined_share_below_ceiling", partitions_def=daily_partitions
)
def inference_quarantine_share(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """Few enough of the day's prediction rows were quarantined (warn, then error, above)."""
    return _quarantine_share(context, pipeline, "inference_log")


@dg.asset_check(
    asset=feedback_events, name="quarantined_share_below_ceiling", partitions_def=daily_partitions
)
def feedback_quarantine_share(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """Few enough of the day's feedback rows were quarantined (warn, then error, above)."""
    return _quarantine_share(context, pipeline, "feedback_events")


def _landing_exists(
    context: dg.AssetCheckExecutionContext, root: str, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    paths = landing_files(root, partition_day(context))
    return dg.AssetCheckResult(
        passed=bool(paths),
        severity=severity,
        metadata={"landing_files": len(paths), "folder": f"{root}/date={context.partition_key}"},
    )


@dg.asset_check(asset=inference_log, name="landing_data_exists", partitions_def=daily_partitions)
def inference_landing_exists(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """The day's inference log arrived: its landing folder holds at least one file."""
    root = pipeline.settings.resolve(pipeline.settings.landing.inferences)
    return _landing_exists(context, root, dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=feedback_events, name="landing_data_exists", partitions_def=daily_partitions)
def feedback_landing_exists(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings
) -> dg.AssetCheckResult:
    """Some feedback arrived on the day (a quiet day is a warning, not an error)."""
    root = pipeline.settings.resolve(pipeline.settings.landing.feedback)
    return _landing_exists(context, root, dg.AssetCheckSeverity.WARN)
