"""The retraining: a point-in-time training dataset, a challenger, and the gate that may promote it.

The three assets run together in ``retraining_job`` (launched by the retraining sensor, or by
hand). Each reads what the previous one made from its latest materialization: the dataset's path,
then the registered challenger's version.
"""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from feedback_pipeline.defs.resources import PipelineSettings
from feedback_pipeline.lib import promotion, registry, storage, training
from feedback_pipeline.lib.metrics import classification_metrics
from feedback_pipeline.lib.settings import Settings

BREACH_DAY_TAG = "feedback_pipeline/breach_day"
RULE_TAG = "feedback_pipeline/rule"
DATASET = dg.AssetKey("training_dataset")
CHALLENGER = dg.AssetKey("challenger_model")
PROMOTION = dg.AssetKey("model_promotion")
# The champion's numbers on its holdout, kept as the baseline a drop rule measures from.
BASELINE_METRICS = ("accuracy", "roc_auc", "f1")


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    """The metadata of an asset's latest materialization, as plain values ({} when none)."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return {}
    return {k: v.value for k, v in materialization.metadata.items()}


def _materialized_days(pipeline: PipelineSettings, until: str | None) -> list[str]:
    days = storage.materialized_days(pipeline.data_path("warehouse"), "labeled_predictions")
    return [d for d in days if until is None or d <= until]


def _read_original(settings: Settings) -> pd.DataFrame | None:
    location = settings.training.original_data
    if not location:
        return None
    return pd.read_parquet(settings.resolve(location))


@dg.asset(group_name="training", kinds={"pandas", "parquet"}, deps=["labeled_predictions"])
def training_dataset(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """Labeled predictions of the most recent days, as known at the cutoff, versioned by content.

    The last day is the breach day the retraining was launched for (its run tag), else the latest
    labeled day. Labels that arrived after the end of that day are left out, so running the same
    retraining later gives the same rows. The original training data is added if configured.
    """
    settings = pipeline.settings
    breach_day = context.run.tags.get(BREACH_DAY_TAG)
    days = _materialized_days(pipeline, breach_day)[-settings.training.days :]
    if not days:
        raise dg.Failure("no day of labeled_predictions has been materialized yet")
    cutoff = storage.day_end(days[-1]) + settings.max_clock_skew
    root = pipeline.data_path("warehouse")
    frames = {
        d: storage.read_parquet(storage.partition_path(root, "labeled_predictions", d))
        for d in days
    }
    numeric, categorical = training.model_columns(settings)
    # Segments and latency are not model inputs: they ride along for the drift reference.
    keep = [*numeric, *categorical, *settings.inference_columns.segments, "latency_ms"]
    rows = training.training_rows(frames, keep, cutoff, settings.label_window)
    original = _read_original(settings)
    if original is not None:
        rows = training.with_original(rows, original, [*numeric, *categorical])
    if rows["label"].nunique() < 2:
        raise dg.Failure(
            f"the training rows of {days[0]}..{days[-1]} hold {len(rows)} labels of one class"
        )
    version = training.dataset_version(rows)
    path = f"{pipeline.data_path('training')}/datasets/version={version}/part-0.parquet"
    storage.write_parquet(rows, path)
    per_day = rows.groupby("day").agg(rows=("label", "size"), positive_share=("label", "mean"))
    return dg.MaterializeResult(
        metadata={
            "dataset_version": version,
            "path": dg.MetadataValue.path(path),
            "partitions": dg.MetadataValue.json(days),
            "last_day": days[-1],
            "feedback_cutoff": cutoff.isoformat(),
            "n_rows": len(rows),
            "n_original_rows": 0 if original is None else len(original),
            "positive_share": float(rows["label"].mean()),
            "rows_per_day": dg.MetadataValue.json(
                per_day.round(4).reset_index().to_dict("records")
            ),
            "dagster/row_count": len(rows),
        }
    )


def _holdout_numbers(labels: np.ndarray, scores: np.ndarray, cutoff: float) -> dict[str, float]:
    table = classification_metrics(labels, scores, cutoff)
    return {k: float(table[k]) for k in (*BASELINE_METRICS, "log_loss", "brier")}


@dg.asset(group_name="training", kinds={"scikitlearn", "mlflow"}, deps=[DATASET])
def challenger_model(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """A gradient-boosted trees pipeline trained on the dataset, registered in MLflow.

    The latest rows (``training.holdout_share`` by prediction time) are held out for the gate.
    The run holds the parameters, the holdout metrics, the training curve (log loss per
    iteration on the early-stopping validation rows) and the model with its signature.
    """
    settings = pipeline.settings
    dataset = latest_metadata(context.instance, DATASET)
    rows = storage.read_parquet(dataset["path"])
    split = training.time_split(rows, settings.training.holdout_share)
    if split.train["label"].nunique() < 2:
        raise dg.Failure(f"the {len(split.train)} training rows hold one class only")
    model = training.fit(split.train, settings)
    curve = training.training_curve(model)
    holdout_scores = training.scores(model, split.holdout, settings)
    numbers = (
        _holdout_numbers(split.holdout["label"].to_numpy(), holdout_scores, settings.score_cutoff)
        if len(split.holdout)
        else {}
    )
    config = settings.training
    ref = registry.register_challenger(
        settings,
        model,
        training.inputs(split.train.head(200), settings),
        params={
            "model": "HistGradientBoostingClassifier",
            "max_iter": config.max_iter,
            "learning_rate": config.learning_rate,
            "max_leaf_nodes": config.max_leaf_nodes,
            "validation_share": config.validation_share,
            "seed": config.seed,
            "iterations_run": len(curve) - 1,
            "dataset_version": dataset["dataset_version"],
            "training_days": ",".join(dataset["partitions"]),
            "holdout_share": config.holdout_share,
            "n_train": len(split.train),
            "n_holdout": len(split.holdout),
        },
        metrics={f"holdout_{k}": v for k, v in numbers.items()},
        curve=curve,
        tags={
            "feedback_pipeline.dataset_version": dataset["dataset_version"],
            "feedback_pipeline.trained_through": dataset["last_day"],
            "feedback_pipeline.holdout_from": str(split.holdout_from),
            "feedback_pipeline.breach_day": context.run.tags.get(BREACH_DAY_TAG, ""),
            "feedback_pipeline.rule": context.run.tags.get(RULE_TAG, ""),
            "feedback_pipeline.dagster_run_id": context.run.run_id,
        },
    )
    last = curve.iloc[-1] if len(curve) else None
    return dg.MaterializeResult(
        metadata={
            "model_version": ref.version,
            "serving_label": ref.serving_label,
            "mlflow_run_id": ref.run_id or "",
            "dataset_version": dataset["dataset_version"],
            "dataset_path": dg.MetadataValue.path(dataset["path"]),
            "trained_through": dataset["last_day"],
            "holdout_from": str(split.holdout_from),
            "n_train": len(split.train),
            "n_holdout": len(split.holdout),
            "iterations": len(curve) - 1,
            "final_validation_loss": float(last["validation_loss"]) if last is not None else None,
            **{f"holdout_{k}": v for k, v in numbers.items()},
        }
    )


def champion_reference(
    rows: pd.DataFrame,
    split: training.Split,
    scores: np.ndarray,
    label: str,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The new champion's training data as its drift reference, scored by the champion.

    Only the holdout rows (never seen in training) calibrate its estimated performance. The rows
    the previous reference held for other versions stay: days those versions served, restated
    later, are still measured against (and calibrated on) their own reference.
    """
    reference = rows.assign(score=scores, model_version=label)
    reference["calibration"] = reference.index.isin(split.holdout.index)
    reference["date"] = reference["day"]
    reference = reference.drop(columns=["as_of"], errors="ignore")
    if previous is None or not len(previous):
        return reference
    kept = previous[previous["model_version"].astype(str) != label].copy()
    if "calibration" not in kept:
        kept["calibration"] = kept["label"].notna()
    if "day" not in kept:
        kept["day"] = kept["date"].astype(str)
    kept = kept[[c for c in reference.columns if c in kept.columns]]
    for column in kept.columns:
        if isinstance(kept[column].dtype, pd.CategoricalDtype):
            kept[column] = kept[column].astype(str)
    return pd.concat([reference, kept], ignore_index=True)


def _current_reference(pipeline: PipelineSettings) -> pd.DataFrame | None:
    """The reference in force (the file the warehouse IO manager keeps), if built."""
    try:
        return storage.read_parquet(f"{pipeline.data_path('warehouse')}/reference_data.parquet")
    except FileNotFoundError:
        return None


@dg.asset(group_name="training", kinds={"mlflow"}, deps=[CHALLENGER])
def model_promotion(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """Champion and challenger on the same holdout; the challenger is promoted only if it wins.

    The champion is the version under the MLflow alias ``champion``; before any promotion it is
    the model that served the holdout's predictions, through the scores it logged. A promotion
    moves ``champion`` to the challenger (the old one becomes ``previous_champion``) and writes
    the challenger's training data, scored by it, as the next drift reference.
    """
    settings = pipeline.settings
    challenger_meta = latest_metadata(context.instance, CHALLENGER)
    version = str(challenger_meta["model_version"])
    rows = storage.read_parquet(challenger_meta["dataset_path"])
    split = training.time_split(rows, settings.training.holdout_share)
    holdout = split.holdout
    labels = holdout["label"].to_numpy(dtype=int)
    challenger = registry.load_model(settings, version)
    challenger_scores = training.scores(challenger, holdout, settings)
    current = registry.alias(settings, registry.CHAMPION)
    if current is not None and current.version != version:
        champion_scores = training.scores(
            registry.load_model(settings, current.version), holdout, settings
        )
        champion_name = f"version {current.version}"
    else:
        champion_scores = holdout["score"].to_numpy(dtype=float)
        champion_name = "the logged scores of the serving model"
    decision = promotion.compare(
        labels, champion_scores, challenger_scores, settings.promotion, settings.score_cutoff
    )
    run_id, replaced = registry.record_decision(
        settings,
        version,
        current.version if current else None,
        decision.as_dict(),
        {"feedback_pipeline.dagster_run_id": context.run.run_id},
    )
    metadata: dict = {
        "decision": "promoted" if decision.promote else "rejected",
        "reasons": dg.MetadataValue.json(decision.reasons),
        "challenger_version": version,
        "champion": champion_name,
        "metric": decision.metric,
        "n_holdout": decision.n,
        "champion_value": decision.champion,
        "challenger_value": decision.challenger,
        "gain": decision.gain,
        "gain_lower_bound": decision.lower_bound,
        "p_value": decision.p_value,
        "mcnemar_p_value": decision.mcnemar_p_value,
        "margin": decision.margin,
        "holdout_from": str(split.holdout_from),
        "mlflow_gate_run_id": run_id,
    }
    if decision.promote:
        numbers = _holdout_numbers(labels, challenger_scores, settings.score_cutoff)
        label = registry.serving_label(version)
        reference = champion_reference(
            rows,
            split,
            training.scores(challenger, rows, settings),
            label,
            _current_reference(pipeline),
        )
        path = f"{pipeline.data_path('training')}/champions/version={version}/reference.parquet"
        storage.write_parquet(reference, path)
        registry.tag_champion(settings, version, path, numbers, challenger_meta["trained_through"])
        metadata |= {
            "champion_version": version,
            "serving_label": label,
            "previous_champion": replaced.version if replaced else "none registered",
            "reference_path": dg.MetadataValue.path(path),
            "trained_through": challenger_meta["trained_through"],
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
            **{f"baseline__{k}": v for k, v in numbers.items() if k in BASELINE_METRICS},
        }
        context.log.info(f"promoted version {version}: " + decision_text(decision))
    else:
        context.log.info(f"kept {champion_name}: " + "; ".join(decision.reasons))
    return dg.MaterializeResult(metadata=metadata)


def decision_text(decision: promotion.Decision) -> str:
    """One line: the metric of both models, the gain and its lower bound."""
    return (
        f"{decision.metric} {decision.champion:.3f} -> {decision.challenger:.3f}"
        f" (gain {decision.gain:+.3f}, lower bound {decision.lower_bound:+.3f}, n={decision.n})"
    )
