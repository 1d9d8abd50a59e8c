"""MLflow tracking of the daily monitoring: one experiment per model, one run per day and version.

Every model gets an experiment named ``"<model_name> monitoring"``. It is created with an
explicit artifact location under the data directory
(``settings.resolve(settings.tracking.artifact_location)/<model slug>``), never MLflow's
default ``./mlruns`` in the working directory. Experiments that already exist keep the artifact
location they were created with.

A day and model version get one run, found again by its ``feedback_pipeline.partition`` and
``feedback_pipeline.model_version`` tags: materializing the day again updates that run in place
(same run id) instead of adding a second one. Should two runs with the same tags exist (two
writers racing), the oldest is used, a warning is logged, and no third is created.

What a run holds:

* **metrics**, logged at step 0 in one ``log_batch`` call (MLflow splits it into chunks of 1000
  itself). Their timestamp is later than anything logged to the run before, so an update
  becomes the metric's latest value; the earlier values stay in its history. ``None`` and NaN
  values are skipped, except that a metric the run already holds is then logged as NaN, so an
  old number does not stand as the day's value; metrics left out of the mapping keep theirs.
  Names are made valid with `metric_name`.
* **params**: MLflow never lets a logged param change value, and it has no call to delete one,
  so deleting and relogging a param is impossible and deleting the run would change its id.
  Therefore params keep the value of the first time they were logged; params new to the run are
  added. A param whose value has since changed is listed in the tag
  ``feedback_pipeline.params_changed`` (cleared once the values agree again) and a warning names
  the old and new values. The values of the latest logging are always in the JSON artifact
  ``settings/params.json``, overwritten each time: that file is authoritative.
* **artifacts**: the report files, under ``reports/``. Logging a file of the same name again
  replaces it; a report whose name changed between two loggings stays next to the new one.
* **tags**: ``feedback_pipeline.partition``, ``feedback_pipeline.model_version``,
  ``feedback_pipeline.model_name``, ``feedback_pipeline.dagster_run_id`` (the Dagster run that
  logged last; removed when the latest logging came from outside Dagster) and any extra tags.

Process state: every call uses its own ``MlflowClient(tracking_uri=...)``; nothing calls
``mlflow.set_tracking_uri`` or starts a fluent run. A SQLite store's directory is created before
use, whether or not the installed MLflow would. For ``http(s)`` tracking URIs MLflow's retry
defaults (7 retries with exponential backoff, 120 s timeout: many minutes against a dead server)
are lowered to ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=3`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` for
the duration of the call only, and only where those variables are unset: values set in the
environment win (other threads of the process see the lowered values meanwhile; MLflow reads
them at each request and has no other way to set them). Failures of the store are raised as
`TrackingError`, naming the URI with its password masked.

MLflow is imported inside the functions: importing it takes seconds.
"""

import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

from feedback_pipeline.lib.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

TAG_PREFIX = "feedback_pipeline."
PARTITION_TAG = "feedback_pipeline.partition"
MODEL_VERSION_TAG = "feedback_pipeline.model_version"
MODEL_NAME_TAG = "feedback_pipeline.model_name"
DAGSTER_RUN_ID_TAG = "feedback_pipeline.dagster_run_id"
PARAMS_CHANGED_TAG = "feedback_pipeline.params_changed"
REPORTS_ARTIFACT_DIR = "reports"
PARAMS_ARTIFACT = "settings/params.json"
UI_URL_ENV = "MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
#: MLflow's HTTP settings lowered for remote stores while a call runs, unless already set.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]+")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
_V = TypeVar("_V")


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or refused a request; names the URI."""


@dataclass(frozen=True)
class MonitoringRun:
    """The MLflow run holding one day of monitoring of one model version."""

    run_id: str
    experiment_id: str
    created: bool  # False when an existing run was updated


def metric_name(key: str) -> str:
    """Turns a key into a name MLflow accepts for a metric or a param.

    Characters other than ASCII letters, digits, ``_``, ``-``, ``.``, space and ``/`` become
    ``_`` (``country=US`` → ``country_US``); empty, ``.`` and ``..`` path segments, which MLflow
    refuses, are dropped or replaced.

    Args:
        key: The metric name as computed.

    Returns:
        A valid MLflow metric name; ``key`` itself when it already is one.
    """
    cleaned = _INVALID_NAME_CHARS.sub("_", key)
    parts = ["__" if part == ".." else part for part in cleaned.split("/") if part not in ("", ".")]
    return "/".join(parts) or "_"


def experiment_name(settings: Settings) -> str:
    """The name of the model's monitoring experiment."""
    return f"{settings.model_name} monitoring"


def artifact_location(settings: Settings) -> str:
    """Where a new monitoring experiment keeps its artifacts: a URI under the data directory.

    Args:
        settings: The pipeline settings.

    Returns:
        The configured artifact location (relative ones resolved under the data directory),
        followed by a directory named after the model; local paths as ``file://`` URIs.
    """
    configured = settings.tracking.artifact_location
    base = configured if _URI_SCHEME.match(configured) else settings.resolve(configured)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", settings.model_name).strip("._") or "model"
    if "://" in base or _URI_SCHEME.match(base):
        return f"{base.rstrip('/')}/{slug}"
    return (Path(base) / slug).resolve().as_uri()


def monitoring_experiment(settings: Settings) -> str:
    """Finds the model's monitoring experiment, creating it if missing.

    Args:
        settings: The pipeline settings.

    Returns:
        The experiment id.

    Raises:
        TrackingError: The store cannot be reached, or the experiment is deleted.
    """
    with _client(settings) as client:
        return _experiment_id(client, settings)


def find_monitoring_run(settings: Settings, day: str, model_version: str) -> str | None:
    """The run holding a day of monitoring of a model version.

    Args:
        settings: The pipeline settings.
        day: The partition, e.g. ``2024-05-01``.
        model_version: The model version.

    Returns:
        The run id, the oldest one if several carry the tags; None if there is none yet.

    Raises:
        TrackingError: The store cannot be reached.
    """
    with _client(settings) as client:
        experiment = client.get_experiment_by_name(experiment_name(settings))
        if experiment is None or experiment.lifecycle_stage != "active":
            return None
        run = _find_run(client, experiment.experiment_id, day, model_version)
        return run.info.run_id if run else None


def log_monitoring_run(
    settings: Settings,
    day: str,
    model_version: str,
    metrics: Mapping[str, float | None],
    params: Mapping[str, str],
    artifacts: Sequence[str] = (),
    tags: Mapping[str, str] | None = None,
    dagster_run_id: str | None = None,
) -> MonitoringRun:
    """Logs a day of monitoring of a model version: creates its run or updates it.

    Args:
        settings: The pipeline settings.
        day: The partition, e.g. ``2024-05-01``.
        model_version: The model version.
        metrics: Flat metric values; None and NaN are skipped (logged as NaN when the run holds
            an earlier value), names sanitized by `metric_name`.
        params: The settings used, as strings. A value that differs from the one logged first
            keeps the first value as the MLflow param (see the module docstring); the current
            values are in the artifact ``settings/params.json``.
        artifacts: Report files (or directories) to log under ``reports/``.
        tags: Extra run tags; the ``feedback_pipeline.*`` tags set here take precedence.
        dagster_run_id: The Dagster run logging, if any.

    Returns:
        The run, with ``created`` False when an existing run was updated.

    Raises:
        TrackingError: The store cannot be reached or refused the data.
        ValueError: Two metrics or params have the same name once sanitized, two artifacts the
            same file name, or the day or version contains both kinds of quotes.
        FileNotFoundError: An artifact does not exist.
    """
    metric_values, no_values = _metric_values(metrics)
    param_values = _sanitized(params, "params")
    paths = _artifact_paths(artifacts)
    run_tags = {
        **(tags or {}),
        PARTITION_TAG: day,
        MODEL_VERSION_TAG: model_version,
        MODEL_NAME_TAG: settings.model_name,
    }
    if dagster_run_id:
        run_tags[DAGSTER_RUN_ID_TAG] = dagster_run_id
    _filter(day, model_version)  # fail on unsearchable values before anything is written

    from mlflow.entities import Metric, Param, RunTag

    with _client(settings) as client:
        experiment_id = _experiment_id(client, settings)
        existing = _find_run(client, experiment_id, day, model_version)
        if existing is None:
            run = client.create_run(experiment_id, run_name=f"{day} {model_version}")
            logged_params: dict[str, str] = {}
            old_tags: dict[str, str] = {}
            superseded: list[str] = []
            after = run.info.start_time or 0
        else:
            run = existing
            logged_params = dict(run.data.params)
            old_tags = dict(run.data.tags)
            superseded = sorted(no_values & run.data.metrics.keys())
            after = max(run.info.start_time or 0, run.info.end_time or 0)
        run_id = run.info.run_id
        try:
            changed = {
                key: (logged_params[key], value)
                for key, value in param_values.items()
                if key in logged_params and logged_params[key] != value
            }
            if changed:
                run_tags[PARAMS_CHANGED_TAG] = ", ".join(sorted(changed))
                log.warning(
                    "MLflow run %s (%s, version %s) keeps the params it was first logged with; "
                    "changed since: %s. The current values are in its artifact %s.",
                    run_id,
                    day,
                    model_version,
                    "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()),
                    PARAMS_ARTIFACT,
                )
            stale = [PARAMS_CHANGED_TAG] if PARAMS_CHANGED_TAG in old_tags and not changed else []
            if not dagster_run_id and DAGSTER_RUN_ID_TAG in old_tags:
                stale.append(DAGSTER_RUN_ID_TAG)
            for key in stale:
                client.delete_tag(run_id, key)

            # Later than anything logged before, so this logging is each metric's latest value.
            timestamp = max(int(time.time() * 1000), after + 1)
            client.log_batch(
                run_id,
                metrics=[
                    Metric(k, v, timestamp, 0)
                    for k, v in {**dict.fromkeys(superseded, math.nan), **metric_values}.items()
                ],
                params=[Param(k, v) for k, v in param_values.items() if k not in logged_params],
                tags=[RunTag(k, v) for k, v in run_tags.items() if old_tags.get(k) != v],
            )
            client.log_dict(run_id, dict(params), PARAMS_ARTIFACT)
            for path in paths:
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), f"{REPORTS_ARTIFACT_DIR}/{path.name}")
                else:
                    client.log_artifact(run_id, str(path), REPORTS_ARTIFACT_DIR)
        except BaseException:
            try:
                client.set_terminated(run_id, "FAILED")
            except Exception:  # the original error matters more
                log.exception("could not mark MLflow run %s as failed", run_id)
            raise
        client.set_terminated(run_id, "FINISHED")
        return MonitoringRun(run_id, experiment_id, created=existing is None)


def run_url(settings: Settings, run: MonitoringRun) -> str:
    """The address of a run in the MLflow UI.

    The UI base is ``MLFLOW_UI_URL`` if set; else the tracking URI when it is an ``http(s)``
    server (which serves the UI), without credentials; else ``http://127.0.0.1:5000``, where
    ``mlflow ui`` listens by default.

    Args:
        settings: The pipeline settings.
        run: The run.

    Returns:
        ``<ui base>/#/experiments/<experiment id>/runs/<run id>``.
    """
    base = os.environ.get(UI_URL_ENV)
    if not base:
        uri = settings.tracking.uri(settings)
        base = _without_credentials(uri) if _is_http(uri) else DEFAULT_UI_URL
    return f"{base.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


@contextmanager
def _client(settings: Settings) -> Iterator["MlflowClient"]:
    """An MLflow client of the tracking URI in force; store failures become `TrackingError`."""
    uri = settings.tracking.uri(settings)
    _create_sqlite_directory(uri)
    with _http_defaults(uri):
        try:
            from mlflow import MlflowClient

            yield MlflowClient(tracking_uri=uri, registry_uri=uri)
        except TrackingError:
            raise
        except Exception as exc:
            if not _is_store_failure(exc):
                raise
            state = "is unreachable" if _is_unreachable(exc) else "failed"
            error = TrackingError(_masked(f"MLflow tracking store {uri} {state}: {exc}", uri))
            if urlsplit(uri).password:  # MLflow's own error shows it: leave that out
                raise error from None
            raise error from exc


# The same client for the model registry and the training runs.
client = _client


def _is_store_failure(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException
    from requests import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, MlflowException | RequestException | SQLAlchemyError)


def _is_unreachable(exc: BaseException) -> bool:
    """Whether the error, or one it was raised from, is a failure to connect."""
    from requests import ConnectionError as RequestsConnectionError
    from requests import Timeout
    from sqlalchemy.exc import OperationalError

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, RequestsConnectionError | Timeout | OperationalError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _http_defaults(uri: str) -> Iterator[None]:
    """Lowers MLflow's HTTP retries and timeout for a remote store while the block runs."""
    if not _is_http(uri):
        yield
        return
    added = [name for name in HTTP_DEFAULTS if name not in os.environ]
    for name in added:
        os.environ[name] = HTTP_DEFAULTS[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _create_sqlite_directory(uri: str) -> None:
    """Creates the directory of a SQLite store's file: SQLite does not."""
    if not uri.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    try:
        database = make_url(uri).database
    except Exception:  # MLflow reports a malformed URI, naming it
        return
    if database and database != ":memory:" and "://" not in database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _experiment_id(client: "MlflowClient", settings: Settings) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment_name(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location(settings),
                tags={
                    MODEL_NAME_TAG: settings.model_name,
                    "mlflow.note.content": (
                        f"Daily monitoring of {settings.model_name} by feedback_pipeline: "
                        "one run per day and model version."
                    ),
                },
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)  # created meanwhile by another
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"the MLflow experiment {name!r} (id {experiment.experiment_id}) in "
            f"{_redacted(settings.tracking.uri(settings))} is deleted: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or delete "
            "it permanently (mlflow gc) to start afresh"
        )
    return experiment.experiment_id


def _find_run(
    client: "MlflowClient", experiment_id: str, day: str, model_version: str
) -> "Run | None":
    runs = client.search_runs(
        [experiment_id],
        filter_string=_filter(day, model_version),
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    if not runs:
        return None
    if len(runs) > 1:
        log.warning(
            "%d MLflow runs in experiment %s hold %s of model version %s; using the oldest, %s. "
            "Delete the others: %s",
            len(runs),
            experiment_id,
            day,
            model_version,
            runs[0].info.run_id,
            ", ".join(r.info.run_id for r in runs[1:]),
        )
    return runs[0]


def _filter(day: str, model_version: str) -> str:
    return (
        f"tags.`{PARTITION_TAG}` = {_quoted(day)} "
        f"and tags.`{MODEL_VERSION_TAG}` = {_quoted(model_version)}"
    )


def _quoted(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value with both kinds of quotes: {value!r}")


def _metric_values(metrics: Mapping[str, float | None]) -> tuple[dict[str, float], set[str]]:
    """The metrics with a value, by sanitized name; and the names of those without one."""
    values = {key: math.nan if value is None else float(value) for key, value in metrics.items()}
    named = _sanitized(values, "metrics")
    kept = {k: v for k, v in named.items() if not math.isnan(v)}
    return kept, named.keys() - kept.keys()


def _sanitized(values: Mapping[str, _V], what: str) -> dict[str, _V]:
    result: dict[str, _V] = {}
    source: dict[str, str] = {}
    for key, value in values.items():
        name = metric_name(key)
        if name in source:
            raise ValueError(f"{what} {source[name]!r} and {key!r} both become {name!r} in MLflow")
        result[name] = value
        source[name] = key
    return result


def _artifact_paths(artifacts: Sequence[str]) -> list[Path]:
    paths = [Path(a) for a in artifacts]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"report artifacts not found: {missing}")
    names = [p.name for p in paths]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"report artifacts share file names, one would replace another: {repeated}"
        )
    return paths


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _redacted(uri: str) -> str:
    """The URI with any password masked."""
    return _masked(uri, uri)


def _masked(text: str, uri: str) -> str:
    """The text with the password of the URI, if it has one, masked."""
    password = urlsplit(uri).password
    return text.replace(f":{password}@", ":***@") if password else text


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
