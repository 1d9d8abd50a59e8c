"""The data directory on an fsspec URL: landing, ingestion and attribution off the local disk."""

import dagster as dg
import fsspec
import pytest

from feedback_pipeline.definitions import defs
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.settings import DATA_DIR_ENV, load_settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

ROOT = "memory://feedback-pipeline-test"
ASSETS = ["inference_log", "feedback_events", "attributed_feedback", "labeled_predictions"]


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Settings whose data directory is fsspec's in-memory filesystem (emptied afterwards)."""
    monkeypatch.setenv(DATA_DIR_ENV, ROOT)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.chdir(tmp_path)  # a relative path would land here
    memory = fsspec.filesystem("memory")
    yield load_settings()
    memory.rm(ROOT.removeprefix("memory://"), recursive=True)


def test_a_day_is_ingested_and_attributed_on_an_fsspec_url(remote, tmp_path) -> None:
    config = small_config(remote, days=2)
    simulate_landing(remote, config)
    days = [config.day(i) for i in range(config.days)]
    job = defs().resolve_job_def("daily_monitoring_job")
    instance = dg.DagsterInstance.ephemeral()
    for day in days:
        result = job.execute_in_process(
            partition_key=day.isoformat(),
            instance=instance,
            asset_selection=[dg.AssetKey(a) for a in ASSETS],
        )
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["rows_are_conserved"] and checks["feedback_is_conserved"]
        assert checks["one_row_per_prediction"]

    warehouse = remote.resolve("warehouse")
    assert warehouse.startswith("memory://")
    for asset in ASSETS:
        assert storage.materialized_days(warehouse, asset) == [d.isoformat() for d in days]
    labeled = storage.read_parquet(
        storage.partition_path(warehouse, "labeled_predictions", days[0])
    )
    logged = storage.read_parquet(storage.partition_path(warehouse, "inference_log", days[0]))
    assert len(labeled) == len(logged) > 0
    assert labeled["label"].notna().any()
    quarantined = storage.materialized_days(remote.resolve("quarantine"), "inference_log")
    assert quarantined == [d.isoformat() for d in days]
    assert list(tmp_path.iterdir()) == []  # nothing went to the local disk
