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
    "n_predictions": 4000,
    "negative_feedback_share": 0.2,
    "n_thumbs": 400,
    "n_ratings": 200,
    "maturity": "final",
}
BREACH_DAY = "2026-10-20"


def _report(
    instance: dg.DagsterInstance, day: str, asset: str = "performance_metrics", **metadata
) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=day, metadata=metadata)
    )


class Sensor:
    """The sensor ticking against one instance, carrying its cursor from tick to tick."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance, self.cursor = instance, None

    def tick(self):
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        result = retrain_on_feedback_breach(context)
        self.cursor = context.cursor
        return result


def _skip(result) -> str:
    assert isinstance(result, dg.SkipReason), result
    return result.skip_message or ""


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        # The reference window (first week) sets the baselines: accuracy 0.80, negative 0.20.
        for day in range(1, 8):
            _report(instance, f"2026-10-{day:02d}", **HEALTHY)
        yield instance


@pytest.fixture
def sensor(instance) -> Sensor:
    sensor = Sensor(instance)
    sensor.tick()  # consumes the reference window's events, which predate any judgement
    return sensor


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
        assert "no day's metrics or reports" in _skip(Sensor(empty).tick())


def test_sensor_does_not_judge_the_days_the_champion_covers(instance) -> None:
    _report(instance, "2026-10-05", **{**HEALTHY, "accuracy": 0.4})
    message = _skip(Sensor(instance).tick())
    assert "not judged" in message and "up to 2026-10-07" in message


def test_sensor_skips_a_healthy_day_and_names_the_numbers(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **HEALTHY)
    message = _skip(sensor.tick())
    assert "no rule breached on 2026-10-20" in message
    assert "accuracy_floor: accuracy 0.800 within 0.700 on 2026-10-20" in message
    assert "accuracy 0.800 vs baseline 0.800" in message


def test_sensor_fires_on_an_accuracy_breach_with_the_numbers(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.62})
    request = sensor.tick()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "retrain:2026-10-20:accuracy_floor,accuracy_drop"
    assert request.tags["feedback_pipeline/breach_day"] == BREACH_DAY
    assert request.tags["feedback_pipeline/rule"] == "accuracy_floor,accuracy_drop"
    breach = request.tags["feedback_pipeline/breach"]
    assert "accuracy 0.620 < 0.700 on 900 samples" in breach
    assert "0.180 below the champion's baseline 0.800" in breach
    assert request.tags["feedback_pipeline/baseline"] == "the reference window"


def test_sensor_never_fires_twice_for_one_breach(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.62})
    first = sensor.tick()
    assert isinstance(first, dg.RunRequest)
    # Nothing new since: the next tick has nothing to judge.
    assert "no day's metrics or reports" in _skip(sensor.tick())
    # A tick that lost its cursor asks again, with the same run key: Dagster launches it once.
    again = Sensor(instance).tick()
    assert isinstance(again, dg.RunRequest) and again.run_key == first.run_key


def test_sensor_fires_on_drift_from_the_reports_metadata(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **HEALTHY)
    _report(instance, BREACH_DAY, "monitoring_reports", drift_share=0.7, n_predictions=4000)
    request = sensor.tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["feedback_pipeline/rule"] == "drift_share_ceiling"
    assert "drift_share 0.700 > 0.500 on 4000 samples" in request.tags["feedback_pipeline/breach"]


def test_sensor_does_not_fire_on_too_few_labels(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.5, "n_labeled": 50})
    message = _skip(sensor.tick())
    assert "accuracy_floor: 50 samples on 2026-10-20, fewer than 200" in message


def test_sensor_waits_for_final_labels_before_judging_accuracy(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.5, "maturity": "provisional"})
    message = _skip(sensor.tick())
    assert "accuracy_floor: 2026-10-20 is provisional" in message


def test_sensor_counts_only_a_worsening(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.95, "negative_feedback_share": 0.05})
    message = _skip(sensor.tick())
    assert (
        "negative_feedback_share_drop: negative_feedback_share 0.050 vs baseline 0.200" in message
    )


def test_sensor_fires_on_negative_feedback(sensor, instance) -> None:
    _report(instance, BREACH_DAY, **{**HEALTHY, "negative_feedback_share": 0.55})
    request = sensor.tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["feedback_pipeline/rule"] == (
        "negative_feedback_share_ceiling,negative_feedback_share_drop"
    )


def test_sensor_measures_drops_from_the_promoted_champion(sensor, instance) -> None:
    _report(
        instance,
        None,
        "model_promotion",
        decision="promoted",
        champion_version="3",
        trained_through="2026-10-15",
        baseline__accuracy=0.9,
    )
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.82})
    request = sensor.tick()
    assert isinstance(request, dg.RunRequest)
    assert request.tags["feedback_pipeline/rule"] == "accuracy_drop"
    assert request.tags["feedback_pipeline/baseline"] == "champion 3"
    assert "0.080 below the champion's baseline 0.900" in request.tags["feedback_pipeline/breach"]


def _retraining_run(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, breach_day: str | None = None
) -> str:
    job = defs().resolve_job_def(retraining_job.name)
    tags = {"feedback_pipeline/breach_day": breach_day} if breach_day else None
    return instance.create_run_for_job(job_def=job, status=status, tags=tags).run_id


def test_sensor_waits_while_a_retraining_is_in_flight(sensor, instance) -> None:
    run_id = _retraining_run(instance, dg.DagsterRunStatus.STARTED, "2026-10-10")
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.6})
    message = _skip(sensor.tick())
    assert message.startswith("2026-10-20 breached (accuracy 0.600 < 0.700")
    assert message.endswith(f"but retraining run {run_id} is in flight")


def test_sensor_respects_the_cooldown_in_days_of_data(sensor, instance) -> None:
    run_id = _retraining_run(instance, dg.DagsterRunStatus.SUCCESS, "2026-10-18")
    _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.6})
    message = _skip(sensor.tick())
    assert message.startswith("cooldown: 2026-10-20 breached")
    assert f"within 3 days of 2026-10-18, the day retraining run {run_id} was for" in message
    # Three days after the last retraining's day, the same breach may fire.
    _report(instance, "2026-10-21", **{**HEALTHY, "accuracy": 0.6})
    assert isinstance(sensor.tick(), dg.RunRequest)
