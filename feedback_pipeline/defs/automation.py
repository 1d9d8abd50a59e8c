"""Jobs and the nightly schedule that keeps every day's numbers current."""

import datetime as dt

import dagster as dg

from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.policy import evaluate
from feedback_pipeline.lib.settings import load_settings

RETRAINING_TAG = "feedback_pipeline/retraining"
# The assets a restatement re-runs for a day whose feedback is still arriving.
RESTATED_ASSETS = (
    "attributed_feedback",
    "labeled_predictions",
    "performance_metrics",
    "monitoring_reports",
)
METRICS = dg.AssetKey("performance_metrics")
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

# Steps run in the run's own process: a fresh process per step re-imports the whole stack.
daily_monitoring_job = dg.define_asset_job(
    name="daily_monitoring_job",
    selection=dg.AssetSelection.groups("ingestion", "labeling", "monitoring"),
    executor_def=dg.in_process_executor,
    description="Ingest, validate, attribute, label and measure one day.",
)

# Days still inside their window get labeling and monitoring again, not a second ingestion.
RESTATED = [dg.AssetKey(name) for name in RESTATED_ASSETS]


def nightly_partitions(scheduled: dt.datetime, window_days: int) -> tuple[str, list[str]]:
    """Yesterday, and the earlier days still inside their attribution window."""
    yesterday = (scheduled - dt.timedelta(days=1)).date()
    first = daily_partitions.start.date().isoformat()
    restate = storage.days_before(yesterday, window_days)
    return yesterday.isoformat(), [d for d in restate if d >= first]


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


reference_job = dg.define_asset_job(
    name="reference_job",
    selection=dg.AssetSelection.assets("reference_data"),
    executor_def=dg.in_process_executor,
    description="Rebuild the drift reference and score calibration from the reference window.",
)


def reference_still_maturing(night: dt.date) -> bool:
    """Whether the reference window's labels may still change on the given night."""
    settings = load_settings()
    last = settings.reference_window.dates()[-1]
    return night <= storage.day_end(last).date() + dt.timedelta(days=settings.window_days)


@dg.schedule(
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    job=reference_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def reference_refresh_schedule(context: dg.ScheduleEvaluationContext):
    """Each night until the reference window's labels have matured, rebuild the reference."""
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    if not reference_still_maturing(scheduled.date()):
        return dg.SkipReason(
            "the reference window's labels are final; only a new champion replaces the reference"
        )
    return dg.RunRequest(run_key=f"reference:{scheduled.date().isoformat()}")


# The tag is limited to one run at a time in dagster.yaml: at most one retraining in flight.
retraining_job = dg.define_asset_job(
    name="retraining_job",
    selection=dg.AssetSelection.groups("training"),
    executor_def=dg.in_process_executor,
    tags={RETRAINING_TAG: "true"},
    description="Build a training dataset from matured feedback and train a challenger.",
)


def _baseline_accuracy(instance: dg.DagsterInstance) -> float | None:
    reference = load_settings().reference_window
    days = storage.days_before(reference.start + dt.timedelta(days=reference.days), reference.days)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=METRICS, asset_partitions=days), limit=len(days) * 4
    ).records
    latest: dict[str, float] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        materialization = record.asset_materialization
        value = materialization.metadata.get("accuracy") if materialization else None
        if materialization and value is not None and value.value is not None:
            latest[str(materialization.partition)] = float(value.value)  # type: ignore[arg-type]
    return sum(latest.values()) / len(latest) if latest else None


@dg.sensor(
    job=retraining_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def retrain_on_feedback_breach(context: dg.SensorEvaluationContext):
    """Requests a retraining when the latest day's realized numbers breach a retraining rule."""
    rules = load_settings().retraining
    event = context.instance.get_latest_materialization_event(METRICS)
    materialization = event.asset_materialization if event else None
    if materialization is None or materialization.partition is None:
        return dg.SkipReason("no day of performance_metrics has been materialized yet")
    day = materialization.partition
    active = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=retraining_job.name, statuses=IN_FLIGHT), limit=1
    )
    if active:
        return dg.SkipReason(f"retraining run {active[0].run_id} is still in flight")
    last = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=retraining_job.name), limit=1
    )
    if last:
        since = dt.datetime.now(dt.UTC) - last[0].create_timestamp
        if since < rules.cooldown:
            return dg.SkipReason(
                f"cooldown: the last retraining was {since} ago, less than {rules.cooldown}"
            )
    values = {k: v.value for k, v in materialization.metadata.items()}
    breaches, quiet = evaluate(day, values, _baseline_accuracy(context.instance), rules)
    if not breaches:
        return dg.SkipReason("no rule breached: " + "; ".join(quiet))
    fired = ",".join(b.rule for b in breaches)
    return dg.RunRequest(
        run_key=f"{day}:{fired}",
        tags={
            "feedback_pipeline/rule": fired,
            "feedback_pipeline/breach_day": day,
            "feedback_pipeline/breach": " | ".join(b.message for b in breaches)[:1000],
        },
    )
