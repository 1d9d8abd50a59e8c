"""Realized performance, latency, feedback rates and business value per slice of a day.

A slice is a model version (or ``all``) crossed with a segment value (or ``all``). Metrics use
scikit-learn on the rows whose label is known under the missing-feedback policy; a metric that is
undefined on a slice (one class only, no labels) is missing, never zero.
"""

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from feedback_pipeline.lib.settings import Settings

ALL = "all"


def slices(frame: pd.DataFrame, segments: list[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """Every (model version, segment) slice of the frame, ``all`` included for both."""
    versions = [(ALL, frame), *((str(v), g) for v, g in frame.groupby("model_version"))]
    out = []
    for version, rows in versions:
        out.append((version, ALL, rows))
        for column in segments:
            for value, group in rows.groupby(column):
                out.append((version, f"{column}={value}", group))
    return out


def classification_metrics(y_true: np.ndarray, score: np.ndarray, cutoff: float) -> dict:
    """Accuracy to Brier score on labeled rows; NaN where a metric is undefined."""
    n = len(y_true)
    nan = float("nan")
    if n == 0:
        keys = [
            "accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "log_loss",
            "brier",
            "tn",
            "fp",
            "fn",
            "tp",
            "positive_rate_actual",
        ]
        return dict.fromkeys(keys, nan)
    y_pred = (score >= cutoff).astype(int)
    two_classes = len(np.unique(y_true)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "precision": skm.precision_score(y_true, y_pred, zero_division=nan),  # pyright: ignore[reportArgumentType]
            "recall": skm.recall_score(y_true, y_pred, zero_division=nan),  # pyright: ignore[reportArgumentType]
            "f1": skm.f1_score(y_true, y_pred, zero_division=nan),  # pyright: ignore[reportArgumentType]
            "roc_auc": skm.roc_auc_score(y_true, score) if two_classes else nan,
            "log_loss": skm.log_loss(y_true, score, labels=[0, 1]),
            "brier": skm.brier_score_loss(y_true, score, pos_label=1),
            "tn": int(tn),
            "fp": int(fp),
            "fn": int(fn),
            "tp": int(tp),
            "positive_rate_actual": float(np.mean(y_true)),
        }


def _feedback_rates(rows: pd.DataFrame) -> dict:
    thumbs, ratings = rows["thumb"].dropna(), rows["rating"].dropna()
    explicit = rows["thumb"].notna() | rows["rating"].notna()
    negative = (rows["thumb"] < 0) | (rows["rating"] <= 2)
    return {
        "thumbs_up_share": float((thumbs > 0).mean()) if len(thumbs) else np.nan,
        "mean_rating": float(ratings.mean()) if len(ratings) else np.nan,
        "negative_feedback_share": float(negative[explicit].mean()) if explicit.any() else np.nan,
        "click_rate": float(rows["clicked"].dropna().mean())
        if rows["clicked"].notna().any()
        else np.nan,
        "conversion_rate": float(rows["converted"].fillna(0).mean()) if len(rows) else np.nan,
        "n_thumbs": len(thumbs),
        "n_ratings": len(ratings),
    }


def performance_metrics(labeled: pd.DataFrame, settings: Settings, maturity: str) -> pd.DataFrame:
    """One row per slice of a labeled day: counts, coverage, realized metrics, latency, feedback."""
    known = labeled["label_status"].isin(["labeled", "imputed_negative"])
    costs = settings.costs
    rows = []
    for version, segment, group in slices(labeled, settings.inference_columns.segments):
        mask = known.loc[group.index]
        truth = group.loc[mask, "label"].to_numpy(dtype=int)
        scores = group.loc[mask, "score"].to_numpy(dtype=float)
        realized = classification_metrics(truth, scores, settings.score_cutoff)
        latency = group["latency_ms"].dropna()
        value = (
            costs.true_positive * realized["tp"]
            + costs.false_positive * realized["fp"]
            + costs.true_negative * realized["tn"]
            + costs.false_negative * realized["fn"]
        )
        rows.append(
            {
                "model_version": version,
                "segment": segment,
                "n_predictions": len(group),
                "n_labeled": int(mask.sum()),
                "n_pending": int((group["label_status"] == "pending").sum()),
                "label_coverage": float(mask.mean()) if len(group) else np.nan,
                "positive_rate_predicted": float((group["score"] >= settings.score_cutoff).mean()),
                **realized,
                "latency_p50_ms": latency.quantile(0.5) if len(latency) else np.nan,
                "latency_p95_ms": latency.quantile(0.95) if len(latency) else np.nan,
                "latency_p99_ms": latency.quantile(0.99) if len(latency) else np.nan,
                **_feedback_rates(group),
                "business_value": value,
                "maturity": maturity,
                "score_cutoff": settings.score_cutoff,
                "missing_feedback_policy": settings.missing_feedback_policy.value,
            }
        )
    return pd.DataFrame(rows)
