"""Great Expectations on each day's labeled dataset, one asset check per expectation group."""

from typing import cast

import dagster as dg

from feedback_pipeline.defs.ingestion.expectations import result
from feedback_pipeline.defs.labeling.assets import labeled_predictions
from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.resources import HELPER_CHECK_TAGS, Helper, PipelineSettings
from feedback_pipeline.lib import expectations, storage
from feedback_pipeline.lib.attribution import day_maturity
from feedback_pipeline.lib.expectations import Outcome
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.lib.storage import day_end

LABELED_CHECKS = [
    "prediction_ids_are_unique",
    "label_share_within_bounds",
    "label_coverage_above_floor",
]


def labeled_key(day: str) -> str:
    """The key under which the day's labeled expectations are begun (``Helper.start``)."""
    return f"labeled expectations {day}"


def labeled_day_outcomes(
    settings: Settings, warehouse: str, day: str, repeated_ids: int
) -> list[Outcome]:
    """The labeled day's expectations: its labels read and counted, then judged.

    The repeated ids are counted by the caller: counting them uses polars, which a process
    forked after polars started its threads (the helper and its workers) cannot use.
    """
    path = storage.partition_path(warehouse, "labeled_predictions", day)
    labeled = storage.read_parquet(path, columns=["label", "as_of"])
    end = day_end(day)
    as_of = labeled["as_of"].max() if len(labeled) else end
    final = day_maturity(end, settings, as_of) == "final"
    counts = expectations.LabelCounts.of_labels(labeled["label"], repeated_ids)
    del labeled
    return expectations.labeled_outcomes(counts, final, settings.data_quality)


def begin_labeled_expectations(
    context: dg.AssetCheckExecutionContext,
    helper: Helper,
    pipeline: PipelineSettings,
    repeated_ids: int,
) -> None:
    """Begins the labeled day's expectations in the helper, if the run has them.

    Like ``begin_inference_expectations``: the labeled day does not change once stored, so its
    expectations are judged on the spare core while metrics and reports go on, and
    ``labeled_expectations`` collects them. ``repeated_ids``: the day's, as counted by
    ``one_row_per_prediction``, which begins them.
    """
    if context.op_execution_context.job_def.has_node_named("labeled_expectations"):
        day = context.partition_key
        warehouse = pipeline.data_path("warehouse")
        helper.start(
            labeled_key(day), labeled_day_outcomes, pipeline.settings, warehouse, day, repeated_ids
        )


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

    The labels are counted, and the expectations judged on the counts, in the helper:
    collected if started earlier in the run (``begin_labeled_expectations``), else done now (the
    repeated ids counted here).
    """
    day, warehouse = context.partition_key, pipeline.data_path("warehouse")
    outcomes = helper.collect(context, labeled_key(day))
    early = outcomes is not None
    if outcomes is None:
        ids = pipeline.stored("labeled_predictions", day, ["prediction_id"])["prediction_id"]
        repeats = expectations.repeated_ids(ids)
        del ids
        outcomes = helper.call(labeled_day_outcomes, pipeline.settings, warehouse, day, repeats)
    for outcome in cast(list[Outcome], outcomes):
        yield result("labeled_predictions", outcome, judged_early=early)
