"""Real Dagster runs over simulated landing files, checked against the simulation's truth."""

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import accuracy_score

from feedback_pipeline.bench import compare
from feedback_pipeline.definitions import defs
from feedback_pipeline.defs.automation import RESTATED_ASSETS
from feedback_pipeline.defs.resources import HELPER_ENV
from feedback_pipeline.lib import privacy, storage
from feedback_pipeline.lib.landing import landing_files, read_file
from feedback_pipeline.lib.parallel import can_fork
from feedback_pipeline.lib.settings import (
    DATA_DIR_ENV,
    SETTINGS_ENV,
    Settings,
    default_settings_path,
    load_settings,
)
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

pytestmark = pytest.mark.slow


def _warehouse(settings: Settings, asset: str, day: dt.date) -> pd.DataFrame:
    return storage.read_parquet(storage.partition_path(settings.resolve("warehouse"), asset, day))


def _run(instance: dg.DagsterInstance, day: dt.date, selection: list[str] | None = None):
    job = defs().resolve_job_def("daily_monitoring_job")
    return job.execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        asset_selection=[dg.AssetKey(k) for k in selection] if selection else None,
        raise_on_error=True,
    )


def _settings_file(factory: pytest.TempPathFactory, **sections: dict) -> Path:
    """The shipped settings with some keys of some sections changed, as a file."""
    values = yaml.safe_load(default_settings_path().read_text())
    for section, changes in sections.items():
        values[section] = {**values[section], **changes}
    path = factory.mktemp("settings") / "settings.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    """Demo settings over a data directory shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp("data")))
        yield load_settings()


SPAM_DAY = 3


@pytest.fixture(scope="module")
def simulated(settings: Settings) -> list[dt.date]:
    """Eight small simulated days; a bot sends thumbs-down on the fourth.

    No concept drift: estimated performance, which cannot see one, is held to the truth here.
    """
    config = dataclasses.replace(
        small_config(settings, days=8), spam_days=(SPAM_DAY,), concept_drift_day=99
    )
    simulate_landing(settings, config)
    return [config.day(i) for i in range(config.days)]


@pytest.fixture(scope="module")
def nights(
    settings: Settings, simulated: list[dt.date], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """Every simulated day run once in order, the first day restated, then the reference built
    and the last day's metrics measured again with it."""
    with pytest.MonkeyPatch.context() as helped:  # the runs as production runs them
        helped.setenv(HELPER_ENV, "1")
        instance = dg.DagsterInstance.ephemeral()
        results = {day: _run(instance, day) for day in simulated}
        first_night = _warehouse(settings, "labeled_predictions", simulated[0])
        restated = _run(instance, simulated[0], list(RESTATED_ASSETS))
        without_reference = _warehouse(settings, "performance_metrics", simulated[-1])
        reference = defs().resolve_job_def("reference_job").execute_in_process(instance=instance)
        with_reference = _run(
            instance, simulated[-1], ["performance_metrics", "monitoring_reports"]
        )
        # Attribution runs: the drift reports are begun on the spare core after it starts.
        early = _run(instance, simulated[-1], list(RESTATED_ASSETS))
        with pytest.MonkeyPatch.context() as patch:  # two workers, whatever cores CI has
            patch.setenv(
                SETTINGS_ENV, str(_settings_file(tmp_path_factory, reports={"workers": 2}))
            )
            rerun = _run(instance, simulated[-1], ["monitoring_reports"])
        with pytest.MonkeyPatch.context() as patch:  # one after the other, in the step's process
            patch.setenv(
                SETTINGS_ENV, str(_settings_file(tmp_path_factory, reports={"workers": 1}))
            )
            patch.setenv(HELPER_ENV, "0")
            one_by_one = _run(instance, simulated[-1], ["monitoring_reports"])
    return {
        "results": results,
        "first_night": first_night,
        "restated": restated,
        "without_reference": without_reference,
        "reference": reference,
        "with_reference": with_reference,
        "early": early,
        "rerun": rerun,
        "one_by_one": one_by_one,
        "instance": instance,
    }


def test_every_check_passes_on_every_day(nights: dict) -> None:
    for result in nights["results"].values():
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) == 16
        failed = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed}
        # Feedback volume ramps up over the first week (each day adds a day of late feedback).
        assert failed <= {("feedback_events", "volume_within_trailing_range")}


def test_the_great_expectations_checks_run_once_nothing_else_can(nights: dict) -> None:
    # They only warn, and the helper that runs them is busy importing early in the run.
    later = {
        "inference_expectations",
        "feedback_events_volume_within_trailing_range",
        "labeled_expectations",
    }
    for result in nights["results"].values():
        started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
        assert set(started[-3:]) == later
        assert "monitoring_reports" in started[:-3]


def _expectations_of(result, asset: str) -> dict[str, tuple[bool, dict, bool]]:
    """Each Great Expectations check of ``asset``: passed, what it observed, judged early."""
    out = {}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.asset_key == dg.AssetKey(asset) and "judged_early" in evaluation.metadata:
            metadata = {k: v.value for k, v in evaluation.metadata.items()}
            out[evaluation.check_name] = (
                evaluation.passed,
                metadata["great_expectations"],
                metadata["judged_early"],
            )
    return out


def test_expectations_begun_early_judge_what_the_stored_day_shows(
    settings: Settings, simulated, nights
) -> None:
    """Begun on the spare core once the day is stored, collected by their checks at the end."""
    from feedback_pipeline.defs.ingestion.expectations import inference_outcomes
    from feedback_pipeline.defs.labeling.expectations import labeled_day_outcomes
    from feedback_pipeline.lib.expectations import repeated_ids

    day, warehouse = simulated[-1].isoformat(), settings.resolve("warehouse")
    stored = _warehouse(settings, "labeled_predictions", simulated[-1])
    # The last night ingested the day; the "early" run labeled it again (no ingestion in it).
    inference = _expectations_of(nights["results"][simulated[-1]], "inference_log")
    labeled = _expectations_of(nights["early"], "labeled_predictions")

    assert len(inference) == 4 and len(labeled) == 3
    assert {early for _, _, early in [*inference.values(), *labeled.values()]} == {can_fork()}
    # The same verdicts and observations as judging the stored day now, in this process.
    for found, outcomes in (
        (inference, inference_outcomes(settings, warehouse, day)),
        (
            labeled,
            labeled_day_outcomes(settings, warehouse, day, repeated_ids(stored["prediction_id"])),
        ),
    ):
        assert {o.name: (o.passed, json.loads(json.dumps(o.summary))) for o in outcomes} == {
            name: (passed, summary) for name, (passed, summary, _) in found.items()
        }
    coverage = labeled["label_coverage_above_floor"][1]["coverage"]
    assert coverage == stored["label"].notna().mean()


def test_every_landing_row_is_valid_or_quarantined(settings: Settings, simulated, nights) -> None:
    day = simulated[0]
    valid = _warehouse(settings, "inference_log", day)
    quarantine = storage.read_parquet(
        storage.partition_path(settings.resolve("quarantine"), "inference_log", day)
    )
    rows_in = sum(
        len(read_file(p)) for p in landing_files(settings.resolve(settings.landing.inferences), day)
    )
    assert len(valid) + len(quarantine) == rows_in
    assert 0 < len(quarantine) < 0.05 * rows_in
    assert valid["prediction_id"].is_unique


def test_labels_are_the_simulated_truth(settings: Settings, simulated, nights) -> None:
    truth = pd.read_parquet(settings.resolve("simulation") + "/truth.parquet")
    truth = truth.drop_duplicates("prediction_id").set_index("prediction_id")["true_label"]
    labeled = nights["restated"].asset_value("labeled_predictions")
    known = labeled[labeled["label_status"] == "labeled"]
    assert len(known) > 50
    # Redelivered or duplicated ids keep their first row; its label is that row's truth.
    assert (
        known["label"].to_numpy() == truth.reindex(known["prediction_id"]).to_numpy()
    ).mean() > 0.97


def test_each_attributed_event_knows_its_predictions_row_in_that_days_log(
    settings: Settings, simulated, nights
) -> None:
    """Feedback reaches back over several days; each target row is of the target's own day."""
    day = simulated[-1]
    events = _warehouse(settings, "attributed_feedback", day)
    targeted = events[events["target_prediction_id"].notna()]
    rows = {}
    for earlier in simulated:
        log = _warehouse(settings, "inference_log", earlier)
        rows |= {pid: i for i, pid in enumerate(log["prediction_id"])}
    expected = targeted["target_prediction_id"].map(rows)

    assert targeted["prediction_timestamp"].dt.date.nunique() > 1  # more than one day reached
    assert targeted["target_row"].tolist() == expected.tolist()
    assert events.loc[events["target_prediction_id"].isna(), "target_row"].isna().all()


def test_restating_a_day_adds_the_feedback_that_arrived_later(simulated, nights) -> None:
    before = nights["first_night"]
    after = nights["restated"].asset_value("labeled_predictions")
    assert (after["label_status"] == "labeled").sum() > 2 * (
        before["label_status"] == "labeled"
    ).sum()
    assert set(before["label_status"]) <= {"labeled", "pending"}
    assert after["as_of"].max() > before["as_of"].max()


def test_feedback_days_not_come_yet_are_skipped_without_a_warning(simulated, nights) -> None:
    instance, first = nights["instance"], nights["results"][simulated[0]]

    def days_read(result) -> int:
        (event,) = [
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "labeled_predictions"
        ]
        return event.materialization.metadata["feedback_days_read"].value

    # The first night has only its own feedback day; once restated, all eight days are in reach.
    assert days_read(first) == 1
    assert days_read(nights["restated"]) == len(simulated)
    warnings = [
        entry.user_message
        for entry in instance.all_logs(first.run_id)
        if entry.level >= logging.WARNING and "partition" in entry.user_message
    ]
    assert warnings == []


def _read_extending(
    settings: Settings, asset: str, base: str, day: str
) -> tuple[pd.DataFrame, list[str]]:
    """The day of ``asset`` as read, and the columns it stores itself.

    Checks what every day that extends ``base`` promises: it reads as that day's columns, equal
    to it, then its own.
    """
    path = storage.partition_path(settings.resolve("warehouse"), asset, day)
    theirs = _warehouse(settings, base, day)

    frame = storage.read_parquet(path)

    stored = pq.read_schema(path).names
    assert frame.columns.tolist() == [*theirs.columns, *(c for c in stored if c not in theirs)]
    pd.testing.assert_frame_equal(frame[theirs.columns], theirs)
    return frame, stored


def test_a_labeled_day_stores_its_labels_and_reads_with_the_inference_days_columns(
    settings: Settings, simulated, nights
) -> None:
    labeled, stored = _read_extending(
        settings, "labeled_predictions", "inference_log", simulated[0]
    )

    assert "prediction_id" in stored and "label" in stored and "score" not in stored
    assert labeled["label_status"].notna().all()


def test_an_attributed_day_stores_what_attribution_found_and_reads_with_the_events_columns(
    settings: Settings, simulated, nights
) -> None:
    for day in simulated:
        attributed, stored = _read_extending(
            settings, "attributed_feedback", "feedback_events", day
        )

        assert "feedback_id" in stored and "status" in stored and "target_row" in stored
        assert not {"entity_id", "user_id", "text", "value"} & set(stored)
        assert attributed["status"].notna().all()


def test_realized_accuracy_matches_scikit_learn_on_the_labeled_rows(settings, simulated, nights):
    labeled = _warehouse(settings, "labeled_predictions", simulated[0])
    metrics = nights["restated"].asset_value("performance_metrics")
    known = labeled[labeled["label_status"] == "labeled"]
    expected = accuracy_score(known["label"].astype(int), (known["score"] >= 0.5).astype(int))
    overall = metrics[(metrics["model_version"] == "all") & (metrics["segment"] == "all")]
    assert overall["accuracy"].iloc[0] == pytest.approx(expected)
    assert overall["n_labeled"].iloc[0] == len(known)
    assert set(metrics["maturity"]) == {"final"} or set(metrics["maturity"]) == {"provisional"}


def test_materialization_metadata_carries_the_numbers(nights, simulated) -> None:
    events = nights["restated"].get_asset_materialization_events()
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in events}
    perf = metadata["performance_metrics"]
    assert 0.4 < perf["accuracy"].value < 1.0
    assert perf["score_cutoff"].value == 0.5
    assert perf["maturity"].value in {"provisional", "final"}
    attributed = metadata["attributed_feedback"]
    total = sum(attributed[f"events_{s}"].value for s in ("attributed", "late", "orphaned"))
    assert total == attributed["events_in"].value


def test_conservation_check_fails_when_quarantine_loses_rows(settings, simulated, nights) -> None:
    day = simulated[1]
    path = storage.partition_path(settings.resolve("quarantine"), "inference_log", day)
    quarantine = storage.read_parquet(path)
    storage.write_parquet(quarantine.iloc[1:], path)
    job = defs().resolve_job_def("daily_monitoring_job")
    result = job.execute_in_process(
        op_selection=["inference_log_rows_are_conserved"],
        partition_key=day.isoformat(),
        instance=nights["instance"],
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is False
    assert evaluation.metadata["rows_quarantined"].value == len(quarantine) - 1
    assert np.isfinite(evaluation.metadata["rows_in"].value)


def test_reference_is_a_sample_of_the_reference_window(settings: Settings, nights) -> None:
    reference = nights["reference"].asset_value("reference_data")
    (event,) = nights["reference"].get_asset_materialization_events()
    metadata = event.materialization.metadata
    window = {d.isoformat() for d in settings.reference_window.dates()}
    assert set(reference["date"]) <= window
    assert len(reference) == metadata["rows"].value <= settings.reference_window.sample_rows
    assert metadata["labeled_rows"].value == reference["label"].notna().sum() > 200
    # The simulation covers eight days, so the seven reference days are all there.
    assert set(metadata["days"].value) == window


def test_estimated_performance_appears_once_the_reference_calibrates(
    settings: Settings, simulated, nights
) -> None:
    before = nights["without_reference"]
    after = nights["with_reference"].asset_value("performance_metrics")
    assert before["estimated_accuracy"].isna().all()
    overall = after[(after["model_version"] == "all") & (after["segment"] == "all")].iloc[0]
    # The last day has few labels yet; the estimate speaks for all its predictions, whose true
    # classes the simulation knows.
    truth = pd.read_parquet(settings.resolve("simulation") + "/truth.parquet")
    day = truth[
        truth["prediction_id"].isin(
            _warehouse(settings, "inference_log", simulated[-1])["prediction_id"]
        )
    ]
    true_accuracy = accuracy_score(day["true_label"], (day["score"] >= 0.5).astype(int))
    assert overall["n_labeled"] < 0.2 * overall["n_predictions"]
    assert overall["estimated_accuracy"] == pytest.approx(true_accuracy, abs=0.05)
    assert after["estimated_accuracy"].notna().mean() > 0.9


def test_the_spam_bot_is_flagged_and_its_thumbs_left_out(settings: Settings, simulated, nights):
    day = simulated[SPAM_DAY]
    result = nights["results"][day]
    events = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    attributed_meta = events["attributed_feedback"]
    assert attributed_meta["suspicious_users"].value >= 1
    # User ids are personal in the demo settings: the table names the bot by its pseudonym.
    (pseudonym,) = privacy.values(["u-bot-4242"], settings)
    assert f"| {pseudonym} |" in attributed_meta["suspicious_user_table"].value
    assert "u-bot-4242" not in attributed_meta["suspicious_user_table"].value
    attributed = _warehouse(settings, "attributed_feedback", day)
    bot = attributed["user_id"] == "u-bot-4242"
    assert bot.sum() >= 100
    assert (attributed.loc[bot, "quality_flag"] == "suspicious_user").all()
    # Nobody else is called a bot.
    assert attributed.loc[~bot, "quality_flag"].isna().mean() > 0.99
    labeled = _warehouse(settings, "labeled_predictions", day)
    others = attributed[
        ~bot & (attributed["kind"] == "thumb") & (attributed["status"] == "attributed")
    ]
    only_bot = set(attributed.loc[bot, "target_prediction_id"]) - set(
        others["target_prediction_id"]
    )
    spammed = labeled[labeled["prediction_id"].isin(only_bot)]
    assert len(spammed) > 50
    assert spammed["thumb"].isna().all()


def test_reports_snapshots_and_mlflow_runs_exist_once_per_day_and_version(
    settings: Settings, simulated, nights
) -> None:
    from feedback_pipeline.lib import tracking, workspace

    day = simulated[-1].isoformat()
    table = nights["with_reference"].asset_value("monitoring_reports")
    again = nights["rerun"].asset_value("monitoring_reports")
    last = nights["one_by_one"].asset_value("monitoring_reports")  # the day's latest run
    assert set(table["model_version"]) == {"v1", "v2"}
    assert set(table["report"]) == {"drift", "quality", "summary"}
    for row in table.itertuples():
        assert Path(row.html).exists() and Path(row.json).exists()
    # A re-run replaces the day's snapshots and updates its MLflow runs.
    assert set(again["mlflow_run_id"]) == set(table["mlflow_run_id"])
    assert set(last["mlflow_run_id"]) == set(table["mlflow_run_id"])
    held = workspace.snapshots(settings)
    assert {k for k in held if k.startswith(day)} == {
        f"{day}|{v}|{r}" for v in ("v1", "v2") for r in ("drift", "quality", "summary")
    }
    assert set(last["snapshot_id"]) == {held[k] for k in held if k.startswith(day)}
    assert not set(again["snapshot_id"]) & set(held.values())
    for version in ("v1", "v2"):
        run_id = tracking.find_monitoring_run(settings, day, version)
        assert run_id in set(table["mlflow_run_id"])
    (event,) = nights["rerun"].get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert 0 <= metadata["drift_share__v1"].value <= 1
    assert metadata["report_sample_rows__v1"].value > 0
    assert 0.4 < metadata["evidently_accuracy__v1"].value < 1


def test_versions_reported_side_by_side_in_the_helper_say_what_one_by_one_in_the_step_says(
    nights,
) -> None:
    def numbers(result) -> dict:
        table = result.asset_value("monitoring_reports")
        return {(r.model_version, r.report): json.loads(r.numbers) for r in table.itertuples()}

    def workers(result) -> int:
        (event,) = result.get_asset_materialization_events()
        return event.materialization.metadata["report_workers"].value

    def helped(result) -> bool:
        (event,) = result.get_asset_materialization_events()
        return event.materialization.metadata["report_helper"].value

    side_by_side, one_by_one = numbers(nights["rerun"]), numbers(nights["one_by_one"])
    assert len(side_by_side) == 6
    assert side_by_side == one_by_one
    assert workers(nights["rerun"]) == (2 if can_fork() else 1)  # processes that drew them
    assert workers(nights["one_by_one"]) == 1
    assert helped(nights["rerun"]) == can_fork()  # drawn from the run's helper process
    assert not helped(nights["one_by_one"])  # drawn in the step itself


def _report_numbers(result) -> dict:
    table = result.asset_value("monitoring_reports")
    return {(r.model_version, r.report): json.loads(r.numbers) for r in table.itertuples()}


def _report_metadata(result) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("monitoring_reports")
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_drift_begun_after_ingestion_says_what_drift_drawn_in_the_reports_step_says(
    nights,
) -> None:
    early, late = nights["early"], nights["rerun"]  # the same day, inputs and reference

    assert _report_metadata(early)["drift_drawn_early"] == can_fork()
    assert not _report_metadata(late)["drift_drawn_early"]  # no attribution in that run
    # Drift drawn early is still the reports' work: its seconds are counted as drift's.
    assert _report_metadata(early)["seconds_drift"] > 0
    assert _report_metadata(late)["seconds_drift"] > 0
    assert _report_numbers(early) == _report_numbers(late)
    table = early.asset_value("monitoring_reports")
    for row in table.itertuples():
        assert Path(row.html).exists() and Path(row.json).exists() and row.snapshot_id
    summary = _report_numbers(early)[("v1", "summary")]
    assert 0 < summary["shown_label_coverage"] <= 1


def test_drift_metadata_matches_the_drift_report(nights) -> None:
    table = nights["rerun"].asset_value("monitoring_reports")
    (event,) = nights["rerun"].get_asset_materialization_events()
    metadata = event.materialization.metadata
    for row in table[table["report"] == "drift"].itertuples():
        numbers = json.loads(row.numbers)
        assert metadata[f"drift_share__{row.model_version}"].value == numbers["drift_share"]
        assert (
            metadata[f"drifted_column_names__{row.model_version}"].value
            == numbers["drifted_column_names"]
        )


def test_the_benchmarks_run_of_the_monitoring_work_alone_says_what_the_night_says(
    settings: Settings, simulated, nights
) -> None:
    day = simulated[-1]  # its metrics and reports were drawn with the reference
    job = compare.describe_job(settings, day.isoformat())

    alone = compare.run_pipeline(job)

    assert list(alone["stages"]) == list(compare.STAGES["pipeline"])
    assert all(s["seconds"] > 0 for s in alone["stages"].values())
    stored = _warehouse(settings, "performance_metrics", day)
    assert stored["estimated_accuracy"].notna().any()  # the estimates are compared too
    found = compare.agreement(alone["overall"], stored, alone["rows"]["labeled"])
    assert set(found["max_abs_difference"]) == set(compare.AGREED)
    assert all(d == 0 for d in found["max_abs_difference"].values())
    assert found["labeled"]["tool"] == found["labeled"]["pipeline"] > 0
    for row in stored.itertuples():
        measured = alone["slices"][f"{row.model_version}|{row.segment}"]
        assert measured["n_labeled"] == row.n_labeled
        assert measured["accuracy"] == compare._finite(row.accuracy)
    numbers = _report_numbers(nights["rerun"])  # drawn in the reports step, the same sample
    drawn = {version for version, kind in numbers if kind == "drift"}
    assert set(alone["drift"]) == drawn and drawn
    for version, drift in alone["drift"].items():
        assert drift["drift_share"] == numbers[(version, "drift")]["drift_share"]
        assert drift["drifted_column_names"] == numbers[(version, "drift")]["drifted_column_names"]
        assert drift["column_drift_scores"] == numbers[(version, "drift")]["column_drift_scores"]
        assert drift["columns"] == len(drift["column_drift_scores"]) > 0
