"""The demo: simulate a month of traffic, run every day through Dagster, say what was found.

Runs go through the real job definitions into the persistent instance in ``DAGSTER_HOME``, so
``dagster dev`` afterwards shows the asset graph with the whole history. Each night's run ingests,
attributes, labels and measures its day; once every day has run, the days are restated with all
the feedback that arrived after them, as the nightly schedule does for days inside their window.
"""

import datetime as dt
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from feedback_pipeline.instance import prepare_dagster_home
from feedback_pipeline.lib import privacy, storage
from feedback_pipeline.lib.policy import evaluate_history, reference_baselines
from feedback_pipeline.lib.settings import Settings, load_settings
from feedback_pipeline.simulate.landing import LandingSimulation
from feedback_pipeline.simulate.traffic import Serving, SimulationConfig

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


def champion_serving(settings: Settings) -> Serving | None:
    """All traffic to the registry's champion, scored by it; None before any promotion."""
    from feedback_pipeline.lib import registry, training

    champion = registry.alias(settings, registry.CHAMPION)
    if champion is None:
        return None
    model = registry.load_model(settings, champion.version)
    return Serving(
        scorer=lambda _version, rows: training.scores(model, rows, settings),
        label=champion.serving_label,
    )


def run_demo(
    config: SimulationConfig, report: Callable[[str], None] = print, *, fresh: bool = True
) -> dict:
    """Simulates day by day, runs each night through Dagster, closes the loop; says what it found.

    Each simulated day is written to the landing zone, then its night runs as the schedule would:
    the day end to end, and the labeling and metrics of the three days before it again (their
    feedback is still arriving). The retraining sensor then ticks; when it asks for a retraining
    the retraining job runs, and once a challenger is promoted the simulator serves the later days
    with the registry's champion. The reference is built when its window ends and again when its
    labels are final. At the end every day is restated with all the feedback that came, and the
    feedback analysis and the dashboard are built.
    """
    settings = load_settings()
    root = Path(settings.data_root)
    if fresh:
        for name in GENERATED:
            shutil.rmtree(root / name, ignore_errors=True)
    home = prepare_dagster_home(settings)
    started = time.monotonic()
    report(f"Simulating {config.days} days x {config.rows_per_day} predictions into {root} ...")

    import dagster as dg  # imported here: the simulation alone does not need it

    from feedback_pipeline.definitions import defs
    from feedback_pipeline.defs.automation import RESTATED_ASSETS, retrain_on_feedback_breach
    from feedback_pipeline.defs.resources import HELPER_ENV

    # Every night runs in this one process, which imports the heavy libraries once for them all;
    # a helper process forked for each run would import them again for every run.
    os.environ.setdefault(HELPER_ENV, "0")
    definitions = defs()
    jobs = {
        name: definitions.resolve_job_def(name)
        for name in ("daily_monitoring_job", "reference_job", "retraining_job", "dashboard_job")
    }
    simulation = LandingSimulation(settings, config)
    days = [config.day(i).isoformat() for i in range(config.days)]
    reference_days = {d.isoformat() for d in settings.reference_window.dates()}
    reference_nights = _reference_nights(settings, days)
    failed: list[str] = []
    retrainings: list[dict] = []
    cursor: str | None = None
    serving: Serving | None = None
    total = 2 * len(days)
    with dg.DagsterInstance.get() as instance:

        def run(job: str, label: str, **kwargs) -> dg.ExecuteInProcessResult:
            result = jobs[job].execute_in_process(
                instance=instance, run_config=QUIET, raise_on_error=False, **kwargs
            )
            if not result.success:
                failed.append(label)
            return result

        for index, day in enumerate(days):
            progress(index, total, f"night {day}", started)
            simulation.write_day(index, serving)
            run("daily_monitoring_job", f"night {day}", partition_key=day, tags=_demo("night"))
            for earlier in days[max(0, index - RESTATE_NIGHTLY) : index]:
                run(
                    "daily_monitoring_job",
                    f"restate {earlier}",
                    partition_key=earlier,
                    asset_selection=[dg.AssetKey(k) for k in RESTATED_ASSETS[:3]],
                    tags=_demo("restate"),
                )
            if day in reference_nights and reference_days <= set(days[: index + 1]):
                run("reference_job", f"reference {day}", tags=_demo("reference"))
            context = dg.build_sensor_context(instance=instance, cursor=cursor)
            tick = retrain_on_feedback_breach(context)
            cursor = context.cursor
            if isinstance(tick, dg.RunRequest):
                result = run("retraining_job", f"retraining {day}", tags=tick.tags)
                retrainings.append(_retraining(instance, day, tick.tags, result.run_id))
                serving = champion_serving(settings) or serving
        for index, day in enumerate(days):
            progress(len(days) + index, total, f"restate {day}", started)
            run(
                "daily_monitoring_job",
                f"final {day}",
                partition_key=day,
                asset_selection=[dg.AssetKey(k) for k in RESTATED_ASSETS[:3]],
                tags=_demo("final"),
            )
        progress(total, total, "dashboard", started)
        run("dashboard_job", "dashboard", tags=_demo("dashboard"))
    manifest = simulation.finish()
    summary = summarize(settings, manifest, days)
    summary |= {
        "retrainings": retrainings,
        "failed_runs": failed,
        "dagster_home": str(home),
        "seconds": time.monotonic() - started,
    }
    return summary


# Each night restates this many earlier days (the schedule restates the whole window).
RESTATE_NIGHTLY = 3


def _demo(stage: str) -> dict[str, str]:
    return {"feedback_pipeline/demo": stage}


def _reference_nights(settings: Settings, days: list[str]) -> set[str]:
    """The reference is built the night its window ends and when its labels are final."""
    last = settings.reference_window.dates()[-1]
    final = last + dt.timedelta(days=settings.window_days)
    return {last.isoformat(), min(final.isoformat(), days[-1])}


def _retraining(instance, night: str, tags: Mapping[str, str], run_id: str) -> dict:
    """What one retraining did, from its run's materializations."""
    from feedback_pipeline.defs.training.assets import CHALLENGER, PROMOTION, latest_metadata

    challenger = latest_metadata(instance, CHALLENGER)
    gate = latest_metadata(instance, PROMOTION)
    return {
        "night": night,
        "breach_day": tags.get("feedback_pipeline/breach_day"),
        "rules": tags.get("feedback_pipeline/rule"),
        "breach": tags.get("feedback_pipeline/breach"),
        "run_id": run_id,
        "challenger_version": challenger.get("model_version"),
        "training_days": challenger.get("n_train"),
        "decision": gate.get("decision"),
        "metric": gate.get("metric"),
        "champion_value": gate.get("champion_value"),
        "challenger_value": gate.get("challenger_value"),
        "gain": gate.get("gain"),
        "lower_bound": gate.get("gain_lower_bound"),
        "n_holdout": gate.get("n_holdout"),
        "reasons": gate.get("reasons") or [],
    }


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
            reference_baselines(everything, settings.reference_window),
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
            named = (
                privacy.values(users, settings)
                if "user_id" in privacy.personal(settings)
                else users
            )
            found[day] = [str(u) for u in named]
    return found


def loop_phases(summary: dict) -> list[tuple[str, list[str], float]]:
    """Mean daily accuracy before the concept drift, after it, and under each promoted champion."""
    overall = summary["overall"]
    drift = summary["incidents_planted"]["concept_drift_from"]
    cuts: list[tuple[str, str | None, str | None]] = []
    label, start = "after the concept drift", drift
    for retraining in summary.get("retrainings", []):
        if retraining["decision"] == "promoted":
            night = dt.date.fromisoformat(retraining["night"])
            served = (night + dt.timedelta(days=1)).isoformat()
            cuts.append((label, start, served))
            label, start = f"served by version {retraining['challenger_version']}", served
    cuts = [("before the concept drift", None, drift), *cuts, (label, start, None)]
    phases = []
    for name, first, until in cuts:
        days = [
            d
            for d in overall.index
            if (first is None or d >= first) and (until is None or d < until)
        ]
        if days:
            phases.append((name, days, float(overall.loc[days, "accuracy"].mean())))
    return phases


def format_summary(summary: dict, settings: Settings) -> str:
    """The end-of-demo story: what happened, what was found, what the loop did, where to look."""
    acc, lat = summary["accuracy_by_version"], summary["latency_p95_by_version"]
    incidents = summary["incidents_planted"]
    lines = ["", "What the pipeline found", "-----------------------"]
    for version in acc.columns:
        served = acc[version].dropna()
        if not len(served):
            continue
        latency = lat[version].dropna()
        span = f"  {version} served {served.index[0]}..{served.index[-1]}:"
        if len(served) < 14:
            lines.append(
                f"{span} accuracy {served.mean():.3f}, latency p95 {latency.mean():.0f} ms"
                f" over its {len(served)} days"
            )
            continue
        lines.append(
            f"{span} accuracy {served.iloc[:7].mean():.3f} in its first week,"
            f" {served.iloc[-7:].mean():.3f} in its last; latency p95"
            f" {latency.iloc[:7].mean():.0f} ms -> {latency.iloc[-7:].mean():.0f} ms"
        )
    lines.append(
        f"  planted: covariate drift from {incidents['covariate_drift_from']}, concept drift from"
        f" {incidents['concept_drift_from']}, latency regression of"
        f" {incidents['latency_regression_version']} from {incidents['latency_regression_from']}"
    )
    estimation = summary["estimation"]
    lines.append(
        f"  estimated performance (CBPE) on {estimation['days_estimated']} days; on the"
        f" {estimation['final_days']} days whose labels are final its median error was"
        f" {estimation['median_abs_error_accuracy']:.3f} in accuracy and"
        f" {estimation['median_abs_error_roc_auc']:.3f} in ROC AUC (it cannot see a concept drift)"
    )
    for day, users in summary["suspicious_users"].items():
        lines.append(
            f"  suspicious feedback on {day} from {', '.join(users[:3])}: left out of the metrics"
            f" (spam planted on {', '.join(incidents.get('spam_days', []))})"
        )
    lines += ["", "The retraining loop", "-------------------"]
    retrainings = summary.get("retrainings", [])
    if not retrainings:
        lines.append("  no retraining rule fired")
    for r in retrainings:
        lines.append(
            f"  night of {r['night']}: {r['rules']} fired on {r['breach_day']}: {r['breach']}"
        )
        if r["decision"] is None:
            lines.append("    the retraining failed: see the Dagster run " + r["run_id"])
            continue
        verdict = "PROMOTED to champion" if r["decision"] == "promoted" else "rejected"
        lines.append(
            f"    challenger version {r['challenger_version']}: {r['metric']} on the"
            f" {r['n_holdout']}-row holdout {r['champion_value']:.3f} (champion) ->"
            f" {r['challenger_value']:.3f} (gain {r['gain']:+.3f}, 95% lower bound"
            f" {r['lower_bound']:+.3f}): {verdict}"
        )
        lines += [f"    why: {reason}" for reason in r["reasons"]]
    for label, days, accuracy in loop_phases(summary):
        lines.append(f"  accuracy {label} ({days[0]}..{days[-1]}): {accuracy:.3f}")
    lines.append("")
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
        f"  the dashboard (a view per role): {data}/dashboard/index.html",
        f"  Evidently reports (HTML, JSON):  {data}/reports/",
        f"  quarantined rows and reasons:    {data}/quarantine/",
        f"  finished in {summary['seconds']:.0f}s",
    ]
    return "\n".join(lines)
