"""Great Expectations on each day's labeled dataset, one asset check per expectation group."""

import dagster as dg

from feedback_pipeline.defs.labeling.assets import labeled_predictions
from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import HELPER_CHECK_TAGS, Helper, PipelineSettings
from feedback_pipeline.lib import expectations
from feedback_pipeline.lib.attribution import day_maturity
from feedback_pipeline.lib.storage import day_end

LABELED_CHECKS = [
    "prediction_ids_are_unique",
    "label_share_within_bounds",
    "label_coverage_above_floor",
]


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=labeled_predictions, partitions_def=daily_partitions)
        for name in LABELED_CHECKS
    ],
    name="labeled_expectations",
    op_tags=HELPER_CHECK_TAGS,
)
def labeled_expectations(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineSettings, helper: Helper
):
    """One row per prediction, a plausible class balance, and enough labels once final.

    The ids are counted here; the helper runs the expectations on the count and the labels.
    """
    settings = pipeline.settings
    labeled_predictions = pipeline.stored(
        "labeled_predictions", context.partition_key, ["prediction_id", "label", "as_of"]
    )
    end = day_end(context.partition_key)
    as_of = labeled_predictions["as_of"].max() if len(labeled_predictions) else end
    final = day_maturity(end, settings, as_of) == "final"
    outcomes = helper.call(
        expectations.labeled_outcomes,
        expectations.repeated_ids(labeled_predictions["prediction_id"]),
        labeled_predictions["label"],
        final,
        settings.data_quality,
    )
    for outcome in outcomes:
        yield dg.AssetCheckResult(
            asset_key="labeled_predictions",
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"great_expectations": dg.MetadataValue.json(outcome.summary)},
        )
