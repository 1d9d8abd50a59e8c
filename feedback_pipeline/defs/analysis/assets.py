"""Feedback against model metrics over the days so far, and the dashboard that shows it all."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd

from feedback_pipeline.defs.analysis import collect
from feedback_pipeline.defs.automation import champion_state
from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import correlation, privacy, storage
from feedback_pipeline.lib.metrics import ALL
from feedback_pipeline.lib.policy import evaluate
from feedback_pipeline.lib.settings import Settings

# Prediction-level analysis and the error drill-down read this many recent days.
RECENT_DAYS = 14
ERRORS_PER_DAY = 20
FEEDBACK_COLUMNS = ["thumb", "rating", "clicked", "converted", "comment_score"]


def daily_table(settings: Settings, instance: dg.DagsterInstance) -> pd.DataFrame:
    """Every day's metrics per version and segment, with the day's drift share beside them."""
    days = collect.materialized_days(settings, "performance_metrics")
    metrics = collect.stacked(settings, "performance_metrics", days)
    if not len(metrics):
        return metrics
    drift = collect.drift_shares(instance, days)
    on_all = drift.assign(segment=ALL)
    return metrics.merge(on_all, on=["date", "model_version", "segment"], how="left")


def recent_labeled(settings: Settings, columns: list[str]) -> pd.DataFrame:
    """The labeled predictions of the most recent days."""
    days = collect.materialized_days(settings, "labeled_predictions")[-RECENT_DAYS:]
    return collect.stacked(settings, "labeled_predictions", days, columns)


def _analysis_dir(pipeline: PipelineSettings) -> str:
    return pipeline.data_path("analysis")


@dg.asset(
    group_name="analysis",
    kinds={"scipy", "pandas"},
    deps=["performance_metrics", "monitoring_reports", "labeled_predictions"],
)
def feedback_metric_correlation(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.Output[pd.DataFrame]:
    """Do users complain because of the model's errors, its latency, or drift, and for whom?

    Over the days so far, per model version and segment: Spearman correlations (with p-values,
    confidence intervals and a Benjamini-Hochberg correction over every pair tested) between the
    daily feedback signals and model metrics, at lags of 0 to 2 days; and over the recent days'
    predictions, feedback against correctness and against latency buckets. Pairs with too few
    days are reported as inconclusive, with the reason. The prediction-level tables are written
    as Parquet under ``analysis/``.
    """
    settings = pipeline.settings
    daily = daily_table(settings, context.instance)
    if not len(daily):
        raise dg.Failure("no day of performance_metrics has been materialized yet")
    table = correlation.metric_correlations(daily)
    columns = [
        "score",
        "label",
        "model_version",
        "latency_ms",
        *settings.inference_columns.segments,
        *FEEDBACK_COLUMNS,
    ]
    rows = recent_labeled(settings, columns)
    correctness = correlation.by_correctness(rows, settings.score_cutoff)
    buckets, latency = correlation.by_latency(rows)
    directory = _analysis_dir(pipeline)
    for name, frame in {
        "by_correctness": correctness,
        "by_latency": buckets,
        "latency_correlation": latency,
        "strongest_lag": correlation.strongest_lag(table),
    }.items():
        storage.write_parquet(frame, f"{directory}/{name}.parquet")
    found = table[table["verdict"].isin(["positive", "negative"]) & (table["lag"] == 0)]
    top = found.reindex(found["rho"].abs().sort_values(ascending=False).index).head(10)
    return dg.Output(
        table,
        metadata={
            "pairs_tested": int((table["verdict"] != "inconclusive").sum()),
            "inconclusive": int((table["verdict"] == "inconclusive").sum()),
            "significant": int(table["verdict"].isin(["positive", "negative"]).sum()),
            "strongest": dg.MetadataValue.json(
                [
                    f"{r.model_version}/{r.segment}: {r.signal} ~ {r.metric} rho={r.rho:+.2f}"
                    f" (p_adj={r.p_adjusted:.3g}, n={r.n})"
                    for r in top.itertuples()
                ]
            ),
            "feedback_by_correctness": dg.MetadataValue.md(
                correctness.head(20).to_markdown(index=False) if len(correctness) else "none"
            ),
            "days": int(daily["date"].nunique()),
        },
    )


def _alerts(settings: Settings, instance: dg.DagsterInstance, daily: pd.DataFrame, checks):
    rows = []
    baselines, _, _ = champion_state(instance)
    overall = daily[(daily["model_version"] == ALL) & (daily["segment"] == ALL)]
    for record in overall.to_dict(orient="records"):
        for breach in evaluate(record["date"], record, baselines, settings.retraining)[0]:
            rows.append(
                {
                    "date": breach.day,
                    "severity": "breach",
                    "rule": breach.rule,
                    "message": breach.message,
                }
            )
    failed = checks[~checks["passed"]] if len(checks) else checks
    for record in failed.to_dict(orient="records") if len(failed) else []:
        rows.append(
            {
                "date": record["date"],
                "severity": record["severity"].lower() or "warn",
                "rule": f"{record['asset']}.{record['check']}",
                "message": record["description"] or "check failed",
            }
        )
    table = pd.DataFrame(rows, columns=["date", "severity", "rule", "message"])
    return table.sort_values("date", ascending=False, kind="stable").reset_index(drop=True)


def _status(daily: pd.DataFrame, alerts: pd.DataFrame) -> list[dict]:
    """Per version serving in the last week: ok, watch or act, in plain words."""
    overall = daily[daily["segment"] == ALL]
    if not len(overall):
        return []
    last = sorted(overall["date"].unique())[-7:]
    recent = overall[overall["date"].isin(last)]
    breached = set(alerts.loc[alerts["severity"] == "breach", "date"]) & set(last)
    cards = []
    for version, rows in recent.groupby("model_version"):
        accuracy = rows["accuracy"].mean()
        thumbs = rows["thumbs_up_share"].mean()
        if version == ALL and breached:
            status = "act"
            words = f"retraining rules breached on {len(breached)} of the last {len(last)} days"
        elif pd.notna(accuracy) and accuracy < 0.7:
            status = "watch"
            words = f"accuracy {accuracy:.0%} over the last week, below 70%"
        else:
            status = "ok"
            words = f"accuracy {accuracy:.0%} and {thumbs:.0%} thumbs up over the last week"
        cards.append({"model_version": str(version), "status": status, "headline": words})
    return cards


@dg.asset(group_name="analysis", kinds={"plotly", "html"}, deps=[feedback_metric_correlation])
def monitoring_dashboard(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """One self-contained HTML page with a view per role, under ``dashboard/index.html``.

    Data scientist, ML engineer, product manager and executive views over the metrics, reports,
    checks, quarantine, runs, retrainings and the feedback analysis; filters by date, version and
    segment; alerts; an error drill-down; CSV exports; links to Evidently, MLflow and Dagster.
    The tables are also written as CSV beside the page.
    """
    from feedback_pipeline.lib import dashboard, registry

    settings = pipeline.settings
    instance = context.instance
    page_dir = pipeline.data_path("dashboard")
    daily = daily_table(settings, instance)
    days = sorted(daily["date"].unique()) if len(daily) else []
    cols = settings.inference_columns
    keep = [*cols.segments, *cols.categorical_features, *cols.features]
    labeled = recent_labeled(
        settings,
        ["prediction_id", "score", "label", "model_version", *keep, *FEEDBACK_COLUMNS],
    )
    text = collect.stacked(
        settings,
        "attributed_feedback",
        collect.materialized_days(settings, "attributed_feedback")[-RECENT_DAYS:],
        ["target_prediction_id", "kind", "text"],
    )
    errors = collect.worst_errors(labeled, settings.score_cutoff, ERRORS_PER_DAY, keep)
    if len(text) and len(errors):
        comments = text[text["kind"].astype(str) == "comment"].dropna(subset=["text"])
        first = comments.groupby("target_prediction_id")["text"].first()
        errors["comment"] = errors["prediction_id"].map(first)
    champion = registry.alias(settings, registry.CHAMPION)
    importance = pd.DataFrame(columns=["feature", "importance", "std"])
    if champion is not None:
        dataset = _champion_holdout(settings, champion)
        if dataset is not None:
            importance = collect.feature_importance(
                settings, registry.load_model(settings, champion.version), dataset
            )
    checks = collect.checks_table(instance)
    alerts = _alerts(settings, instance, daily, checks)
    analysis = _analysis_dir(pipeline)
    reports = collect.stacked(settings, "monitoring_reports", days)
    data = dashboard.DashboardData(
        model_name=settings.model_name,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        metrics=daily,
        drift=collect.drift_table(instance, days),
        calibration=collect.calibration_table(labeled),
        feature_importance=importance,
        correlations=_read(
            f"{pipeline.data_path('warehouse')}/feedback_metric_correlation.parquet"
        ),
        by_correctness=_read(f"{analysis}/by_correctness.parquet"),
        by_latency=_read(f"{analysis}/by_latency.parquet"),
        quarantine=collect.quarantine_table(settings),
        checks=checks,
        freshness=collect.freshness_table(instance),
        runs=collect.runs_table(instance),
        retrainings=collect.retrainings_table(instance),
        alerts=alerts,
        errors=errors,
        links=collect.links_table(settings, reports, page_dir),
        status=_status(daily, alerts),
    )
    for name, table in data.tables().items():  # the page leaves the pipeline: no raw ids
        setattr(data, name, privacy.frame(table, settings))
    path = dashboard.render(data, f"{page_dir}/index.html")
    tables = dashboard.write_tables(data, page_dir)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(path),
            "days": len(days),
            "alerts": len(alerts),
            "tables": dg.MetadataValue.json([Path(t).name for t in tables]),
            "bytes": Path(path).stat().st_size,
        }
    )


def _read(path: str) -> pd.DataFrame:
    try:
        return storage.read_parquet(path)
    except FileNotFoundError:
        return pd.DataFrame()


def _champion_holdout(settings: Settings, champion) -> pd.DataFrame | None:
    """The rows of the champion's reference it was not trained on."""
    path = champion.tags.get("feedback_pipeline.reference_path")
    if not path:
        return None
    try:
        reference = storage.read_parquet(path)
    except FileNotFoundError:
        return None
    own = reference[reference["model_version"].astype(str) == champion.serving_label]
    return own[own["calibration"].astype(bool)] if "calibration" in own else own


# After the night's runs: the analysis over the days so far and the page that shows it.
dashboard_job = dg.define_asset_job(
    name="dashboard_job",
    selection=dg.AssetSelection.groups("analysis"),
    executor_def=dg.in_process_executor,
    description="Correlate feedback with model metrics and rebuild the dashboard.",
)


@dg.schedule(
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    job=dashboard_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def dashboard_refresh_schedule(context: dg.ScheduleEvaluationContext):
    """Each night after the monitoring runs, rebuild the analysis and the dashboard."""
    night = (context.scheduled_execution_time or dt.datetime.now(dt.UTC)).date().isoformat()
    return dg.RunRequest(run_key=f"dashboard:{night}")
