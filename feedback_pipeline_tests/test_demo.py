"""The demo at small scale: real Dagster runs into a persistent instance, then the summary."""

import dagster as dg
import pandas as pd
import pytest

from feedback_pipeline.demo import format_summary, run_demo
from feedback_pipeline.lib import storage
from feedback_pipeline_tests.conftest import small_config

pytestmark = pytest.mark.slow


def test_demo_runs_every_day_through_dagster_and_reports_findings(settings, data_dir) -> None:
    config = small_config(settings, days=9)
    lines: list[str] = []
    summary = run_demo(config, report=lines.append)

    assert summary["failed_runs"] == []
    assert lines[0].startswith("Simulating 9 days x 400 predictions")
    # The runs are in the persistent instance that `dagster dev` opens afterwards.
    with dg.DagsterInstance.from_config(summary["dagster_home"]) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="daily_monitoring_job"))
        # Each night its day and the three before it again; at the end every day once more.
        stages = [r.tags["feedback_pipeline/demo"] for r in runs]
        assert (stages.count("night"), stages.count("restate"), stages.count("final")) == (9, 21, 9)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # The reference the night its window ends, and again at the end (its labels maturing).
        references = instance.get_runs(filters=dg.RunsFilter(job_name="reference_job"))
        assert len(references) == 2
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in references)
        (board,) = instance.get_runs(filters=dg.RunsFilter(job_name="dashboard_job"))
        assert board.status == dg.DagsterRunStatus.SUCCESS
        # 400 predictions a day give too few thumbs and ratings for any rule to fire.
        assert summary["retrainings"] == []
        key = dg.AssetKey("performance_metrics")
        materialized = instance.get_materialized_partitions(key)
        assert materialized == {config.day(i).isoformat() for i in range(9)}

    metrics = storage.read_parquet(
        storage.partition_path(settings.resolve("warehouse"), "performance_metrics", config.day(0))
    )
    assert set(metrics["model_version"]) == {"all", "v1", "v2"}
    assert {"segment", "accuracy", "latency_p95_ms", "maturity"} <= set(metrics.columns)
    # The planted concept drift (day 5 on) lowers realized accuracy for both versions.
    accuracy = summary["accuracy_by_version"]
    before, after = accuracy.iloc[:5].mean(), accuracy.iloc[5:].mean()
    assert (after < before - 0.05).all()
    assert summary["quarantined_rows"] > 0
    assert isinstance(summary["overall"], pd.DataFrame)
    # Calibrated on the first week: every day gets an estimate beside its realized value.
    assert summary["estimation"]["days_estimated"] == 9

    text = format_summary(summary, settings)
    assert "What the pipeline found" in text
    assert "make dev" in text and summary["dagster_home"] in text
    assert "estimated performance (CBPE) on 9 days" in text
    assert "no retraining rule fired" in text
    assert f"{settings.data_root}/dashboard/index.html" in text
