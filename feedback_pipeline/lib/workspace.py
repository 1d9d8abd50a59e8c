"""The Evidently workspace: a project per model, a snapshot per report, dashboards in code.

``evidently ui --workspace data/evidently`` shows the history. Each report of a day and model
version is one snapshot; re-running a day replaces its snapshot (the workspace keeps an index of
which snapshot holds which day, version and report), so there is never a second one.
"""

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from feedback_pipeline.lib.reports import DRIFT, PIPELINE_PREFIX, QUALITY, DayReport
from feedback_pipeline.lib.settings import Settings

INDEX = "feedback_pipeline_snapshots.json"


def _panels() -> list[Any]:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel, text_panel

    def pipeline(name: str, legend: str) -> Any:
        # No tag: the summary reports show these, and the drift reports did before them.
        return PanelMetric(
            legend=legend, metric="MeanValue", metric_labels={"column": f"{PIPELINE_PREFIX}{name}"}
        )

    drift_share = PanelMetric(
        legend="share of drifted columns",
        metric="DriftedColumnsCount",
        metric_labels={"value_type": "share"},
        tags=[DRIFT],
    )
    return [
        text_panel(
            title="How the model really did",
            description="Drift against the reference, realized and estimated performance, label "
            "coverage and feedback, per day; one series per model version.",
        ),
        counter_panel(title="Share of drifted columns (latest)", values=[drift_share], size="half"),
        counter_panel(
            title="Realized accuracy (latest)",
            values=[pipeline("accuracy", "accuracy")],
            size="half",
        ),
        line_plot_panel(title="Data drift: share of drifted columns", values=[drift_share]),
        line_plot_panel(
            title="Accuracy: realized and estimated (CBPE)",
            values=[
                pipeline("accuracy", "realized accuracy"),
                pipeline("estimated_accuracy", "estimated accuracy"),
            ],
            size="half",
        ),
        line_plot_panel(
            title="ROC AUC: realized and estimated (CBPE)",
            values=[
                pipeline("roc_auc", "realized ROC AUC"),
                pipeline("estimated_roc_auc", "estimated ROC AUC"),
            ],
            size="half",
        ),
        line_plot_panel(
            title="Label coverage",
            values=[pipeline("label_coverage", "share of predictions with a label")],
            size="half",
        ),
        line_plot_panel(
            title="Feedback rates",
            values=[
                pipeline("thumbs_up_share", "thumbs-up share"),
                pipeline("negative_feedback_share", "negative share"),
                pipeline("click_rate", "click rate"),
                pipeline("conversion_rate", "conversion rate"),
            ],
            size="half",
        ),
        line_plot_panel(
            title="Drift of the score",
            values=[
                PanelMetric(
                    legend="score",
                    metric="ValueDrift",
                    metric_labels={"column": "score"},
                    tags=[DRIFT],
                )
            ],
            size="half",
        ),
        line_plot_panel(
            title="Classification quality on labeled predictions (Evidently)",
            values=[
                PanelMetric(legend="accuracy", metric="Accuracy", tags=[QUALITY]),
                PanelMetric(legend="ROC AUC", metric="RocAuc", tags=[QUALITY]),
                PanelMetric(legend="F1", metric="F1Score", tags=[QUALITY]),
            ],
            size="half",
        ),
    ]


# Opening a workspace reads every snapshot in it, and Evidently fails on a snapshot file another
# process is still writing (a report worker of this run, or another run's): such a file is
# whole a moment later, so the opening is tried again a few times before the error is raised.
OPEN_ATTEMPTS = 5
OPEN_RETRY_SECONDS = 0.1


@functools.cache
def _workspace(path: str) -> Any:
    """One workspace object per folder and process: opening one reads every snapshot in it."""
    from evidently.ui.workspace import Workspace

    Path(path).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, OPEN_ATTEMPTS):
        try:
            return Workspace(path)
        except ValueError:  # a snapshot caught half-written (its JSON, or its model)
            time.sleep(OPEN_RETRY_SECONDS * attempt)
    try:
        return Workspace(path)
    except ValueError as error:
        raise ValueError(
            f"the Evidently workspace {path} holds a snapshot that cannot be read ({error}); "
            "restore or delete that file"
        ) from error


def open_project(settings: Settings) -> tuple[Any, Any]:
    """The workspace and the model's project, created with its dashboard if missing."""
    workspace = _workspace(settings.resolve(settings.reports.workspace))
    found = workspace.search_project(settings.model_name)
    if found:
        return workspace, found[0]
    project = workspace.create_project(
        settings.model_name,
        description=f"Monitoring of {settings.model_name}: drift, realized and estimated "
        "performance, feedback.",
    )
    for panel in _panels():
        project.dashboard.add_panel(panel)
    return workspace, project


def _index_path(settings: Settings, project_id: object) -> Path:
    return Path(settings.resolve(settings.reports.workspace)) / str(project_id) / INDEX


def _read_index(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def store_snapshot(settings: Settings, report: DayReport) -> str:
    """Writes the report's snapshot into the model's project, and returns its id.

    Each snapshot is a file of its own, so reports can be stored from several processes at once;
    ``index_snapshots`` then records which day, version and report each one holds.
    """
    workspace, project = open_project(settings)
    return str(workspace.add_run(project.id, report.snapshot).id)


def index_snapshots(settings: Settings, stored: list[tuple[str, str, str, str]]) -> None:
    """Records the stored snapshots of reports, deleting the ones they replace (a re-run day's).

    Args:
        settings: the workspace and model.
        stored: each report's day, model version and kind, with the id ``store_snapshot`` gave
            its snapshot.
    """
    workspace, project = open_project(settings)
    path = _index_path(settings, project.id)
    index = _read_index(path)
    for day, version, kind, snapshot_id in stored:
        key = f"{day}|{version}|{kind}"
        previous = index.get(key)
        if previous and previous != snapshot_id:  # deleting one that is gone is harmless
            workspace.delete_run(project.id, previous)
        index[key] = snapshot_id
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(partial, path)


def add_snapshot(settings: Settings, report: DayReport) -> str:
    """Adds the report's snapshot to the model's project, replacing the day's earlier one.

    Returns:
        The snapshot's id.
    """
    snapshot_id = store_snapshot(settings, report)
    index_snapshots(settings, [(report.day, report.model_version, report.kind, snapshot_id)])
    return snapshot_id


def snapshots(settings: Settings) -> dict[str, str]:
    """Which snapshot holds each ``day|version|report`` of the model's project."""
    _, project = open_project(settings)
    return _read_index(_index_path(settings, project.id))
