"""Day partitions, and how far feedback reaches across them."""

import datetime as dt

import dagster as dg
import pandas as pd

from feedback_pipeline.lib.settings import load_settings

_SETTINGS = load_settings()

daily_partitions = dg.DailyPartitionsDefinition(start_date=_SETTINGS.start_date.isoformat())

# A prediction day reads the feedback received on it and on the days its windows reach ...
feedback_reach = dg.TimeWindowPartitionMapping(
    start_offset=0, end_offset=_SETTINGS.window_days, allow_nonexistent_upstream_partitions=True
)
# ... and a feedback day reads the predictions its events may be about.
prediction_reach = dg.TimeWindowPartitionMapping(
    start_offset=-_SETTINGS.window_days, end_offset=0, allow_nonexistent_upstream_partitions=True
)
# The reference window's days, read whole by the unpartitioned reference.
reference_days = dg.SpecificPartitionsPartitionMapping(
    [day.isoformat() for day in _SETTINGS.reference_window.dates()]
)
# Upstream days in a reach that have not arrived yet are skipped, not an error.
REACH_INPUT_METADATA = {"allow_missing_partitions": True}
# An unpartitioned input that may not exist yet arrives as None.
OPTIONAL_INPUT_METADATA = {"optional": True}


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    """The calendar day of the partition being computed."""
    return dt.date.fromisoformat(context.partition_key)


def by_partition(
    context: dg.AssetExecutionContext, input_name: str, value: object
) -> dict[str, pd.DataFrame]:
    """A multi-day input as {day: frame}, whether Dagster passed one day, several or none."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(sorted(value.items()))
    (key,) = context.asset_partition_keys_for_input(input_name)
    return {key: value}  # type: ignore[dict-item]
