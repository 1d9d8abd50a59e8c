"""The retraining loop in real Dagster runs: dataset, challenger, gate, reference and rollback.

A week of small simulated traffic with a concept drift on day 5 is run night by night into a
persistent instance; then the retraining job runs for the last day, twice, and a rollback follows.
MLflow is a real SQLite store under the module's data directory.
"""

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from feedback_pipeline.definitions import defs
from feedback_pipeline.defs.automation import champion_state
from feedback_pipeline.lib import registry, storage
from feedback_pipeline.lib.settings import (
    DATA_DIR_ENV,
    SETTINGS_ENV,
    Settings,
    default_settings_path,
    load_settings,
)
from feedback_pipeline.rollback import rollback
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline_tests.conftest import small_config

pytestmark = pytest.mark.slow

DAYS = 8
NIGHT = ["inference_log", "feedback_events", "attributed_feedback", "labeled_predictions"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    """Demo settings with a gate sized for a small holdout, over a module data directory."""
    root = tmp_path_factory.mktemp("retraining")
    raw = yaml.safe_load(default_settings_path().read_text())
    raw["training"] |= {"days": 4, "holdout_share": 0.3}
    raw["promotion"] |= {"min_samples": 100, "n_resamples": 500}
    raw["labeling_queue"] = {"per_day": 30}
    path = root / "settings.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(root / "data"))
        patch.setenv(SETTINGS_ENV, str(path))
        patch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        patch.setenv("FEEDBACK_PIPELINE_HASH_KEY", "a test key, never in a file of the repo")
        (root / "dagster_home").mkdir()
        yield load_settings()


def _job(name: str) -> dg.JobDefinition:
    return defs().resolve_job_def(name)


@pytest.fixture(scope="module")
def history(settings: Settings) -> list[str]:
    """Eight nights, every day restated with all feedback, the reference and the metrics."""
    config = dataclasses.replace(small_config(settings, days=DAYS), rows_per_day=600)
    simulate_landing(settings, config)
    days = [config.day(i).isoformat() for i in range(DAYS)]
    daily = _job("daily_monitoring_job")
    with dg.DagsterInstance.get() as instance:
        for day in days:
            daily.execute_in_process(
                partition_key=day,
                instance=instance,
                asset_selection=[dg.AssetKey(k) for k in [*NIGHT, "labeling_queue"]],
            )
        for day in days:
            daily.execute_in_process(
                partition_key=day,
                instance=instance,
                asset_selection=[dg.AssetKey(k) for k in NIGHT[2:]],
            )
        _job("reference_job").execute_in_process(instance=instance)
        for day in days:
            daily.execute_in_process(
                partition_key=day,
                instance=instance,
                asset_selection=[dg.AssetKey("performance_metrics")],
            )
        for day in days[-2:]:  # Evidently reports and MLflow monitoring runs of two days
            daily.execute_in_process(
                partition_key=day,
                instance=instance,
                asset_selection=[dg.AssetKey("monitoring_reports")],
            )
    return days


def _retrain(breach_day: str) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.get() as instance:
        return _job("retraining_job").execute_in_process(
            instance=instance,
            tags={"feedback_pipeline/breach_day": breach_day, "feedback_pipeline/rule": "test"},
        )


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset
    ]
    materialization = event.step_materialization_data.materialization
    return {k: v.value for k, v in materialization.metadata.items()}


@pytest.fixture(scope="module")
def first(history: list[str]) -> dg.ExecuteInProcessResult:
    """A retraining for the last day, after the drift: the challenger should win."""
    return _retrain(history[-1])


def test_training_dataset_is_point_in_time_and_records_its_lineage(
    settings: Settings, history: list[str], first
) -> None:
    meta = _metadata(first, "training_dataset")
    assert meta["partitions"] == history[-4:]
    assert meta["last_day"] == history[-1]
    cutoff = pd.Timestamp(meta["feedback_cutoff"])
    assert cutoff == storage.day_end(history[-1]) + settings.max_clock_skew
    rows = storage.read_parquet(meta["path"])
    assert len(rows) == meta["n_rows"] > 300
    assert set(rows["day"]) == set(history[-4:])
    assert meta["positive_share"] == pytest.approx(rows["label"].mean())
    assert f"version={meta['dataset_version']}" in meta["path"]


def test_challenger_is_registered_with_its_curve(settings: Settings, first) -> None:
    from mlflow import MlflowClient

    meta = _metadata(first, "challenger_model")
    assert meta["model_version"] == "1"
    assert meta["n_train"] + meta["n_holdout"] == _metadata(first, "training_dataset")["n_rows"]
    client = MlflowClient(tracking_uri=settings.tracking.uri(settings))
    version = client.get_model_version(settings.model_name, "1")
    assert version.tags["feedback_pipeline.trained_through"] == meta["trained_through"]
    history = client.get_metric_history(meta["mlflow_run_id"], "validation_loss")
    assert len(history) == meta["iterations"] + 1
    assert history[-1].value == pytest.approx(meta["final_validation_loss"])
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.params["dataset_version"] == meta["dataset_version"]
    assert "holdout_accuracy" in run.data.metrics


def test_the_gate_promotes_a_better_challenger_and_replaces_the_reference(
    settings: Settings, first
) -> None:
    gate = _metadata(first, "model_promotion")
    assert gate["decision"] == "promoted", gate["reasons"]
    assert gate["champion"] == "the logged scores of the serving model"
    assert gate["challenger_value"] > gate["champion_value"] + gate["margin"]
    assert gate["gain_lower_bound"] > gate["margin"]
    assert registry.alias(settings, registry.CHAMPION).version == "1"
    reference = _metadata(first, "reference_data")
    assert reference["source"] == "champion version 1"
    assert reference["serving_label"] == "mlflow-1"
    frame = storage.read_parquet(gate["reference_path"])
    # The champion's own rows, and the earlier versions' rows of the reference it replaced.
    assert set(frame["model_version"]) == {"mlflow-1", "v1", "v2"}
    own = frame[frame["model_version"] == "mlflow-1"]
    assert own["calibration"].sum() == _metadata(first, "challenger_model")["n_holdout"]
    assert len(own) == _metadata(first, "training_dataset")["n_rows"]
    with dg.DagsterInstance.get() as instance:
        baselines, source, through = champion_state(instance)
    assert source == "champion 1"
    assert baselines["accuracy"] == pytest.approx(gate["baseline__accuracy"])
    assert through == gate["trained_through"]


def test_the_gate_rejects_an_equal_challenger(settings: Settings, history, first) -> None:
    second = _retrain(history[-1])
    assert (
        _metadata(second, "training_dataset")["dataset_version"]
        == _metadata(first, "training_dataset")["dataset_version"]
    )
    gate = _metadata(second, "model_promotion")
    assert gate["decision"] == "rejected"
    assert gate["champion"] == "version 1"
    assert gate["gain"] == pytest.approx(0.0)
    assert any("below the margin" in r for r in gate["reasons"])
    assert registry.alias(settings, registry.CHAMPION).version == "1"
    assert registry.alias(settings, registry.PREVIOUS) is None


def test_rollback_puts_the_previous_champion_back(settings: Settings, history, first) -> None:
    with pytest.raises(registry.RegistryError, match="no previous_champion"):
        rollback(rebuild_reference=False)
    # Promote the rejected version 2 by hand, as a release manager could.
    gate = _metadata(first, "model_promotion")
    registry.record_decision(settings, "2", "1", {"promote": True, "reasons": []})
    registry.tag_champion(settings, "2", gate["reference_path"], {"accuracy": 0.5}, history[-1])
    assert registry.alias(settings, registry.PREVIOUS).version == "1"

    outcome = rollback("test rollback")

    assert (outcome.restored, outcome.demoted, outcome.reference_rebuilt) == ("1", "2", True)
    assert registry.alias(settings, registry.CHAMPION).version == "1"
    assert registry.alias(settings, registry.PREVIOUS) is None
    with dg.DagsterInstance.get() as instance:
        baselines, source, _ = champion_state(instance)
        event = instance.get_latest_materialization_event(dg.AssetKey("reference_data"))
    assert source == "champion 1"
    assert baselines["accuracy"] == pytest.approx(gate["baseline__accuracy"], abs=1e-6)
    assert event.asset_materialization.metadata["source"].value == "champion version 1"


def test_labeling_queue_asks_for_the_labels_still_missing(settings: Settings, history) -> None:
    folder = Path(settings.resolve("labeling_queue")) / f"date={history[2]}"
    written_at_night = pd.read_csv(folder / "queue.csv")
    # Asked again once more labels came in: only predictions still without one.
    with dg.DagsterInstance.get() as instance:
        _job("daily_monitoring_job").execute_in_process(
            partition_key=history[2],
            instance=instance,
            asset_selection=[dg.AssetKey("labeling_queue")],
        )
    queue = pd.read_csv(folder / "queue.csv")
    tasks = json.loads((folder / "tasks.json").read_text())
    assert len(queue) == len(tasks) == 30
    labeled = storage.read_parquet(
        storage.partition_path(settings.resolve("warehouse"), "labeled_predictions", history[2])
    )
    status = labeled.set_index("prediction_id")["label_status"].astype(str)
    assert (status.loc[queue["prediction_id"]] != "labeled").all()
    # The features shown are the chosen predictions' own, read for those rows alone.
    feature = settings.inference_columns.features[0]
    shown = labeled.set_index("prediction_id")[feature].loc[queue["prediction_id"]]
    np.testing.assert_allclose(queue[feature].to_numpy(), shown.to_numpy())
    assert queue["uncertainty"].is_monotonic_decreasing
    assert queue["stratum"].nunique() > 5
    assert dt.date.fromisoformat(history[2]) == pd.Timestamp(queue["timestamp"].iloc[0]).date()
    assert set(queue["prediction_id"]) != set(written_at_night["prediction_id"])


@pytest.fixture(scope="module")
def dashboard_run(history, first) -> dg.ExecuteInProcessResult:
    """The analysis and the dashboard, built from the module's history."""
    with dg.DagsterInstance.get() as instance:
        return _job("dashboard_job").execute_in_process(instance=instance)


def test_the_analysis_relates_feedback_to_metrics(settings: Settings, dashboard_run) -> None:
    meta = _metadata(dashboard_run, "feedback_metric_correlation")
    table = dashboard_run.asset_value("feedback_metric_correlation")
    assert meta["days"] == DAYS
    assert meta["pairs_tested"] + meta["inconclusive"] == len(table) > 0
    # Eight days per slice: every pair has at least the minimum, or says it has not.
    short = table[table["n"] < 7]
    assert (short["verdict"] == "inconclusive").all()
    assert (table.loc[table["verdict"] != "inconclusive", "p_adjusted"] >= 0).all()
    correctness = pd.read_parquet(Path(settings.resolve("analysis")) / "by_correctness.parquet")
    thumbs = correctness[
        (correctness["model_version"] == "all") & (correctness["signal"].str.startswith("thumb"))
    ].iloc[0]
    # The simulator's users give thumbs up to right predictions far more often.
    assert thumbs["mean_correct"] > thumbs["mean_wrong"] + 0.2


def test_the_dashboard_page_is_written_with_its_tables(settings: Settings, dashboard_run) -> None:
    meta = _metadata(dashboard_run, "monitoring_dashboard")
    page = Path(meta["path"])
    assert page.name == "index.html" and page.parent == Path(settings.resolve("dashboard"))
    html = page.read_text()
    assert html.count("Plotly.register") <= 1 or "plotly" in html.lower()
    assert '<script src="http' not in html
    assert {"metrics.csv", "alerts.csv", "retrainings.csv"} <= set(meta["tables"])
    retrainings = pd.read_csv(page.parent / "retrainings.csv")
    assert list(retrainings["decision"][:2]) == ["promoted", "rejected"]


VIEWS = ("executive", "data-scientist", "ml-engineer", "product-manager")


def test_the_dashboard_works_in_a_browser(settings: Settings, dashboard_run, tmp_path) -> None:
    """Headless Chromium: every view, every filter, no JavaScript error, a screenshot per view."""
    import functools
    import http.server
    import shutil
    import threading

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH: run scripts/install-chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    page_dir = Path(settings.resolve("dashboard"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    problems: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
            page.wait_for_selector('section[data-view="executive"]')
            for view in VIEWS:
                page.click(f'button[data-view-tab="{view}"]')
                section = page.locator(f'section[data-view="{view}"]')
                assert section.is_visible(), view
                for other in VIEWS:
                    if other != view:
                        assert not page.locator(f'section[data-view="{other}"]').is_visible()
                page.screenshot(path=str(tmp_path / f"{view}.png"), full_page=True)
            # Every filter, on the data scientist's view with its charts.
            page.click('button[data-view-tab="data-scientist"]')
            values = "options => options.map(o => o.value)"
            versions = page.locator("#filter-version option").evaluate_all(values)
            assert {"all", "v1", "v2"} <= set(versions)
            page.select_option("#filter-version", "v2")
            segments = page.locator("#filter-segment option").evaluate_all(values)
            assert len(segments) > 3
            page.select_option("#filter-segment", segments[-1])
            page.fill("#filter-start", history_day(settings, 2))
            page.fill("#filter-end", history_day(settings, 5))
            page.dispatch_event("#filter-end", "change")
            page.click('button[data-view-tab="product-manager"]')
            page.select_option("#filter-version", "all")
            page.click('button[data-view-tab="ml-engineer"]')
            page.wait_for_timeout(300)
            plots = page.locator(".js-plotly-plot").count()
            browser.close()
    finally:
        server.shutdown()
    assert problems == []
    assert plots > 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{v}.png" for v in VIEWS)
    assert all((tmp_path / f"{v}.png").stat().st_size > 10_000 for v in VIEWS)


def history_day(settings: Settings, index: int) -> str:
    """The index-th simulated day, as the date inputs want it."""
    return (settings.start_date + dt.timedelta(days=index)).isoformat()


def test_the_dashboard_command_rebuilds_the_page_and_prints_its_path(
    settings: Settings, dashboard_run, capsys
) -> None:
    from feedback_pipeline.cli import main

    page = Path(settings.resolve("dashboard")) / "index.html"
    before = page.stat().st_mtime_ns
    assert main(["dashboard"]) == 0
    assert capsys.readouterr().out.strip() == str(page)
    assert page.stat().st_mtime_ns > before


RAW_ID = re.compile(rb"(?<![0-9A-Za-z_-])(?:c-\d{6}|u-\d{6}|u-bot-\d{4})(?![0-9A-Za-z_-])")


def test_no_raw_personal_id_leaves_the_pipeline(settings: Settings, history, dashboard_run) -> None:
    """Entity and user ids are personal in the demo settings: none reaches an export."""
    root = Path(settings.data_root)
    warehouse = settings.resolve("warehouse")
    raw: set[bytes] = set()
    for day in history:
        log = storage.read_parquet(storage.partition_path(warehouse, "inference_log", day))
        events = storage.read_parquet(storage.partition_path(warehouse, "feedback_events", day))
        raw |= {v.encode() for v in log["entity_id"].astype(str)}
        raw |= {v.encode() for v in events["user_id"].dropna().astype(str)}
        raw |= {v.encode() for v in events["entity_id"].dropna().astype(str)}
    assert len(raw) > 1000 and all(RAW_ID.fullmatch(v) for v in list(raw)[:50])
    # The scan finds raw ids where they are: the landing files the systems delivered.
    landing = Path(settings.resolve(settings.landing.feedback)) / f"date={history[2]}" / "crm.csv"
    assert len(set(RAW_ID.findall(landing.read_bytes())) & raw) > 50
    exports = {
        "MLflow": Path(settings.resolve("mlflow")),
        "Evidently": Path(settings.resolve(settings.reports.workspace)),
        "reports": Path(settings.resolve(settings.reports.directory)),
        "dashboard": Path(settings.resolve("dashboard")),
        "labeling queue": Path(settings.resolve(settings.labeling_queue.directory)),
        "Dagster metadata and logs": root.parent / "dagster_home",
    }
    checked = 0
    leaks: dict[str, set[bytes]] = {}
    for name, folder in exports.items():
        files = [f for f in folder.rglob("*") if f.is_file()]
        assert files, f"{name}: nothing written under {folder}"
        for file in files:
            found = set(RAW_ID.findall(file.read_bytes())) & raw
            checked += 1
            if found:
                leaks.setdefault(f"{name}: {file.relative_to(folder)}", set()).update(found)
    assert leaks == {}
    # The exports do carry the pseudonyms: the queue names its customers by them.
    queue = pd.read_csv(
        Path(settings.resolve("labeling_queue")) / f"date={history[2]}" / "queue.csv"
    )
    assert queue["entity_id"].str.fullmatch(r"p_[0-9a-f]{16}").all()
    assert checked > 20
