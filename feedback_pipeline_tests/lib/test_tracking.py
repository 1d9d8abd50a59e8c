"""MLflow tracking of monitoring runs, against a real SQLite store shared by the module."""

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests.adapters

from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings, Tracking, load_settings
from feedback_pipeline.lib.tracking import (
    DAGSTER_RUN_ID_TAG,
    HTTP_DEFAULTS,
    MODEL_VERSION_TAG,
    PARAMS_CHANGED_TAG,
    PARTITION_TAG,
    MonitoringRun,
    TrackingError,
    find_monitoring_run,
    log_monitoring_run,
    metric_name,
    monitoring_experiment,
    run_url,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEAD = "http://127.0.0.1:9"  # the discard port: connections are refused at once


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory, and so one SQLite store, for the whole module: migrations are slow."""
    return tmp_path_factory.mktemp("tracking_data")


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory; nothing may be written to it."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert sorted(os.listdir(work)) == []


@pytest.fixture
def settings(store_root: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The demo settings with the shared data directory and no tracking URI from outside."""
    monkeypatch.setenv(DATA_DIR_ENV, str(store_root))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_UI_URL", *HTTP_DEFAULTS):
        monkeypatch.delenv(name, raising=False)
    return load_settings()


def client(settings: Settings) -> "MlflowClient":
    from mlflow import MlflowClient  # slow to import: only when these tests run

    return MlflowClient(tracking_uri=settings.tracking.uri(settings))


def with_uri(settings: Settings, uri: str | None) -> Settings:
    return settings.model_copy(update={"tracking": Tracking(tracking_uri=uri)})


def reports(directory: Path, text: str = "v1") -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    html, summary = directory / "drift.html", directory / "summary.json"
    html.write_text(f"<html>{text}</html>")
    summary.write_text(json.dumps({"text": text}))
    return [str(html), str(summary)]


def runs_with_tags(settings: Settings, day: str, version: str) -> list[str]:
    found = client(settings).search_runs(
        [monitoring_experiment(settings)],
        f"tags.`{PARTITION_TAG}` = '{day}' and tags.`{MODEL_VERSION_TAG}` = '{version}'",
    )
    return [r.info.run_id for r in found]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("accuracy", "accuracy"),
        ("segment/country=US/accuracy", "segment/country_US/accuracy"),
        ("latency p95 (ms)", "latency p95 _ms_"),
        ("a:b", "a_b"),
        ("größe", "gr_e"),
        ("/a//b/./c/", "a/b/c"),
        ("../up", "__/up"),
        ("", "_"),
    ],
)
def test_metric_name(key: str, expected: str) -> None:
    assert metric_name(key) == expected


def test_creates_the_run_with_metrics_params_tags_and_reports(
    settings: Settings, tmp_path: Path
) -> None:
    run = log_monitoring_run(
        settings,
        "2024-05-01",
        "1",
        metrics={"accuracy": 0.91, "country=US/accuracy": 0.8, "auc": None, "ece": math.nan},
        params={"score_cutoff": "0.5", "window.label": "7d", "policy": "exclude"},
        artifacts=reports(tmp_path / "reports"),
        tags={"owner": "ml-team"},
        dagster_run_id="dagster-1",
    )

    assert run.created
    assert run.experiment_id == monitoring_experiment(settings)
    stored = client(settings).get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.experiment_id == run.experiment_id
    assert stored.data.metrics == {"accuracy": 0.91, "country_US/accuracy": 0.8}
    assert stored.data.params == {"score_cutoff": "0.5", "window.label": "7d", "policy": "exclude"}
    assert stored.data.tags[PARTITION_TAG] == "2024-05-01"
    assert stored.data.tags[MODEL_VERSION_TAG] == "1"
    assert stored.data.tags[DAGSTER_RUN_ID_TAG] == "dagster-1"
    assert stored.data.tags["owner"] == "ml-team"
    assert PARAMS_CHANGED_TAG not in stored.data.tags
    listed = {a.path for a in client(settings).list_artifacts(run.run_id, "reports")}
    assert listed == {"reports/drift.html", "reports/summary.json"}
    html = client(settings).download_artifacts(run.run_id, "reports/drift.html", str(tmp_path))
    assert Path(html).read_text() == "<html>v1</html>"
    assert find_monitoring_run(settings, "2024-05-01", "1") == run.run_id


def test_logging_a_day_again_updates_its_run(settings: Settings, tmp_path: Path) -> None:
    day, version = "2024-05-02", "1"
    first = log_monitoring_run(
        settings,
        day,
        version,
        {"accuracy": 0.9},
        {"score_cutoff": "0.5"},
        artifacts=reports(tmp_path / "first", "v1"),
        dagster_run_id="dagster-1",
    )
    again = log_monitoring_run(
        settings,
        day,
        version,
        {"accuracy": 0.7, "labels": 120.0},
        {"score_cutoff": "0.6", "policy": "negative"},
        artifacts=reports(tmp_path / "again", "v2"),
    )

    assert again == MonitoringRun(first.run_id, first.experiment_id, created=False)
    assert runs_with_tags(settings, day, version) == [first.run_id]
    tracked = client(settings)
    stored = tracked.get_run(first.run_id)
    assert stored.data.metrics == {"accuracy": 0.7, "labels": 120.0}
    assert [m.value for m in tracked.get_metric_history(first.run_id, "accuracy")] == [0.9, 0.7]
    # The first value of a param stays; the change is flagged and the current values kept aside.
    assert stored.data.params == {"score_cutoff": "0.5", "policy": "negative"}
    assert stored.data.tags[PARAMS_CHANGED_TAG] == "score_cutoff"
    assert DAGSTER_RUN_ID_TAG not in stored.data.tags  # the last logging was not Dagster's
    current = tracked.download_artifacts(first.run_id, "settings/params.json", str(tmp_path))
    assert json.loads(Path(current).read_text()) == {"score_cutoff": "0.6", "policy": "negative"}
    html = tracked.download_artifacts(first.run_id, "reports/drift.html", str(tmp_path / "dl"))
    assert Path(html).read_text() == "<html>v2</html>"

    back = log_monitoring_run(
        settings, day, version, {"accuracy": 0.8, "labels": None}, {"score_cutoff": "0.5"}
    )
    assert back.run_id == first.run_id
    stored = tracked.get_run(first.run_id)
    assert PARAMS_CHANGED_TAG not in stored.data.tags
    assert stored.data.metrics["accuracy"] == 0.8
    assert math.isnan(stored.data.metrics["labels"])  # no longer known: the old 120 must not stand


def test_other_days_and_versions_get_their_own_runs(settings: Settings) -> None:
    base = log_monitoring_run(settings, "2024-05-03", "1", {"accuracy": 0.9}, {})
    other_version = log_monitoring_run(settings, "2024-05-03", "2", {"accuracy": 0.8}, {})
    other_day = log_monitoring_run(settings, "2024-05-04", "1", {"accuracy": 0.7}, {})

    assert base.created and other_version.created and other_day.created
    assert len({base.run_id, other_version.run_id, other_day.run_id}) == 3
    assert find_monitoring_run(settings, "2024-05-03", "2") == other_version.run_id
    assert find_monitoring_run(settings, "2024-05-05", "1") is None


def test_duplicate_runs_are_resolved_to_the_oldest(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    day, version = "2024-05-06", "1"
    oldest = log_monitoring_run(settings, day, version, {"accuracy": 0.9}, {})
    tracked = client(settings)
    duplicate = tracked.create_run(
        oldest.experiment_id,
        start_time=tracked.get_run(oldest.run_id).info.start_time + 1000,
        tags={PARTITION_TAG: day, MODEL_VERSION_TAG: version},
    )

    with caplog.at_level(logging.WARNING, logger="feedback_pipeline.lib.tracking"):
        again = log_monitoring_run(settings, day, version, {"accuracy": 0.5}, {})

    assert again.run_id == oldest.run_id and not again.created
    assert sorted(runs_with_tags(settings, day, version)) == sorted(
        [oldest.run_id, duplicate.info.run_id]
    )
    assert duplicate.info.run_id in caplog.text and "using the oldest" in caplog.text


def test_the_store_and_artifacts_live_under_the_data_dir(
    settings: Settings, store_root: Path, cwd: Path, tmp_path: Path
) -> None:
    run = log_monitoring_run(
        settings, "2024-05-07", "1", {"accuracy": 0.9}, {}, reports(tmp_path / "r")
    )

    assert settings.tracking.uri(settings) == f"sqlite:///{store_root}/mlflow/mlflow.db"
    assert (store_root / "mlflow" / "mlflow.db").is_file()
    data_uri = store_root.resolve().as_uri()
    experiment = client(settings).get_experiment(run.experiment_id)
    assert experiment.artifact_location.startswith(f"{data_uri}/mlflow/artifacts/")
    assert str(client(settings).get_run(run.run_id).info.artifact_uri).startswith(data_uri)
    reports_dir = store_root / "mlflow" / "artifacts"
    assert list(reports_dir.rglob("drift.html"))
    assert not (cwd / "mlruns").exists() and not (cwd / "mlflow.db").exists()


def test_nothing_is_logged_when_a_report_is_missing(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.html"):
        log_monitoring_run(settings, "2024-05-08", "1", {}, {}, [str(tmp_path / "missing.html")])
    assert find_monitoring_run(settings, "2024-05-08", "1") is None


def test_names_that_collide_once_sanitized_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="both become 'country_US'"):
        log_monitoring_run(settings, "2024-05-09", "1", {"country=US": 1.0, "country_US": 2.0}, {})
    assert find_monitoring_run(settings, "2024-05-09", "1") is None


def test_a_run_that_fails_midway_is_marked_failed_and_reused(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def broken(*args: Any, **kwargs: Any) -> None:
        raise MlflowException("artifact store full")

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "log_dict", broken)
        with pytest.raises(TrackingError, match="failed: artifact store full"):
            log_monitoring_run(settings, "2024-05-10", "1", {"accuracy": 0.9}, {})

    run_id = find_monitoring_run(settings, "2024-05-10", "1")
    assert run_id is not None
    assert client(settings).get_run(run_id).info.status == "FAILED"
    again = log_monitoring_run(settings, "2024-05-10", "1", {"accuracy": 0.9}, {})
    assert again.run_id == run_id and not again.created
    assert client(settings).get_run(run_id).info.status == "FINISHED"


def test_a_deleted_experiment_is_reported(settings: Settings) -> None:
    other = settings.model_copy(update={"model_name": "retired_model"})
    client(other).delete_experiment(monitoring_experiment(other))

    with pytest.raises(TrackingError, match=r"'retired_model monitoring'.*is deleted"):
        log_monitoring_run(other, "2024-05-01", "1", {"accuracy": 1.0}, {})


def test_the_tracking_uri_in_force(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dead servers make the URI actually used visible in the error, without a second store.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{DEAD}/from-env")
    configured = with_uri(settings, f"{DEAD}/from-settings")

    with pytest.raises(TrackingError, match="from-settings"):
        monitoring_experiment(configured)
    with pytest.raises(TrackingError, match="from-env"):
        monitoring_experiment(settings)

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert settings.tracking.uri(settings) == f"sqlite:///{settings.data_root}/mlflow/mlflow.db"
    assert find_monitoring_run(settings, "1999-01-01", "1") is None  # the default store answers


def test_an_unreachable_server_fails_fast_naming_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = with_uri(settings, f"http://user:secret@{DEAD.removeprefix('http://')}")

    started = time.monotonic()
    with pytest.raises(TrackingError) as raised:
        log_monitoring_run(dead, "2024-05-01", "1", {"accuracy": 0.9}, {"cutoff": "0.5"})

    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith("MLflow tracking store http://user:***@127.0.0.1:9 is unreachable")
    assert "secret" not in message


def test_remote_stores_get_low_http_retries_only_during_the_call(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # retry at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    seen: list[tuple[str | None, ...]] = []
    send = requests.adapters.HTTPAdapter.send

    def spy(self: requests.adapters.HTTPAdapter, *args: Any, **kwargs: Any) -> Any:
        seen.append(tuple(os.environ.get(n) for n in HTTP_DEFAULTS))
        return send(self, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    with pytest.raises(TrackingError, match="unreachable"):
        find_monitoring_run(with_uri(settings, DEAD), "2024-05-01", "1")

    assert seen and set(seen) == {tuple(HTTP_DEFAULTS.values())}
    assert not any(name in os.environ for name in HTTP_DEFAULTS)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the caller's values win
    seen.clear()
    with pytest.raises(TrackingError):
        find_monitoring_run(with_uri(settings, DEAD), "2024-05-01", "1")
    assert seen == [("0", HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"])]
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_run_url(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    run = MonitoringRun("abc123", "7", created=True)
    assert run_url(settings, run) == "http://127.0.0.1:5000/#/experiments/7/runs/abc123"
    remote = with_uri(settings, "https://user:pw@mlflow.example.com/")
    assert run_url(remote, run) == "https://mlflow.example.com/#/experiments/7/runs/abc123"
    monkeypatch.setenv("MLFLOW_UI_URL", "http://mlflow.internal:8080/")
    assert run_url(remote, run) == "http://mlflow.internal:8080/#/experiments/7/runs/abc123"
