"""Great Expectations on each day of validated data, one asset check per expectation group."""

import datetime as dt
from typing import cast

import dagster as dg

from feedback_pipeline.defs.ingestion.assets import feedback_events, inference_log
from feedback_pipeline.defs.partitions import daily_partitions, partition_day
from feedback_pipeline.defs.resources import HELPER_CHECK_TAGS, Helper, PipelineSettings
from feedback_pipeline.lib import expectations, storage
from feedback_pipeline.lib.settings import Settings

INFERENCE_CHECKS = [
    "volume_within_trailing_range",
    "model_version_shares_are_stable",
    "score_distribution_is_stable",
    "optional_columns_are_mostly_present",
]
SPECS = [
    dg.AssetCheckSpec(name, asset=inference_log, partitions_def=daily_partitions)
    for name in INFERENCE_CHECKS
]


def result(asset: str, outcome: expectations.Outcome, **more: bool) -> dg.AssetCheckResult:
    """A Great Expectations outcome as a warning check's result; ``more``: metadata to add."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"great_expectations": dg.MetadataValue.json(outcome.summary), **more},
    )


def inference_key(day: str) -> str:
    """The key under which the day's inference expectations are begun (``Helper.start``)."""
    return f"inference expectations {day}"


def inference_outcomes(settings: Settings, warehouse: str, day: str) -> list[expectations.Outcome]:
    """The inference log's expectations on a stored day: its samples read, then judged.

    Only samples of the day and of the trailing days are read (never their ids, which none of
    these expectations looks at), and the volumes come from the Parquet footers.
    """
    rules, cols = settings.data_quality, settings.inference_columns
    optional = ["latency_ms", *cols.segments, *cols.categorical_features, *cols.features]
    rows = storage.parquet_rows(storage.partition_path(warehouse, "inference_log", day))
    today = storage.sample_of_days(
        warehouse, "inference_log", [day], ["model_version", "score", *optional], rules.sample_rows
    )
    before = storage.days_before(dt.date.fromisoformat(day), rules.trailing_days)
    trailing = storage.sample_of_days(
        warehouse, "inference_log", before, ["model_version", "score"], rules.sample_rows
    )
    return expectations.inference_day(
        rows,
        list(storage.row_counts(warehouse, "inference_log", before).values()),
        today,
        trailing,
        optional,
        rules,
    )


def begin_inference_expectations(
    context: dg.AssetCheckExecutionContext, helper: Helper, pipeline: PipelineSettings
) -> None:
    """Begins the day's inference expectations in the helper, if the run has them.

    They only warn, so they run last (``HELPER_CHECK_TAGS``), but the stored day they read
    does not change once ingested: a step that runs after ingestion begins them, and they are
    judged on the spare core while attribution goes on; ``inference_expectations`` collects
    them. Without the helper nothing is begun, and the check does the work itself.
    """
    if context.op_execution_context.job_def.has_node_named("inference_expectations"):
        day = context.partition_key
        warehouse = pipeline.data_path("warehouse")
        helper.start(inference_key(day), inference_outcomes, pipeline.settings, warehouse, day)


@dg.multi_asset_check(
    specs=SPECS,
    name="inference_expectations",
    op_tags=HELPER_CHECK_TAGS,
)
def inference_expectations(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
):
    """Volume, traffic split, score distribution and null shares against the trailing days.

    Judged on samples, in the helper: collected if started earlier in the run
    (``begin_inference_expectations``), else done now.
    """
    day, warehouse = context.partition_key, pipeline.data_path("warehouse")
    outcomes = helper.collect(context, inference_key(day))
    early = outcomes is not None
    if outcomes is None:
        outcomes = helper.call(inference_outcomes, pipeline.settings, warehouse, day)
    for outcome in cast(list[expectations.Outcome], outcomes):
        yield result("inference_log", outcome, judged_early=early)


@dg.asset_check(
    asset=feedback_events,
    name="volume_within_trailing_range",
    partitions_def=daily_partitions,
    op_tags=HELPER_CHECK_TAGS,
)
def feedback_volume(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
) -> dg.AssetCheckResult:
    """The day's feedback volume is within the tolerance around the trailing days' median.

    Every count, today's too, comes from a Parquet footer: the day itself is not read.
    """
    rules = pipeline.settings.data_quality
    before = storage.days_before(partition_day(context), rules.trailing_days)
    counts = storage.row_counts(pipeline.data_path("warehouse"), "feedback_events", before)
    today = pipeline.stored_rows("feedback_events", context.partition_key)
    outcome = helper.call(expectations.volume, today, list(counts.values()), rules)
    return result("feedback_events", outcome)
