"""Jobs and the nightly schedule that keeps every day's numbers current."""

import datetime as dt

import dagster as dg

from feedback_pipeline.defs.partitions import daily_partitions
from feedback_pipeline.defs.training.assets import BREACH_DAY_TAG, RULE_TAG
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.policy import evaluate, number
from feedback_pipeline.lib.settings import RuleMetric, load_settings

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
# A promotion replaces the drift reference, so the reference is rebuilt after the gate.
retraining_job = dg.define_asset_job(
    name="retraining_job",
    selection=dg.AssetSelection.groups("training") | dg.AssetSelection.assets("reference_data"),
    executor_def=dg.in_process_executor,
    tags={RETRAINING_TAG: "true"},
    description="Build a training dataset from matured feedback, train a challenger, gate it.",
)
REPORTS = dg.AssetKey("monitoring_reports")
PROMOTION = dg.AssetKey("model_promotion")
WATCHED = (METRICS, REPORTS)


def _day_values(instance: dg.DagsterInstance, day: str) -> dict:
    """A day's numbers: the latest metadata of its metrics and of its reports, merged."""
    values: dict = {}
    for key in WATCHED:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1, ascending=False
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is not None:
            values |= {k: v.value for k, v in materialization.metadata.items()}
    return values


def latest_by_day(instance: dg.DagsterInstance, key: dg.AssetKey, days: list[str]) -> dict:
    """The metadata of each day's latest materialization of an asset, as plain values."""
    latest: dict[str, dict] = {}
    for start in range(0, len(days), 50):
        chunk = days[start : start + 50]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk), limit=len(chunk) * 10
        ).records
        for record in sorted(records, key=lambda r: r.storage_id):
            materialization = record.asset_materialization
            if materialization is not None and materialization.partition is not None:
                latest[materialization.partition] = {
                    k: v.value for k, v in materialization.metadata.items()
                }
    return latest


def _reference_baselines(instance: dg.DagsterInstance) -> dict[str, float]:
    """Mean daily value of each rule metric over the reference window."""
    days = [d.isoformat() for d in load_settings().reference_window.dates()]
    daily = latest_by_day(instance, METRICS, days)
    for day, values in latest_by_day(instance, REPORTS, days).items():
        daily.setdefault(day, {}).update(values)
    baselines: dict[str, float] = {}
    for metric in RuleMetric:
        present = [v for v in (number(d, metric.value) for d in daily.values()) if v is not None]
        if present:
            baselines[metric.value] = sum(present) / len(present)
    return baselines


def champion_state(instance: dg.DagsterInstance) -> tuple[dict[str, float], str, str]:
    """The baselines drop rules measure from, where they come from, and the champion's last day.

    The reference window's mean daily numbers, overridden after a promotion (or a rollback) by
    the champion's holdout numbers from the latest ``model_promotion`` event that changed the
    champion; the last day is that of the champion's training data, or of the reference window.
    """
    baselines = _reference_baselines(instance)
    records = instance.fetch_materializations(PROMOTION, limit=50, ascending=False).records
    for record in records:
        materialization = record.asset_materialization
        meta = {
            k: v.value for k, v in (materialization.metadata if materialization else {}).items()
        }
        if meta.get("decision") in ("promoted", "rollback"):
            numbers = {
                k.removeprefix("baseline__"): float(v)  # type: ignore[arg-type]
                for k, v in meta.items()
                if k.startswith("baseline__") and v is not None
            }
            numbers |= {
                f"estimated_{k}": v for k, v in numbers.items() if k in ("accuracy", "roc_auc")
            }
            return (
                baselines | numbers,
                f"champion {meta.get('champion_version')}",
                str(meta.get("trained_through", "")),
            )
    return (
        baselines,
        "the reference window",
        load_settings().reference_window.dates()[-1].isoformat(),
    )


def _new_labels(instance: dg.DagsterInstance, since: str, until: str) -> int:
    """Labels of the days after the champion's training data, up to the given day."""
    if not since:
        return 0
    first = (dt.date.fromisoformat(since) + dt.timedelta(days=1)).isoformat()
    if first > until:
        return 0
    days = [
        d.isoformat()
        for d in (dt.date.fromisoformat(first) + dt.timedelta(days=i) for i in range(400))
        if d.isoformat() <= until
    ]
    daily = latest_by_day(instance, METRICS, days)
    return int(sum(number(v, "n_labeled") or 0 for v in daily.values()))


def _last_retraining(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun | None, dt.date | None]:
    """The latest retraining run and the data day it was for (its breach day, else its date)."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=retraining_job.name), limit=1)
    if not records:
        return None, None
    run = records[0].dagster_run
    tagged = run.tags.get(BREACH_DAY_TAG)
    day = dt.date.fromisoformat(tagged) if tagged else records[0].create_timestamp.date()
    return run, day


@dg.sensor(
    job=retraining_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def retrain_on_feedback_breach(context: dg.SensorEvaluationContext):
    """Requests a retraining when a day's numbers breach a retraining rule.

    Each tick reads the days whose ``performance_metrics`` or ``monitoring_reports`` were
    materialized since the last tick (a cursor of event ids), evaluates the policy on each, and
    asks for one retraining for the latest breached day, unless one is in flight or the last
    retraining was for a day within the cooldown. The run key names the day and the rules, so a
    repeated request for one breach launches nothing new.
    """
    policy = load_settings().retraining
    cursor = int(context.cursor) if context.cursor else 0
    fresh = [
        record
        for key in WATCHED
        for record in context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor), limit=10_000
        ).records
    ]
    if not fresh:
        return dg.SkipReason("no day's metrics or reports were materialized since the last tick")
    context.update_cursor(str(max(r.storage_id for r in fresh)))
    days = sorted(
        {
            r.asset_materialization.partition
            for r in fresh
            if r.asset_materialization and r.asset_materialization.partition
        }
    )
    if not days:
        return dg.SkipReason("the new materializations carry no day partition")
    baselines, source, trained_through = champion_state(context.instance)
    judged = [d for d in days if d > trained_through]
    if not judged:
        return dg.SkipReason(
            f"{', '.join(days)} not judged: the champion ({source}) covers days up to"
            f" {trained_through}"
        )
    fired: dict[str, list] = {}
    quiet: list[str] = []
    for day in judged:
        values = _day_values(context.instance, day)
        values["new_labels"] = _new_labels(context.instance, trained_through, day)
        breaches, reasons = evaluate(day, values, baselines, policy)
        if breaches:
            fired[day] = breaches
        quiet = reasons
    if not fired:
        return dg.SkipReason(f"no rule breached on {', '.join(judged)}: " + "; ".join(quiet))
    day = max(fired)
    breaches = fired[day]
    summary = " | ".join(b.message for b in breaches)
    active = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=retraining_job.name, statuses=IN_FLIGHT), limit=1
    )
    if active:
        return dg.SkipReason(
            f"{day} breached ({summary}), but retraining run {active[0].run_id} is in flight"
        )
    last_run, last_day = _last_retraining(context.instance)
    breach_day = dt.date.fromisoformat(day)
    if last_run is not None and last_day is not None and breach_day < last_day + policy.cooldown:
        return dg.SkipReason(
            f"cooldown: {day} breached ({summary}), within {policy.cooldown.days} days of"
            f" {last_day}, the day retraining run {last_run.run_id} was for"
        )
    rules = ",".join(b.rule for b in breaches)
    return dg.RunRequest(
        run_key=f"retrain:{day}:{rules}",
        tags={
            RULE_TAG: rules,
            BREACH_DAY_TAG: day,
            "feedback_pipeline/breach": summary[:1000],
            "feedback_pipeline/baseline": source,
        },
    )
