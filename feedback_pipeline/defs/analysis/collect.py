"""Gathering what the dashboard shows: the warehouse, the quarantine, the Dagster instance, MLflow.

Everything here reads what the pipeline already wrote; nothing is computed twice.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from feedback_pipeline.defs.automation import REPORTS, latest_by_day
from feedback_pipeline.lib import quarantine, storage
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.settings import Settings

DAGSTER_UI = "http://127.0.0.1:3000"
WATCHED_ASSETS = (
    "inference_log",
    "feedback_events",
    "attributed_feedback",
    "labeled_predictions",
    "performance_metrics",
    "monitoring_reports",
    "labeling_queue",
    "reference_data",
    "training_dataset",
    "challenger_model",
    "model_promotion",
)


def materialized_days(settings: Settings, asset: str) -> list[str]:
    """The day partitions of an asset present in the warehouse, in order."""
    return storage.materialized_days(settings.resolve("warehouse"), asset)


def stacked(settings: Settings, asset: str, days: list[str], columns=None) -> pd.DataFrame:
    """The given day partitions of an asset, one frame, with a ``date`` column."""
    root = settings.resolve("warehouse")
    frames = []
    for day in days:
        try:
            frame = storage.read_parquet(storage.partition_path(root, asset, day), columns)
        except FileNotFoundError:
            continue
        frames.append(frame.assign(date=day) if "date" not in frame else frame)
    return storage.concat(frames) if frames else pd.DataFrame()


def drift_table(instance: dg.DagsterInstance, days: list[str]) -> pd.DataFrame:
    """Per day, version and column: the drift score and whether it drifted."""
    rows = []
    for day, meta in latest_by_day(instance, REPORTS, days).items():
        for key, scores in meta.items():
            if not key.startswith("column_drift_scores__") or not isinstance(scores, dict):
                continue
            version = key.removeprefix("column_drift_scores__")
            drifted = set(meta.get(f"drifted_column_names__{version}") or [])
            rows += [
                {
                    "date": day,
                    "model_version": version,
                    "column": column,
                    "drift_score": score,
                    "drifted": column in drifted,
                }
                for column, score in scores.items()
            ]
    return pd.DataFrame(rows, columns=["date", "model_version", "column", "drift_score", "drifted"])


def drift_shares(instance: dg.DagsterInstance, days: list[str]) -> pd.DataFrame:
    """Per day and version (and ``all``: the largest): the share of drifted columns."""
    rows = []
    for day, meta in latest_by_day(instance, REPORTS, days).items():
        for key, value in meta.items():
            if key.startswith("drift_share__") and value is not None:
                rows.append(
                    {
                        "date": day,
                        "model_version": key.removeprefix("drift_share__"),
                        "drift_share": float(value),
                    }
                )
        if meta.get("drift_share") is not None:
            rows.append(
                {"date": day, "model_version": ALL, "drift_share": float(meta["drift_share"])}
            )
    return pd.DataFrame(rows, columns=["date", "model_version", "drift_share"])


def calibration_table(labeled: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Observed class-1 rate against the mean score, per score decile and version."""
    known = labeled[labeled["label"].notna()]
    rows = []
    for version, group in [(ALL, known), *known.groupby("model_version", observed=True)]:
        if len(group) < bins * 5:
            continue
        edges = pd.qcut(group["score"], bins, duplicates="drop")
        table = group.groupby(edges, observed=True).agg(
            mean_score=("score", "mean"), observed_rate=("label", "mean"), n=("label", "size")
        )
        rows.append(table.reset_index(drop=True).assign(model_version=str(version)))
    if not rows:
        return pd.DataFrame(columns=["model_version", "mean_score", "observed_rate", "n"])
    return pd.concat(rows, ignore_index=True)[["model_version", "mean_score", "observed_rate", "n"]]


def worst_errors(
    labeled: pd.DataFrame, cutoff: float, per_day: int, keep: list[str]
) -> pd.DataFrame:
    """Each day's most confident wrong predictions, with their inputs and feedback."""
    known = labeled[labeled["label"].notna()]
    wrong = known[(known["score"] >= cutoff).astype(int) != known["label"].astype(int)]
    confidence = (wrong["score"] - cutoff).abs()
    ranked = wrong.assign(confidence=confidence).sort_values(
        ["date", "confidence"], ascending=[True, False]
    )
    top = ranked.groupby("date").head(per_day)
    columns = ["date", "prediction_id", "model_version", "score", "label"]
    columns += [c for c in keep if c in top and c not in columns]
    columns += [c for c in ("thumb", "rating", "clicked", "comment_score") if c in top]
    return top[columns].reset_index(drop=True)


def quarantine_table(settings: Settings) -> pd.DataFrame:
    """Quarantined rows per day, asset and reason."""
    root = settings.resolve("quarantine")
    rows = []
    for asset in quarantine.ASSETS:
        for day in quarantine.days_with_data(root, asset):
            frame = quarantine.load(root, asset, day)
            if not len(frame):
                continue
            reasons = frame["column"].fillna("file").astype(str) + ": " + frame["check"].astype(str)
            for reason, n in reasons.value_counts().items():
                rows.append({"date": day, "asset": asset, "reason": reason, "rows": int(n)})
    return pd.DataFrame(rows, columns=["date", "asset", "reason", "rows"])


def checks_table(instance: dg.DagsterInstance, limit: int = 20_000) -> pd.DataFrame:
    """Every asset check evaluation: day, asset, check, passed, severity, description."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
        limit=limit,
        ascending=False,
    )
    rows, seen = [], set()
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        tags = (event.logging_tags if event else None) or {}
        partition = getattr(evaluation, "partition", None) or tags.get("dagster/partition", "")
        if not partition and entry.run_id:
            run = instance.get_run_by_id(entry.run_id)
            partition = run.tags.get("dagster/partition", "") if run else ""
        key = (partition, evaluation.asset_key.to_user_string(), evaluation.check_name)
        if key in seen:  # the latest evaluation of each check and day only
            continue
        seen.add(key)
        severity = evaluation.severity
        rows.append(
            {
                "date": partition,
                "asset": key[1],
                "check": key[2],
                "passed": bool(evaluation.passed),
                "severity": severity.value if severity is not None else "",
                "description": evaluation.description or "",
            }
        )
    return pd.DataFrame(
        rows, columns=["date", "asset", "check", "passed", "severity", "description"]
    ).sort_values(["passed", "date"], ascending=[True, False], kind="stable")


def freshness_table(instance: dg.DagsterInstance) -> pd.DataFrame:
    """Per asset: the latest partition materialized and when."""
    rows = []
    for name in WATCHED_ASSETS:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        if event is None or event.asset_materialization is None:
            continue
        rows.append(
            {
                "asset": name,
                "last_partition": event.asset_materialization.partition or "",
                "last_materialized_at": dt.datetime.fromtimestamp(
                    event.timestamp, dt.UTC
                ).isoformat(timespec="seconds"),
            }
        )
    return pd.DataFrame(rows, columns=["asset", "last_partition", "last_materialized_at"])


def runs_table(instance: dg.DagsterInstance, limit: int = 500) -> pd.DataFrame:
    """The latest pipeline runs: job, status, partition, start and duration."""
    rows = []
    for record in instance.get_run_records(limit=limit):
        run = record.dagster_run
        start, end = record.start_time, record.end_time
        rows.append(
            {
                "run_id": run.run_id,
                "job": run.job_name,
                "status": run.status.value,
                "partition": run.tags.get("dagster/partition", ""),
                "started_at": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(timespec="seconds")
                if start
                else "",
                "duration_s": round(end - start, 1) if start and end else None,
            }
        )
    return pd.DataFrame(
        rows, columns=["run_id", "job", "status", "partition", "started_at", "duration_s"]
    )


def retrainings_table(instance: dg.DagsterInstance) -> pd.DataFrame:
    """Each gate decision (and rollback), with the retraining run that led to it."""
    columns = [
        "night",
        "breach_day",
        "rules",
        "breach",
        "challenger_version",
        "decision",
        "champion_value",
        "challenger_value",
        "gain",
        "lower_bound",
        "reasons",
    ]
    rows = []
    records = instance.fetch_materializations(dg.AssetKey("model_promotion"), limit=500).records
    for record in sorted(records, key=lambda r: r.storage_id):
        m = record.asset_materialization
        if m is None:
            continue
        meta = {k: v.value for k, v in m.metadata.items()}
        run = instance.get_run_by_id(record.run_id) if record.run_id else None
        tags = run.tags if run else {}
        rows.append(
            {
                "night": tags.get("feedback_pipeline/breach_day")
                or dt.datetime.fromtimestamp(record.timestamp, dt.UTC).date().isoformat(),
                "breach_day": tags.get("feedback_pipeline/breach_day", ""),
                "rules": tags.get("feedback_pipeline/rule", ""),
                "breach": tags.get("feedback_pipeline/breach", meta.get("reason", "")),
                "challenger_version": meta.get("challenger_version", meta.get("champion_version")),
                "decision": meta.get("decision"),
                "champion_value": meta.get("champion_value"),
                "challenger_value": meta.get("challenger_value"),
                "gain": meta.get("gain"),
                "lower_bound": meta.get("gain_lower_bound"),
                "reasons": "; ".join(str(r) for r in (meta.get("reasons") or [])),  # type: ignore[union-attr],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def links_table(settings: Settings, reports: pd.DataFrame, page_dir: str) -> pd.DataFrame:
    """Per day and version: the Evidently report, the MLflow run and the Dagster asset."""
    from feedback_pipeline.lib.tracking import MonitoringRun, monitoring_experiment, run_url

    if not len(reports):
        return pd.DataFrame(
            columns=["date", "model_version", "evidently_html", "mlflow_url", "dagster_url"]
        )
    experiment = monitoring_experiment(settings)
    rows = []
    first = reports.sort_values("report").groupby(["date", "model_version"]).first()
    for (day, version), row in first.iterrows():  # type: ignore[misc]
        html = str(row["html"])
        relative = Path(html).relative_to(page_dir) if html.startswith(page_dir) else None
        run_id = row.get("mlflow_run_id")
        rows.append(
            {
                "date": day,
                "model_version": version,
                "evidently_html": str(relative) if relative else html,
                "mlflow_url": run_url(settings, MonitoringRun(str(run_id), experiment, False))
                if isinstance(run_id, str) and run_id
                else "",
                "dagster_url": f"{DAGSTER_UI}/assets/performance_metrics?partition={day}",
            }
        )
    return pd.DataFrame(rows)


def feature_importance(settings: Settings, model, holdout: pd.DataFrame) -> pd.DataFrame:
    """Permutation importance of the champion on its holdout (drop in ROC AUC)."""
    from sklearn.inspection import permutation_importance

    from feedback_pipeline.lib import training

    if model is None or len(holdout) < 50 or holdout["label"].nunique() < 2:
        return pd.DataFrame(columns=["feature", "importance", "std"])
    sample = holdout.sample(n=min(len(holdout), 2000), random_state=0)
    inputs = training.inputs(sample, settings)
    result = permutation_importance(
        model,
        inputs,
        sample["label"].to_numpy(dtype=int),
        scoring="roc_auc",
        n_repeats=5,
        random_state=0,
    )
    table = pd.DataFrame(
        {
            "feature": list(inputs.columns),
            "importance": np.asarray(result["importances_mean"]),
            "std": np.asarray(result["importances_std"]),
        }
    )
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def _joined(reasons: object) -> str:
    """A list of reasons as one line."""
    return "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else ""
