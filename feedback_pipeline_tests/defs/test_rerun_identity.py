"""Re-running a day changes nothing: the same bytes, one MLflow run, one Evidently snapshot.

Three small simulated days are run through ``daily_monitoring_job`` in real Dagster runs, the
reference is built, and the last day is run again with every asset. From then on its inputs do
not change, so running it again (alone, or with the day before it) must write byte-identical
Parquet files to the warehouse and the quarantine, update its MLflow runs in place and replace
its Evidently snapshots. The HTML and JSON reports are not compared: Evidently stamps them with
the time they were made and random ids. For the same reason ``monitoring_reports`` (the table of
a day's reports) is compared as a table without its ``snapshot_id`` column, not byte for byte: a
re-run replaces each snapshot by a new one, with a new id.
"""

import dataclasses
import datetime as dt
import hashlib
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from feedback_pipeline.definitions import defs
from feedback_pipeline.lib import storage, tracking, workspace
from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings, load_settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

pytestmark = pytest.mark.slow

DAYS = 3
VERSIONS = ("v1", "v2")
REPORTS_TABLE = "monitoring_reports"
KINDS = ("drift", "quality", "summary")


def _run(instance: dg.DagsterInstance, day: dt.date) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("daily_monitoring_job")
    return job.execute_in_process(
        partition_key=day.isoformat(), instance=instance, raise_on_error=True
    )


def _state(settings: Settings, days: list[dt.date]) -> dict[str, object]:
    """The sha256 of every file of the days in the warehouse and the quarantine; the reports
    table as a frame without its snapshot ids."""
    out: dict[str, object] = {}
    for area in ("warehouse", "quarantine"):
        root = Path(settings.resolve(area))
        for day in days:
            for path in sorted(root.glob(f"*/date={day.isoformat()}/*")):
                key = str(path.relative_to(root.parent))
                if key.startswith(f"warehouse/{REPORTS_TABLE}/"):
                    frame = storage.read_parquet(str(path)).drop(columns=["snapshot_id"])
                    out[key] = frame
                else:
                    out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _assert_same(after: dict[str, object], before: dict[str, object]) -> None:
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(after[key], value)  # type: ignore[arg-type]
        else:
            assert after[key] == value, key


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    """Demo settings over a data directory of this module's own."""
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(data))
        patch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
        yield load_settings()


@pytest.fixture(scope="module")
def reruns(settings: Settings) -> dict:
    """The first days run, the reference built, the last day run, the day before it restated
    (it now sees the last day's feedback): nothing is left to change. Then the last day is re-run
    alone, and then the last two days, the state taken after each."""
    config = dataclasses.replace(small_config(settings, days=DAYS), spam_days=())
    simulate_landing(settings, config)
    days = [config.day(i) for i in range(config.days)]
    instance = dg.DagsterInstance.ephemeral()
    for day in days[:-1]:
        _run(instance, day)
    defs().resolve_job_def("reference_job").execute_in_process(instance=instance)
    last, pair = days[-1], days[-2:]
    _run(instance, last)
    _run(instance, days[-2])
    settled = _state(settings, pair)
    _run(instance, last)
    again = _state(settings, pair)
    for day in pair:
        _run(instance, day)
    return {"days": days, "settled": settled, "again": again, "pair": _state(settings, pair)}


def test_every_dataset_of_the_days_is_there(reruns: dict) -> None:
    settled = reruns["settled"]
    for day in reruns["days"][-2:]:
        names = {
            Path(k).parts[1] for k in settled if k.startswith("warehouse/") and day.isoformat() in k
        }
        assert {
            "inference_log",
            "feedback_events",
            "attributed_feedback",
            "labeled_predictions",
            "performance_metrics",
            REPORTS_TABLE,
        } <= names
        quarantined = {
            Path(k).parts[1]
            for k in settled
            if k.startswith("quarantine/") and day.isoformat() in k
        }
        assert quarantined == {"inference_log", "feedback_events"}
    assert all(k.endswith("/part-0.parquet") for k in settled)
    reports = [v for k, v in settled.items() if REPORTS_TABLE in k]
    # Drift, quality and summary per version on the days with a reference, the last two before.
    assert all(isinstance(v, pd.DataFrame) and len(v) in (4, 6) for v in reports)
    assert all(len(v) == 2 * v["report"].nunique() for v in reports)


def test_rerunning_a_day_writes_the_same_bytes(reruns: dict) -> None:
    _assert_same(reruns["again"], reruns["settled"])


def test_rerunning_two_days_writes_the_same_bytes(reruns: dict) -> None:
    _assert_same(reruns["pair"], reruns["settled"])


def test_each_day_and_version_has_one_mlflow_run(settings: Settings, reruns: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking.uri(settings))
    experiment = client.get_experiment_by_name(tracking.experiment_name(settings))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    held = Counter(
        (r.data.tags.get(tracking.PARTITION_TAG), r.data.tags.get(tracking.MODEL_VERSION_TAG))
        for r in runs
    )
    expected = {(d.isoformat(), v) for d in reruns["days"] for v in VERSIONS}
    assert set(held) == expected
    assert set(held.values()) == {1}
    last = reruns["days"][-1].isoformat()
    for version in VERSIONS:
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{tracking.PARTITION_TAG}` = '{last}' "
            f"and tags.`{tracking.MODEL_VERSION_TAG}` = '{version}'",
        )
        assert len(found) == 1
        assert found[0].info.status == "FINISHED"


def test_each_day_version_and_report_has_one_evidently_snapshot(
    settings: Settings, reruns: dict
) -> None:
    ws, project = workspace.open_project(settings)
    held = Counter()
    for snapshot_id in ws.list_runs(project.id):
        snapshot = ws.get_run(project.id, snapshot_id)
        assert snapshot is not None
        metadata = snapshot.metadata
        held[(metadata["day"], metadata["model_version"], metadata["report"])] += 1
    # Drift reports need the reference: only the days run after it was built have them.
    reference_days = {d.isoformat() for d in reruns["days"][-2:]}
    expected = {
        (d.isoformat(), v, k)
        for d in reruns["days"]
        for v in VERSIONS
        for k in KINDS
        if k != "drift" or d.isoformat() in reference_days
    }
    assert set(held) == expected
    assert set(held.values()) == {1}
    index = workspace.snapshots(settings)
    assert set(index) == {"|".join(key) for key in expected}
    assert set(index.values()) == {str(s) for s in ws.list_runs(project.id)}
