"""The demo: simulate a month of traffic, run every day through Dagster, say what was found.

Runs go through the real job definitions into the persistent instance in ``DAGSTER_HOME``, so
``dagster dev`` afterwards shows the asset graph with the whole history. Each night's run ingests,
attributes, labels and measures its day; once every day has run, the days are restated with all
the feedback that arrived after them, as the nightly schedule does for days inside their window.
"""

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from feedback_pipeline.instance import prepare_dagster_home
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.policy import evaluate_history, reference_accuracy
from feedback_pipeline.lib.settings import Settings, load_settings
from feedback_pipeline.simulate.landing import simulate_landing
from feedback_pipeline.simulate.traffic import SimulationConfig

GENERATED = ("landing", "warehouse", "quarantine", "simulation", "dagster_home")
# The runs' own logs go to the instance (see them in the UI); the terminal shows progress only.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def progress(done: int, total: int, label: str, started: float) -> None:
    """A one-line progress bar on standard error."""
    width = 30
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    line = f"[{bar}] {done}/{total} {label:<32} {time.monotonic() - started:5.0f}s"
    end = "\n" if done == total or not sys.stderr.isatty() else ""
    print(f"\r{line}", end=end, file=sys.stderr, flush=True)


def run_demo(
    config: SimulationConfig, report: Callable[[str], None] = print, *, fresh: bool = True
) -> dict:
    """Simulates, runs every day through Dagster and returns what was found."""
    settings = load_settings()
    root = Path(settings.data_root)
    if fresh:
        for name in GENERATED:
            shutil.rmtree(root / name, ignore_errors=True)
    home = prepare_dagster_home(settings)
    started = time.monotonic()
    report(f"Simulating {config.days} days x {config.rows_per_day} predictions into {root} ...")
    manifest = simulate_landing(settings, config)
    report(
        f"  {manifest['predictions']} predictions, {manifest['feedback_events']} feedback events"
        f" ({time.monotonic() - started:.0f}s)"
    )

    import dagster as dg  # imported here: the simulation alone does not need it

    from feedback_pipeline.definitions import defs
    from feedback_pipeline.defs.automation import RESTATED_ASSETS

    definitions = defs()
    job = definitions.resolve_job_def("daily_monitoring_job")
    reference_job = definitions.resolve_job_def("reference_job")
    days = [config.day(i).isoformat() for i in range(config.days)]
    total, done, failed = 3 * len(days) + 1, 0, []
    # Each day as its night would run it; then every day again with all the feedback that came
    # later; then the reference, now that its labels are in; then the metrics with estimation.
    stages = [
        ("night", None),
        ("restate", RESTATED_ASSETS[:2]),
        ("reference", "reference"),
        ("metrics", RESTATED_ASSETS[2:]),
    ]
    with dg.DagsterInstance.get() as instance:
        for stage, selection in stages:
            for day in days if selection != "reference" else [None]:
                progress(done, total, f"{stage} {day or ''}", started)
                if selection == "reference":
                    result = reference_job.execute_in_process(
                        instance=instance, run_config=QUIET, raise_on_error=False
                    )
                else:
                    result = job.execute_in_process(
                        partition_key=day,
                        instance=instance,
                        asset_selection=[dg.AssetKey(k) for k in selection] if selection else None,
                        tags={"feedback_pipeline/demo": stage},
                        run_config=QUIET,
                        raise_on_error=False,
                    )
                if not result.success:
                    failed.append(f"{stage} {day or ''}".strip())
                done += 1
        progress(done, total, "done", started)
    summary = summarize(settings, manifest, days)
    summary |= {
        "failed_runs": failed,
        "dagster_home": str(home),
        "seconds": time.monotonic() - started,
    }
    return summary


def load_metrics(settings: Settings, days: list[str]) -> pd.DataFrame:
    """The performance_metrics partitions of the given days, stacked."""
    root = settings.resolve("warehouse")
    frames = []
    for day in days:
        try:
            frames.append(
                storage.read_parquet(storage.partition_path(root, "performance_metrics", day))
            )
        except FileNotFoundError:
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(settings: Settings, manifest: dict, days: list[str]) -> dict:
    """What the pipeline found, in numbers, beside what the simulation planted."""
    metrics = load_metrics(settings, days)
    overall = metrics[metrics["segment"] == "all"]
    per_version = overall[overall["model_version"] != "all"].pivot(
        index="date", columns="model_version", values=["accuracy", "latency_p95_ms"]
    )
    quarantine_rows = 0
    for name in ("inference_log", "feedback_events"):
        for day in days:
            path = storage.partition_path(settings.resolve("quarantine"), name, day)
            try:
                quarantine_rows += len(storage.read_parquet(path, columns=["reason"]))
            except FileNotFoundError:
                continue
    everything = overall[overall["model_version"] == "all"].set_index("date")
    suspicious = _suspicious_users(settings, days)
    final = everything[everything["maturity"] == "final"]
    return {
        "suspicious_users": suspicious,
        "estimation": {
            "days_estimated": int(everything["estimated_accuracy"].notna().sum()),
            "median_abs_error_accuracy": float(final["estimation_error_accuracy"].abs().median()),
            "median_abs_error_roc_auc": float(final["estimation_error_roc_auc"].abs().median()),
            "final_days": len(final),
        },
        "incidents_planted": manifest["incidents"],
        "accuracy_by_version": per_version["accuracy"].round(3),
        "latency_p95_by_version": per_version["latency_p95_ms"].round(0),
        "overall": everything[
            ["accuracy", "label_coverage", "negative_feedback_share", "maturity"]
        ],
        "breaches": evaluate_history(
            everything,
            settings.retraining,
            reference_accuracy(everything, settings.reference_window),
        ),
        "quarantined_rows": quarantine_rows,
    }


def _suspicious_users(settings: Settings, days: list[str]) -> dict[str, list[str]]:
    """The users flagged as suspicious, per feedback day."""
    found: dict[str, list[str]] = {}
    for day in days:
        path = storage.partition_path(settings.resolve("warehouse"), "attributed_feedback", day)
        try:
            events = storage.read_parquet(path, columns=["user_id", "quality_flag"])
        except FileNotFoundError:
            continue
        users = sorted(events.loc[events["quality_flag"].notna(), "user_id"].astype(str).unique())
        if users:
            found[day] = users
    return found


def format_summary(summary: dict, settings: Settings) -> str:
    """The end-of-demo story: what happened, what was found, where to look."""
    acc, lat = summary["accuracy_by_version"], summary["latency_p95_by_version"]
    incidents = summary["incidents_planted"]
    first, last = acc.index[:7], acc.index[-7:]
    lines = ["", "What the pipeline found", "-----------------------"]
    for version in acc.columns:
        lines.append(
            f"  accuracy {version}: {acc.loc[first, version].mean():.3f} in the first week,"
            f" {acc.loc[last, version].mean():.3f} in the last"
            f" (concept drift planted from {incidents['concept_drift_from']})"
        )
        lines.append(
            f"  latency p95 {version}: {lat.loc[first, version].mean():.0f} ms ->"
            f" {lat.loc[last, version].mean():.0f} ms"
        )
    lines.append(
        f"  latency regression planted on {incidents['latency_regression_version']} from"
        f" {incidents['latency_regression_from']}"
    )
    breaches = summary["breaches"]
    lines.append(f"  retraining rules breached on {len({b.day for b in breaches})} day(s):")
    lines += [f"    {b.day} {b.rule}: {b.message}" for b in breaches[:8]]
    estimation = summary["estimation"]
    lines.append(
        f"  estimated performance (CBPE) on {estimation['days_estimated']} days; on the"
        f" {estimation['final_days']} days whose labels are final its median error was"
        f" {estimation['median_abs_error_accuracy']:.3f} in accuracy and"
        f" {estimation['median_abs_error_roc_auc']:.3f} in ROC AUC"
    )
    for day, users in summary["suspicious_users"].items():
        lines.append(
            f"  suspicious feedback on {day} from {', '.join(users[:3])}: left out of the metrics"
            f" (spam planted on {', '.join(incidents.get('spam_days', []))})"
        )
    lines.append(f"  quarantined rows (with reasons): {summary['quarantined_rows']}")
    if summary["failed_runs"]:
        lines.append(f"  FAILED runs: {', '.join(summary['failed_runs'])}")
    data = settings.data_root
    lines += [
        "",
        "Where to look",
        "-------------",
        f"  Dagster UI with this history:  DAGSTER_HOME={summary['dagster_home']} make dev"
        "  (http://127.0.0.1:3000)",
        "  Dagster, MLflow and Evidently UIs together: make ui",
        f"  metrics per day/version/segment: {data}/warehouse/performance_metrics/",
        f"  Evidently reports (HTML, JSON):  {data}/reports/",
        f"  quarantined rows and reasons:    {data}/quarantine/",
        f"  finished in {summary['seconds']:.0f}s",
    ]
    return "\n".join(lines)
