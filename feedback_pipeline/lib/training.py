"""What a retraining learns from, how the challenger is fitted, and the holdout the gate uses.

The training rows are the labeled predictions whose label is known at the feedback cutoff: each
row carries the features as they were logged when the prediction was served, so the dataset is
point-in-time correct. The latest ``holdout_share`` of the rows, by prediction time, is held out:
the challenger never sees it, and the gate scores champion and challenger on it.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from feedback_pipeline.lib.settings import Settings, TrainingSettings

KNOWN = ("labeled", "imputed_negative")
ORIGINAL = "original"  # the ``day`` of rows from the original training data


def model_columns(settings: Settings) -> tuple[list[str], list[str]]:
    """The numeric and the categorical inputs of the model."""
    cols = settings.inference_columns
    return list(cols.features), list(cols.categorical_features)


def training_rows(
    days: dict[str, pd.DataFrame],
    features: list[str],
    cutoff: pd.Timestamp | None = None,
    label_window: dt.timedelta | None = None,
) -> pd.DataFrame:
    """The rows whose label is known, with the day they came from, features and label.

    With a ``cutoff``, only what was known then counts: a label that arrived later (prediction
    time plus its feedback delay) is left out, and so is a policy-imputed label whose window
    (``label_window``) had not passed by then. A retraining re-run later learns from the same rows.
    """
    frames = []
    for day, frame in sorted(days.items()):
        status = frame["label_status"].astype(str)
        known = status.isin(KNOWN)
        if cutoff is not None:
            arrived = frame["timestamp"] + pd.to_timedelta(frame["feedback_delay_s"], unit="s")
            known &= (status != "labeled") | (arrived <= cutoff)
            if label_window is not None:
                known &= (status != "imputed_negative") | (
                    frame["timestamp"] + label_window <= cutoff
                )
        known = frame[known]
        keep = ["prediction_id", "model_version", "timestamp", "score", *features, "label", "as_of"]
        frames.append(known[[c for c in keep if c in known.columns]].assign(day=day))
    if not frames:
        return pd.DataFrame(columns=["prediction_id", "day", "timestamp", *features, "label"])
    rows = pd.concat(frames, ignore_index=True)
    for column in rows.columns:
        if isinstance(rows[column].dtype, pd.CategoricalDtype):
            rows[column] = rows[column].astype(str)
    return rows.astype({"label": "int8"})


def with_original(rows: pd.DataFrame, original: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Adds the original training data; its rows come before any logged prediction."""
    missing = sorted({*features, "label"} - set(original.columns))
    if missing:
        raise ValueError(f"the original training data lacks the columns {missing}")
    extra = original[[*features, "label"]].assign(day=ORIGINAL)
    extra["label"] = extra["label"].astype("int8")
    return pd.concat([extra, rows], ignore_index=True)


def dataset_version(rows: pd.DataFrame) -> str:
    """A content hash: the same rows always give the same version."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Split:
    """Training rows and the later holdout, split at one moment of prediction time."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_from: pd.Timestamp | None


def time_split(rows: pd.DataFrame, holdout_share: float) -> Split:
    """Holds out the latest rows by prediction time; rows without a time are always trained on.

    The split falls between two distinct timestamps, so no moment is on both sides.
    """
    timed = rows[rows["timestamp"].notna()] if "timestamp" in rows else rows.iloc[:0]
    if not len(timed):
        return Split(rows, rows.iloc[:0], None)
    times = timed["timestamp"].sort_values()
    start = times.iloc[int(len(times) * (1 - holdout_share))]
    held = rows["timestamp"].notna() & (rows["timestamp"] >= start)
    return Split(rows[~held], rows[held], start)


def build_model(settings: Settings) -> Pipeline:
    """A gradient-boosted trees pipeline: ordinal-coded categories, early stopping on log loss."""
    numeric, categorical = model_columns(settings)
    config: TrainingSettings = settings.training
    encode = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
    )
    columns = ColumnTransformer(
        [("categorical", encode, categorical), ("numeric", "passthrough", numeric)],
        verbose_feature_names_out=False,
    )
    params: dict[str, Any] = {
        "max_iter": config.max_iter,
        "learning_rate": config.learning_rate,
        "max_leaf_nodes": config.max_leaf_nodes,
        "categorical_features": list(range(len(categorical))),
        "early_stopping": True,
        "scoring": "loss",
        "validation_fraction": config.validation_share,
        "random_state": config.seed,
    }
    model = HistGradientBoostingClassifier(**params)
    return Pipeline([("columns", columns), ("model", model)])


def inputs(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The model's input columns, numeric as floats and categories as strings."""
    numeric, categorical = model_columns(settings)
    out = frame[[*categorical, *numeric]].copy()
    for column in categorical:
        out[column] = out[column].astype(object).where(out[column].notna(), None)  # type: ignore[arg-type]
    return out.astype({c: "float64" for c in numeric})


def fit(rows: pd.DataFrame, settings: Settings) -> Pipeline:
    """Fits the challenger on training rows."""
    model = build_model(settings)
    model.fit(inputs(rows, settings), rows["label"].to_numpy(dtype=int))
    return model


def scores(model: Pipeline, frame: pd.DataFrame, settings: Settings) -> np.ndarray:
    """The model's probability of class 1 for each row."""
    if not len(frame):
        return np.empty(0)
    return model.predict_proba(inputs(frame, settings))[:, 1]


def training_curve(model: Pipeline) -> pd.DataFrame:
    """Log loss per boosting iteration on the training and the early-stopping validation rows."""
    booster: HistGradientBoostingClassifier = model.named_steps["model"]
    train = -np.asarray(getattr(booster, "train_score_", []), dtype=float)
    validation = -np.asarray(getattr(booster, "validation_score_", []), dtype=float)
    n = max(len(train), len(validation))
    return pd.DataFrame(
        {
            "iteration": np.arange(n),
            "train_loss": np.resize(train, n) if len(train) else np.nan,
            "validation_loss": np.resize(validation, n) if len(validation) else np.nan,
        }
    )
