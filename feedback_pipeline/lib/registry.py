"""The MLflow model registry: challengers, the ``champion`` alias, promotion and rollback.

The registered model is named after ``settings.model_name``. Each retraining logs a run in the
``"<model_name> training"`` experiment (parameters, holdout metrics, the training curve, the
model with its signature) and registers a new version. The alias ``champion`` names the model
in production and ``previous_champion`` the one it replaced, so a rollback is one alias move.
Every gate decision and every rollback is a run of that experiment too, and a tag on the
versions involved. A registered version is served under the label ``mlflow-<version>`` (the
``model_version`` its predictions are logged with).
"""

import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from feedback_pipeline.lib import tracking
from feedback_pipeline.lib.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
PREVIOUS = "previous_champion"
SERVING_PREFIX = "mlflow-"
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
TAG = "feedback_pipeline."
# Types the challenger pipeline's skops file holds beyond skops' defaults. They come from files
# this project wrote itself: the trees' predictors, and the partial/check_array of its validation.
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


@dataclass(frozen=True)
class ModelRef:
    """One registered version of the model."""

    version: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def serving_label(self) -> str:
        """The ``model_version`` its predictions carry in the inference log."""
        return serving_label(self.version)


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why."""


def serving_label(version: str) -> str:
    """The ``model_version`` a registered version's predictions carry."""
    return f"{SERVING_PREFIX}{version}"


def experiment_name(settings: Settings) -> str:
    """The experiment of the model's retrainings, gate decisions and rollbacks."""
    return f"{settings.model_name} training"


def _experiment(client: "MlflowClient", settings: Settings) -> str:
    name = experiment_name(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(
        name,
        artifact_location=f"{tracking.artifact_location(settings)}/training",
        tags={
            tracking.MODEL_NAME_TAG: settings.model_name,
            "mlflow.note.content": (
                f"Retrainings of {settings.model_name}: one run per challenger, per gate "
                "decision and per rollback."
            ),
        },
    )


@contextmanager
def _fluent(settings: Settings) -> Iterator[Any]:
    """MLflow's fluent API pointed at the settings' store for the block, then restored exactly.

    ``mlflow.sklearn.log_model`` and ``load_model`` know only the process-wide URIs: they are set
    for the call, and the URIs and their environment variables are put back as they were (unset
    stays unset), so other code in the process is not moved to this store.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    env = {name: os.environ.get(name) for name in URI_VARIABLES}
    uri = settings.tracking.uri(settings)
    with tracking.client(settings):  # creates a SQLite store's folder, maps store errors
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]
            for name, value in env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def register_challenger(
    settings: Settings,
    model: Any,
    example: pd.DataFrame,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    curve: pd.DataFrame,
    tags: Mapping[str, str],
) -> ModelRef:
    """Logs the challenger's run (params, metrics, curve, model and signature), registers it."""
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    with tracking.client(settings) as client:
        experiment_id = _experiment(client, settings)
    signature = infer_signature(example, model.predict_proba(example))
    with (
        _fluent(settings) as mlflow,
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"challenger {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}",
            tags={**tags, tracking.MODEL_NAME_TAG: settings.model_name, f"{TAG}role": "challenger"},
        ) as run,
    ):
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if pd.notna(v)})
        now = int(time.time() * 1000)
        points = [
            Metric(name, float(value), now, int(step))
            for name in ("train_loss", "validation_loss")
            for step, value in zip(curve["iteration"], curve[name], strict=True)
            if pd.notna(value)
        ]
        for start in range(0, len(points), 1000):
            mlflow.tracking.MlflowClient().log_batch(
                run.info.run_id, metrics=points[start : start + 1000]
            )
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example.head(5),
            registered_model_name=settings.model_name,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
    version = str(info.registered_model_version)
    with tracking.client(settings) as client:
        for key, value in {**tags, f"{TAG}run_id": run.info.run_id}.items():
            client.set_model_version_tag(settings.model_name, version, key, str(value))
    return ModelRef(version, run.info.run_id, dict(tags))


def alias(settings: Settings, name: str) -> ModelRef | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    with tracking.client(settings) as client:
        try:
            found = client.get_model_version_by_alias(settings.model_name, name)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
    return ModelRef(str(found.version), found.run_id, dict(found.tags or {}))


def load_model(settings: Settings, version: str) -> Any:
    """The scikit-learn pipeline of a registered version."""
    with _fluent(settings) as mlflow:
        return mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version}")


def _record(
    client: "MlflowClient",
    settings: Settings,
    run_name: str,
    metrics: Mapping[str, float | None],
    tags: Mapping[str, str],
) -> str:
    run = client.create_run(
        _experiment(client, settings),
        run_name=run_name,
        tags={**tags, tracking.MODEL_NAME_TAG: settings.model_name},
    )
    for key, value in metrics.items():
        if value is not None and pd.notna(value):
            client.log_metric(run.info.run_id, key, float(value))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def record_decision(
    settings: Settings,
    challenger: str,
    champion: str | None,
    decision: Mapping[str, Any],
    extra_tags: Mapping[str, str] | None = None,
) -> tuple[str, ModelRef | None]:
    """Records the gate's decision; on promotion moves the aliases.

    Returns the decision run's id and, on promotion, the champion that was replaced.
    """
    outcome = "promoted" if decision["promote"] else "rejected"
    numbers = {
        k: decision.get(k)
        for k in ("n", "champion", "challenger", "gain", "lower_bound", "p_value", "margin")
    }
    tags = {
        f"{TAG}role": "gate",
        f"{TAG}decision": outcome,
        f"{TAG}challenger_version": challenger,
        f"{TAG}champion": champion or "logged scores",
        f"{TAG}reasons": "; ".join(decision.get("reasons") or [])[:4000],
        **(extra_tags or {}),
    }
    replaced = alias(settings, CHAMPION) if decision["promote"] else None
    with tracking.client(settings) as client:
        run_id = _record(client, settings, f"gate v{challenger}: {outcome}", numbers, tags)
        client.set_model_version_tag(settings.model_name, challenger, f"{TAG}decision", outcome)
        client.set_model_version_tag(settings.model_name, challenger, f"{TAG}gate_run", run_id)
        if decision["promote"]:
            if replaced is not None and replaced.version != challenger:
                client.set_registered_model_alias(settings.model_name, PREVIOUS, replaced.version)
            client.set_registered_model_alias(settings.model_name, CHAMPION, challenger)
            client.set_model_version_tag(
                settings.model_name,
                challenger,
                f"{TAG}promoted_at",
                dt.datetime.now(dt.UTC).isoformat(),
            )
    return run_id, replaced


def rollback(settings: Settings, reason: str = "") -> tuple[ModelRef, ModelRef]:
    """Puts ``previous_champion`` back as ``champion``; returns (restored, demoted).

    The demoted version loses its alias and is tagged ``rolled_back``; ``previous_champion`` is
    removed, so a second rollback without a new promotion is refused rather than flip back.
    """
    current, previous = alias(settings, CHAMPION), alias(settings, PREVIOUS)
    if previous is None:
        raise RegistryError(
            f"{settings.model_name} has no previous_champion to roll back to"
            + (f" (champion is version {current.version})" if current else " (no champion yet)")
        )
    demoted = current or previous
    with tracking.client(settings) as client:
        client.set_registered_model_alias(settings.model_name, CHAMPION, previous.version)
        client.delete_registered_model_alias(settings.model_name, PREVIOUS)
        if current is not None:
            client.set_model_version_tag(
                settings.model_name, current.version, f"{TAG}rolled_back", "true"
            )
        _record(
            client,
            settings,
            f"rollback v{demoted.version} -> v{previous.version}",
            {},
            {
                f"{TAG}role": "rollback",
                f"{TAG}restored_version": previous.version,
                f"{TAG}demoted_version": demoted.version,
                f"{TAG}reason": reason or "manual rollback",
            },
        )
    return previous, demoted


def tag_champion(
    settings: Settings,
    version: str,
    reference_path: str,
    baseline: Mapping[str, float],
    trained_through: str,
) -> None:
    """Keeps on a promoted version what monitoring needs of a champion.

    Its drift reference, its holdout numbers (the baseline drop rules measure from) and the last
    day of its training data: a rollback to it brings all three back.
    """
    values = {
        f"{TAG}reference_path": reference_path,
        f"{TAG}trained_through": trained_through,
        **{f"{TAG}baseline.{k}": f"{v:.6f}" for k, v in baseline.items() if pd.notna(v)},
    }
    with tracking.client(settings) as client:
        for key, value in values.items():
            client.set_model_version_tag(settings.model_name, version, key, value)


def baseline(ref: ModelRef) -> dict[str, float]:
    """The holdout numbers a version was promoted with."""
    prefix = f"{TAG}baseline."
    return {k.removeprefix(prefix): float(v) for k, v in ref.tags.items() if k.startswith(prefix)}
