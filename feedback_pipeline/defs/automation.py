"""Jobs and the nightly schedule that keeps every day's numbers current."""

import datetime as dt

import dagster as dg

from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.lib.settings import load_settings

# Steps run in the run's own process: a fresh process per step re-imports the whole stack.
daily_monitoring_job = dg.define_asset_job(
    name="daily_monitoring_job",
    selection=dg.AssetSelection.groups("ingestion", "labeling", "monitoring"),
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
    description="Ingest, validate, attribute, label and measure one day.",
)

# Days still inside their window get labeling and monitoring again, not a second ingestion.
RESTATED = [
    dg.AssetKey(name)
    for name in ("attributed_feedback", "labeled_predictions", "performance_metrics")
]


def nightly_partitions(scheduled: dt.datetime, window_days: int) -> tuple[str, list[str]]:
    """Yesterday, and the earlier days still inside their attribution window."""
    yesterday = (scheduled - dt.timedelta(days=1)).date()
    restate = [yesterday - dt.timedelta(days=i) for i in range(window_days, 0, -1)]
    first = dt.date.fromisoformat(daily_partitions.start.date().isoformat())
    return yesterday.isoformat(), [d.isoformat() for d in restate if d >= first]


@dg.schedule(
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=daily_monitoring_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def nightly_monitoring_schedule(context: dg.ScheduleEvaluationContext):
    """Each night: yesterday end to end, then restate the days whose feedback is still arriving."""
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    yesterday, restate = nightly_partitions(scheduled, load_settings().window_days)
    night = scheduled.date().isoformat()
    yield dg.RunRequest(run_key=f"{night}:{yesterday}", partition_key=yesterday)
    for day in restate:
        yield dg.RunRequest(
            run_key=f"{night}:restate:{day}",
            partition_key=day,
            asset_selection=RESTATED,
            tags={"feedback_pipeline/restatement": "true"},
        )
