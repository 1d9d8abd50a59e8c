"""Great Expectations on each day of validated data, one asset check per expectation group."""

import dagster as dg

from feedback_pipeline.defs.ingestion.assets import feedback_events, inference_log
from feedback_pipeline.defs.partitions import daily_partitions, partition_day
from feedback_pipeline.defs.resources import HELPER_CHECK_TAGS, Helper, PipelineSettings
from feedback_pipeline.lib import expectations, storage

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


def _result(asset: str, outcome: expectations.Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"great_expectations": dg.MetadataValue.json(outcome.summary)},
    )


@dg.multi_asset_check(
    specs=SPECS,
    name="inference_expectations",
    op_tags=HELPER_CHECK_TAGS,
)
def inference_expectations(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
):
    """Volume, traffic split, score distribution and null shares against the trailing days.

    Only samples of the day and of the trailing days are read (never their ids, which none of
    these expectations looks at), and the volumes come from the Parquet footers; the helper runs
    the expectations on the samples.
    """
    settings = pipeline.settings
    rules, cols = settings.data_quality, settings.inference_columns
    optional = ["latency_ms", *cols.segments, *cols.categorical_features, *cols.features]
    warehouse = pipeline.data_path("warehouse")
    day = context.partition_key
    rows = pipeline.stored_rows("inference_log", day)
    today = storage.sample_of_days(
        warehouse, "inference_log", [day], ["model_version", "score", *optional], rules.sample_rows
    )
    before = storage.days_before(partition_day(context), rules.trailing_days)
    trailing = storage.sample_of_days(
        warehouse, "inference_log", before, ["model_version", "score"], rules.sample_rows
    )
    for outcome in helper.call(
        expectations.inference_day,
        rows,
        list(storage.row_counts(warehouse, "inference_log", before).values()),
        today,
        trailing,
        optional,
        rules,
    ):
        yield _result("inference_log", outcome)


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
    return _result("feedback_events", outcome)
