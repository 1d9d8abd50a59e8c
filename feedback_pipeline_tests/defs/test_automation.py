"""The nightly schedule and the retraining sensor, evaluated against an ephemeral instance."""

import datetime as dt

import dagster as dg
import pytest

from feedback_pipeline.definitions import defs
from feedback_pipeline.defs.automation import (
    nightly_monitoring_schedule,
    retrain_on_feedback_breach,
    retraining_job,
)

HEALTHY = {
    "accuracy": 0.80,
    "n_labeled": 900,
    "negative_feedback_share": 0.2,
    "n_thumbs": 400,
    "n_ratings": 200,
}


def _report(instance: dg.DagsterInstance, day: str, **metadata: float) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="performance_metrics", partition=day, metadata=metadata)
    )


def _tick(instance: dg.DagsterInstance):
    return retrain_on_feedback_breach(dg.build_sensor_context(instance=instance))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        # The reference window (first week) sets the baseline accuracy of 0.80.
        for day in range(1, 8):
            _report(instance, f"2026-10-{day:02d}", **HEALTHY)
        yield instance


def test_schedule_runs_yesterday_and_restates_the_open_window() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 10, 20, 2, tzinfo=dt.UTC)
    )
    requests = list(nightly_monitoring_schedule(context))
    assert requests[0].partition_key == "2026-10-19"
    assert requests[0].asset_selection is None
    restated = [r.partition_key for r in requests[1:]]
    assert restated == [f"2026-10-{d}" for d in range(12, 19)]
    assert all(r.asset_selection and len(r.asset_selection) == 4 for r in requests[1:])
    assert len({r.run_key for r in requests}) == len(requests)


def test_schedule_never_asks_for_days_before_the_first_partition() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 10, 3, 2, tzinfo=dt.UTC)
    )
    keys = [r.partition_key for r in nightly_monitoring_schedule(context)]
    assert keys == ["2026-10-02", "2026-10-01"]


def test_sensor_skips_before_any_metrics() -> None:
    with dg.instance_for_test() as empty:
        result = _tick(empty)
    assert isinstance(result, dg.SkipReason)
    assert "no day of performance_metrics" in (result.skip_message or "")


def test_sensor_skips_a_healthy_day_and_says_why(instance) -> None:
    _report(instance, "2026-10-20", **HEALTHY)
    result = _tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert "accuracy_floor: 0.800 within 0.700" in (result.skip_message or "")


def test_sensor_fires_on_an_accuracy_breach_with_the_numbers(instance) -> None:
    _report(instance, "2026-10-20", **{**HEALTHY, "accuracy": 0.62})
    request = _tick(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "2026-10-20:accuracy_floor,accuracy_drop"
    assert request.tags["feedback_pipeline/breach_day"] == "2026-10-20"
    assert "accuracy 0.620 < floor 0.700 on 900 labels" in request.tags["feedback_pipeline/breach"]
    assert "0.180 below the baseline 0.800" in request.tags["feedback_pipeline/breach"]
    # A repeated tick asks again with the same run key, which Dagster launches only once.
    assert _tick(instance).run_key == request.run_key


def test_sensor_does_not_fire_on_too_few_labels(instance) -> None:
    _report(instance, "2026-10-20", **{**HEALTHY, "accuracy": 0.5, "n_labeled": 50})
    result = _tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert "50 samples on 2026-10-20, fewer than 200" in (result.skip_message or "")


def test_sensor_fires_on_negative_feedback(instance) -> None:
    _report(instance, "2026-10-20", **{**HEALTHY, "negative_feedback_share": 0.55})
    request = _tick(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["feedback_pipeline/rule"] == "negative_feedback"


def _retraining_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    job = defs().resolve_job_def(retraining_job.name)
    return instance.create_run_for_job(job_def=job, status=status).run_id


def test_sensor_waits_while_a_retraining_is_in_flight(instance) -> None:
    run_id = _retraining_run(instance, dg.DagsterRunStatus.STARTED)
    _report(instance, "2026-10-20", **{**HEALTHY, "accuracy": 0.6})
    result = _tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert f"retraining run {run_id} is still in flight" == result.skip_message


def test_sensor_respects_the_cooldown(instance) -> None:
    _retraining_run(instance, dg.DagsterRunStatus.SUCCESS)
    _report(instance, "2026-10-20", **{**HEALTHY, "accuracy": 0.6})
    result = _tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert (result.skip_message or "").startswith("cooldown: the last retraining was")
