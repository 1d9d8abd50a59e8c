"""The MLflow model registry: challengers, champion aliases, gate decisions and rollback.

Everything runs against a real SQLite MLflow store shared by the module (its migrations are
slow); each test registers its own model name, so no test sees another's versions or aliases.
The models are tiny real scikit-learn pipelines fitted by ``training.fit``.

Registering a model makes MLflow infer its pip requirements by loading it in a subprocess that
imports MLflow (about 8 s). ``MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT`` bounds that to a second,
after which MLflow falls back to its default requirements: the registry's behaviour is the same.
"""

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from feedback_pipeline.lib import training
from feedback_pipeline.lib.registry import (
    CHAMPION,
    PREVIOUS,
    ModelRef,
    RegistryError,
    alias,
    baseline,
    experiment_name,
    load_model,
    record_decision,
    register_challenger,
    rollback,
    serving_label,
    tag_champion,
)
from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings, load_settings
from feedback_pipeline.lib.tracking import MODEL_NAME_TAG, TrackingError, client

TAG = "feedback_pipeline."
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class Trained:
    """Rows with a planted signal and two different models fitted on them."""

    rows: pd.DataFrame
    first: Pipeline
    second: Pipeline


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory, and so one SQLite store, for the whole module: migrations are slow."""
    return tmp_path_factory.mktemp("registry_data")


def _fast(settings: Settings, **training_changes: Any) -> Settings:
    changes = {"max_iter": 20, **training_changes}
    return settings.model_copy(update={"training": settings.training.model_copy(update=changes)})


@pytest.fixture(scope="module")
def trained(store_root: Path) -> Trained:
    """300 rows whose label follows two numeric features and the plan, and two fitted models."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv(DATA_DIR_ENV, str(store_root))
        settings = load_settings()
    numeric, categorical = training.model_columns(settings)
    rng = np.random.default_rng(7)
    n = 300
    rows = pd.DataFrame({column: rng.normal(size=n) for column in numeric})
    for column in categorical:
        rows[column] = rng.choice(settings.categorical_values[column], size=n)
    logit = 2.0 * rows[numeric[0]] - 1.5 * rows[numeric[1]] + np.where(rows["plan"] == "pro", 1, 0)
    rows["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    first = training.fit(rows, _fast(settings))
    second = training.fit(rows, _fast(settings, learning_rate=0.3, max_leaf_nodes=4))
    return Trained(rows, first, second)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory; nothing may be written to it (no ./mlruns, no mlflow.db)."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert sorted(os.listdir(work)) == []


@pytest.fixture(autouse=True)
def mlflow_uris() -> Iterator[None]:
    """Puts MLflow's process-wide tracking and registry URIs back as they were before the test."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    environment = {name: os.environ.get(name) for name in URI_ENV}
    yield
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def settings(
    store_root: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Settings:
    """The demo settings on the shared store, with a model name of the test's own."""
    monkeypatch.setenv(DATA_DIR_ENV, str(store_root))
    for name in (*URI_ENV, "MLFLOW_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
    name = "registry_" + request.node.name.removeprefix("test_")[:80]
    return _fast(load_settings()).model_copy(update={"model_name": name})


def register(
    settings: Settings, model: Pipeline, rows: pd.DataFrame, tags: dict[str, str] | None = None
) -> ModelRef:
    curve = training.training_curve(model)
    return register_challenger(
        settings,
        model,
        training.inputs(rows.head(50), settings),
        params={"max_iter": settings.training.max_iter, "iterations_run": len(curve) - 1},
        metrics={"holdout_auc": 0.8},
        curve=curve,
        tags=tags or {},
    )


def decision(
    promote: bool, reasons: list[str] | None = None, **numbers: float | None
) -> dict[str, Any]:
    return {"promote": promote, "reasons": reasons or [], **numbers}


def tags_of(settings: Settings, version: str) -> dict[str, str]:
    with client(settings) as mlflow_client:
        return dict(mlflow_client.get_model_version(settings.model_name, version).tags)


def version_of(ref: ModelRef | None) -> str | None:
    return ref.version if ref else None


def pinned(settings: Settings) -> Settings:
    """The settings with their store as an explicit URI.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``, which settings without a
    URI of their own follow: settings pinned beforehand stay on the module's store.
    """
    store = settings.tracking.uri(settings)
    tracking = settings.tracking.model_copy(update={"tracking_uri": store})
    return settings.model_copy(update={"tracking": tracking})


def test_register_challenger_logs_the_run_and_registers_versions_1_then_2(
    settings: Settings, trained: Trained, store_root: Path
) -> None:
    from mlflow.models import Model

    model, rows = trained.first, trained.rows
    curve = training.training_curve(model)
    example = training.inputs(rows.head(50), settings)
    auc = float(roc_auc_score(rows["label"], training.scores(model, rows, settings)))
    tags = {f"{TAG}dataset_version": "abc123", f"{TAG}trained_through": "2024-05-01"}

    first = register_challenger(
        settings,
        model,
        example,
        params={"max_iter": 20, "learning_rate": 0.1, "note": "x" * 600},
        metrics={"holdout_auc": auc, "holdout_brier": float("nan")},
        curve=curve,
        tags=tags,
    )
    second = register(settings, trained.second, rows)

    assert (first.version, second.version) == ("1", "2")
    assert first.tags == tags
    assert first.serving_label == "mlflow-1" and second.serving_label == "mlflow-2"
    assert first.run_id and second.run_id and first.run_id != second.run_id
    with client(settings) as mlflow_client:
        run = mlflow_client.get_run(first.run_id)
        history = mlflow_client.get_metric_history(first.run_id, "validation_loss")
        version = mlflow_client.get_model_version(settings.model_name, "1")
        experiment = mlflow_client.get_experiment(run.info.experiment_id)
        assert version.source is not None and version.source.startswith("models:/")
        logged = mlflow_client.get_logged_model(version.source.removeprefix("models:/"))
        train_loss = mlflow_client.get_metric_history(first.run_id, "train_loss")

    assert experiment.name == experiment_name(settings) == f"{settings.model_name} training"
    artifacts = f"{store_root.resolve().as_uri()}/mlflow/artifacts"
    assert experiment.artifact_location == f"{artifacts}/{settings.model_name}/training"
    assert run.info.status == "FINISHED"
    assert str(run.info.run_name).startswith("challenger ")
    assert run.data.params == {"max_iter": "20", "learning_rate": "0.1", "note": "x" * 500}
    assert run.data.metrics["holdout_auc"] == pytest.approx(auc)
    assert "holdout_brier" not in run.data.metrics  # NaN is not logged
    assert {k: run.data.tags[k] for k in tags} == tags
    assert run.data.tags[MODEL_NAME_TAG] == settings.model_name
    assert run.data.tags[f"{TAG}role"] == "challenger"

    # The training curve: one point per boosting iteration, at that iteration's step.
    assert len(curve) > 1
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == curve["iteration"].tolist()
    assert [m.value for m in history] == pytest.approx(curve["validation_loss"].tolist())
    assert run.data.metrics["validation_loss"] == pytest.approx(curve["validation_loss"].iloc[-1])
    assert len(train_loss) == len(curve)

    # The registered version: from that run, tagged with the given tags and the run id.
    assert version.run_id == first.run_id
    assert dict(version.tags) == {**tags, f"{TAG}run_id": first.run_id}
    assert logged.source_run_id == first.run_id
    mlmodel = Path(url2pathname(urlsplit(logged.artifact_location).path)) / "MLmodel"
    signature = Model.load(str(mlmodel)).signature
    assert signature is not None
    numeric, categorical = training.model_columns(settings)
    assert signature.inputs.input_names() == [*categorical, *numeric] == list(example.columns)
    assert {spec["name"]: spec["type"] for spec in signature.inputs.to_dict()} == {
        **dict.fromkeys(categorical, "string"),
        **dict.fromkeys(numeric, "double"),
    }


def test_serving_label_is_the_version_with_the_mlflow_prefix() -> None:
    assert serving_label("12") == "mlflow-12"
    assert ModelRef("3", None, {}).serving_label == "mlflow-3"


def test_alias_is_none_for_an_unknown_model_and_before_any_promotion(
    settings: Settings, trained: Trained
) -> None:
    assert alias(settings, CHAMPION) is None  # nothing registered under this name yet
    assert alias(settings, PREVIOUS) is None

    register(settings, trained.first, trained.rows)

    assert alias(settings, CHAMPION) is None
    assert alias(settings, PREVIOUS) is None


def test_a_rejected_challenger_is_recorded_and_moves_no_alias(
    settings: Settings, trained: Trained
) -> None:
    register(settings, trained.first, trained.rows)
    reasons = ["only 40 labeled rows in the holdout", "gain 0.004 below the margin 0.01"]

    run_id, replaced = record_decision(
        settings,
        "1",
        None,
        decision(False, reasons, n=40, gain=0.004, margin=0.01, p_value=None),
        {f"{TAG}dagster_run_id": "dagster-7"},
    )

    assert replaced is None
    assert alias(settings, CHAMPION) is None and alias(settings, PREVIOUS) is None
    with client(settings) as mlflow_client:
        run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "gate v1: rejected"
    assert run.info.status == "FINISHED"
    assert run.data.tags[f"{TAG}role"] == "gate"
    assert run.data.tags[f"{TAG}decision"] == "rejected"
    assert run.data.tags[f"{TAG}reasons"] == "; ".join(reasons)
    assert run.data.tags[f"{TAG}challenger_version"] == "1"
    assert run.data.tags[f"{TAG}champion"] == "logged scores"
    assert run.data.tags[f"{TAG}dagster_run_id"] == "dagster-7"
    assert run.data.tags[MODEL_NAME_TAG] == settings.model_name
    assert run.data.metrics == {"n": 40.0, "gain": 0.004, "margin": 0.01}
    version_tags = tags_of(settings, "1")
    assert version_tags[f"{TAG}decision"] == "rejected"
    assert version_tags[f"{TAG}gate_run"] == run_id
    assert f"{TAG}promoted_at" not in version_tags


def test_promotions_set_champion_and_move_the_replaced_one_to_previous_champion(
    settings: Settings, trained: Trained
) -> None:
    first = register(settings, trained.first, trained.rows)
    register(settings, trained.second, trained.rows)

    run_id, replaced = record_decision(settings, "1", None, decision(True, gain=0.02))

    assert replaced is None
    champion = alias(settings, CHAMPION)
    assert champion is not None
    assert (champion.version, champion.run_id) == ("1", first.run_id)
    assert champion.tags[f"{TAG}run_id"] == first.run_id
    assert champion.tags[f"{TAG}decision"] == "promoted"
    assert champion.tags[f"{TAG}gate_run"] == run_id
    promoted_at = dt.datetime.fromisoformat(champion.tags[f"{TAG}promoted_at"])
    assert promoted_at.tzinfo is not None
    assert alias(settings, PREVIOUS) is None
    with client(settings) as mlflow_client:
        gate = mlflow_client.get_run(run_id)
    assert gate.info.run_name == "gate v1: promoted"
    assert gate.data.tags[f"{TAG}decision"] == "promoted"

    _, replaced = record_decision(settings, "2", "1", decision(True, gain=0.03))

    assert version_of(replaced) == "1"
    assert version_of(alias(settings, CHAMPION)) == "2"
    assert version_of(alias(settings, PREVIOUS)) == "1"
    assert tags_of(settings, "2")[f"{TAG}decision"] == "promoted"


def test_load_model_returns_each_versions_own_model(settings: Settings, trained: Trained) -> None:
    register(settings, trained.first, trained.rows)
    register(settings, trained.second, trained.rows)
    features = training.inputs(trained.rows, settings)

    loaded_first, loaded_second = load_model(settings, "1"), load_model(settings, "2")

    expected_first = trained.first.predict_proba(features)
    expected_second = trained.second.predict_proba(features)
    assert not np.allclose(expected_first, expected_second)  # the two versions are told apart
    np.testing.assert_array_equal(loaded_first.predict_proba(features), expected_first)
    np.testing.assert_array_equal(loaded_second.predict_proba(features), expected_second)
    with pytest.raises(TrackingError, match=r"version=3\) not found"):
        load_model(settings, "3")


def test_rollback_restores_the_previous_champion_once(settings: Settings, trained: Trained) -> None:
    register(settings, trained.first, trained.rows)
    register(settings, trained.second, trained.rows)
    record_decision(settings, "1", None, decision(True))
    tag_champion(settings, "1", "/data/v1/reference.parquet", {"auc": 0.81234567}, "2024-05-01")
    record_decision(settings, "2", "1", decision(True))
    tag_champion(settings, "2", "/data/v2/reference.parquet", {"auc": 0.9}, "2024-05-08")

    restored, demoted = rollback(settings, reason="accuracy dropped on 2024-05-09")

    assert (restored.version, demoted.version) == ("1", "2")
    champion = alias(settings, CHAMPION)
    assert champion is not None and champion.version == "1"
    assert alias(settings, PREVIOUS) is None
    # What monitoring needs of the champion comes back with it.
    assert champion.tags[f"{TAG}reference_path"] == "/data/v1/reference.parquet"
    assert champion.tags[f"{TAG}trained_through"] == "2024-05-01"
    assert baseline(champion) == {"auc": 0.812346}
    assert tags_of(settings, "2")[f"{TAG}rolled_back"] == "true"
    assert f"{TAG}rolled_back" not in tags_of(settings, "1")
    with client(settings) as mlflow_client:
        experiment = mlflow_client.get_experiment_by_name(experiment_name(settings))
        assert experiment is not None
        runs = mlflow_client.search_runs(
            [experiment.experiment_id], f"tags.`{TAG}role` = 'rollback'"
        )
    assert len(runs) == 1
    assert runs[0].info.run_name == "rollback v2 -> v1"
    assert runs[0].info.status == "FINISHED"
    rollback_tags = runs[0].data.tags
    assert rollback_tags[f"{TAG}restored_version"] == "1"
    assert rollback_tags[f"{TAG}demoted_version"] == "2"
    assert rollback_tags[f"{TAG}reason"] == "accuracy dropped on 2024-05-09"
    assert runs[0].data.tags[MODEL_NAME_TAG] == settings.model_name

    message = (
        f"{settings.model_name} has no previous_champion to roll back to (champion is version 1)"
    )
    with pytest.raises(RegistryError, match=re.escape(message)):
        rollback(settings)
    assert version_of(alias(settings, CHAMPION)) == "1"  # the refused rollback changed nothing


def test_rollback_without_any_champion_is_refused(settings: Settings, trained: Trained) -> None:
    message = f"{settings.model_name} has no previous_champion to roll back to (no champion yet)"
    with pytest.raises(RegistryError, match=re.escape(message)):
        rollback(settings)

    register(settings, trained.first, trained.rows)
    with pytest.raises(RegistryError, match=re.escape(message)):
        rollback(settings)
    assert alias(settings, CHAMPION) is None


def test_the_process_tracking_uri_is_restored_after_loading_a_model(
    settings: Settings, trained: Trained, tmp_path: Path
) -> None:
    import mlflow

    local = pinned(settings)
    ref = register(local, trained.first, trained.rows)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)

    loaded = load_model(local, ref.version)
    assert mlflow.get_tracking_uri() == elsewhere
    with pytest.raises(TrackingError, match=r"version=99\) not found"):
        load_model(local, "99")  # restored when the call fails too

    assert mlflow.get_tracking_uri() == elsewhere
    assert mlflow.get_registry_uri() == elsewhere
    assert os.environ["MLFLOW_TRACKING_URI"] == elsewhere
    assert not (tmp_path / "elsewhere.db").exists()  # the model came from the settings' store
    features = training.inputs(trained.rows, settings)
    np.testing.assert_array_equal(
        loaded.predict_proba(features), trained.first.predict_proba(features)
    )


def test_registering_stays_on_the_settings_store_when_the_process_points_elsewhere(
    settings: Settings, trained: Trained, tmp_path: Path
) -> None:
    import mlflow

    local = pinned(settings)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)

    ref = register(local, trained.first, trained.rows)

    assert mlflow.get_tracking_uri() == elsewhere
    assert tags_of(local, ref.version)[f"{TAG}run_id"] == ref.run_id
    assert alias(local, CHAMPION) is None
    assert not (tmp_path / "elsewhere.db").exists()


def test_an_unset_tracking_uri_is_left_unset(settings: Settings) -> None:
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    assert not mlflow.is_tracking_uri_set()

    with pytest.raises(TrackingError):
        load_model(settings, "1")  # nothing registered: fails, but after pointing MLflow away

    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert not mlflow.is_tracking_uri_set()
    assert not any(name in os.environ for name in URI_ENV)


def test_a_separate_registry_uri_is_restored(settings: Settings, tmp_path: Path) -> None:
    import mlflow

    local = pinned(settings)
    tracking_uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    registry_uri = f"sqlite:///{tmp_path / 'registry.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)

    with pytest.raises(TrackingError):
        load_model(local, "1")

    assert mlflow.get_tracking_uri() == tracking_uri
    assert mlflow.get_registry_uri() == registry_uri
