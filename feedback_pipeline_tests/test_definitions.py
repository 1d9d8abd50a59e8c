"""Every definition loads; the graph's names are listed here so changes show in review."""

import ast
from pathlib import Path

import dagster as dg
import pytest

import feedback_pipeline
from feedback_pipeline.definitions import defs

ASSETS = {
    "inference_log",
    "feedback_events",
    "attributed_feedback",
    "labeled_predictions",
    "performance_metrics",
    "monitoring_reports",
    "reference_data",
    "labeling_queue",
    "training_dataset",
    "challenger_model",
    "model_promotion",
    "feedback_metric_correlation",
    "monitoring_dashboard",
}
CHECKS = {
    ("inference_log", "rows_are_conserved"),
    ("inference_log", "quarantined_share_below_ceiling"),
    ("inference_log", "landing_data_exists"),
    ("inference_log", "volume_within_trailing_range"),
    ("inference_log", "model_version_shares_are_stable"),
    ("inference_log", "score_distribution_is_stable"),
    ("inference_log", "optional_columns_are_mostly_present"),
    ("feedback_events", "rows_are_conserved"),
    ("feedback_events", "quarantined_share_below_ceiling"),
    ("feedback_events", "landing_data_exists"),
    ("feedback_events", "volume_within_trailing_range"),
    ("attributed_feedback", "feedback_is_conserved"),
    ("labeled_predictions", "one_row_per_prediction"),
    ("labeled_predictions", "prediction_ids_are_unique"),
    ("labeled_predictions", "label_share_within_bounds"),
    ("labeled_predictions", "label_coverage_above_floor"),
}


def test_assets_and_checks_are_the_documented_graph() -> None:
    definitions = defs()
    assert {k.to_user_string() for k in definitions.resolve_all_asset_keys()} == ASSETS
    checks = definitions.resolve_asset_graph().asset_check_keys
    assert {(c.asset_key.to_user_string(), c.name) for c in checks} == CHECKS


def test_jobs_schedule_and_sensor_resolve_by_name() -> None:
    definitions = defs()
    assert definitions.resolve_job_def("daily_monitoring_job").partitions_def is not None
    assert definitions.resolve_job_def("retraining_job").tags["feedback_pipeline/retraining"]
    schedule = definitions.resolve_schedule_def("nightly_monitoring_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert definitions.resolve_sensor_def("retrain_on_feedback_breach").job_name == "retraining_job"
    assert definitions.resolve_job_def("reference_job").partitions_def is None
    assert (
        definitions.resolve_schedule_def("reference_refresh_schedule").job_name == "reference_job"
    )
    assert definitions.resolve_schedule_def("dashboard_refresh_schedule").job_name == (
        "dashboard_job"
    )
    retraining = definitions.resolve_job_def("retraining_job")
    assert {k.to_user_string() for k in retraining.asset_layer.executable_asset_keys} == {
        "training_dataset",
        "challenger_model",
        "model_promotion",
        "reference_data",
    }


def test_stages_are_asset_groups() -> None:
    graph = defs().resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups["inference_log"] == groups["feedback_events"] == "ingestion"
    assert groups["labeled_predictions"] == "labeling"
    assert groups["performance_metrics"] == "monitoring"
    assert groups["training_dataset"] == groups["model_promotion"] == "training"
    assert groups["monitoring_dashboard"] == groups["feedback_metric_correlation"] == "analysis"
    assert groups["labeling_queue"] == "labeling"


def test_lib_never_imports_dagster() -> None:
    lib = Path(feedback_pipeline.__file__).parent / "lib"
    offenders = []
    for path in lib.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "dagster"]
    assert offenders == []


def test_a_job_executes_in_process() -> None:
    job = defs().resolve_job_def("daily_monitoring_job")
    assert isinstance(job, dg.JobDefinition)
    assert job.executor_def.name == "in_process"


def test_definitions_are_built_once_per_value_of_the_projects_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = Path(feedback_pipeline.__file__).parent / "config" / "default.yaml"
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(default.read_text())
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTINGS", str(tmp_path / "a.yaml"))
    first = defs()
    assert defs() is first
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    assert defs() is first

    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTINGS", str(tmp_path / "b.yaml"))
    other = defs()

    assert other is not first
    files = [d.resources["pipeline"].settings_file for d in (first, other)]  # pyright: ignore[reportOptionalSubscript, reportAttributeAccessIssue]
    assert files == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]


def test_the_project_s_instance_keeps_debug_messages_out_of_the_event_log(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_bytes(
        (Path(feedback_pipeline.__file__).parents[1] / "dagster.yaml").read_bytes()
    )

    @dg.asset
    def talkative(context: dg.AssetExecutionContext) -> int:
        context.log.debug("a detail")
        context.log.info("a fact")
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize([talkative], instance=instance)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]

    assert "a fact" in messages
    assert "a detail" not in messages
