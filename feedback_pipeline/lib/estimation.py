"""Performance while labels are pending: confidence-based performance estimation (CBPE).

CBPE, as published by NannyML: if a score, once calibrated, is the probability that the
prediction's true class is 1, then each unlabeled prediction is a positive with weight ``p`` and
a negative with weight ``1 - p``, and the expected confusion matrix, and every metric built on
it, follows. scikit-learn computes the metrics on that weighted, doubled sample, so the estimated
ROC AUC is the area under the expected ROC curve exactly as CBPE defines it.

The calibration is isotonic regression of the label on the score over a reference period whose
labels are known (``reference_data``), one map per model version with enough labeled rows there,
and one over all versions for the rest. The estimate is only as good as that calibration:
under concept drift (the same scores, other outcomes) it cannot see the change, which is why the
estimator's own error is tracked once a day's labels have matured.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

# The "every version" / "every segment" key of slices and of the pooled calibration.
ALL = "all"
ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")
# Fewer labeled reference rows than this and a version borrows the calibration of all versions;
# fewer than this over all versions and nothing is estimated.
MIN_CALIBRATION_ROWS = 200


@dataclass(frozen=True)
class Calibrator:
    """Maps a model version's scores to calibrated probabilities of class 1."""

    maps: dict[str, IsotonicRegression] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def basis(self, version: str) -> str:
        """Which calibration a version's scores go through: its own, or that of all versions."""
        return version if version in self.maps else ALL

    def probability(self, score: np.ndarray, version: str) -> np.ndarray:
        """The calibrated probability of class 1 for each score."""
        return np.asarray(self.maps[self.basis(version)].predict(score), dtype=float)

    def probabilities(self, scores: np.ndarray, versions: pd.Series) -> np.ndarray:
        """Calibrated probabilities for rows of mixed versions."""
        codes, names = pd.factorize(versions)
        out = np.full(len(scores), np.nan)
        for code, version in enumerate(names):
            rows = codes == code
            out[rows] = self.probability(scores[rows], str(version))
        return out


def fit_calibrator(
    reference: pd.DataFrame, min_rows: int = MIN_CALIBRATION_ROWS
) -> Calibrator | None:
    """Fits the isotonic calibration on the labeled rows of the reference period.

    Args:
        reference: rows with ``score``, ``label`` (missing where unknown) and ``model_version``;
            where a ``calibration`` column is present, only its rows marked True are used.
        min_rows: the fewest labeled rows a calibration is fitted on.

    Returns:
        The calibrator, or None when the reference has too few labeled rows, or only one class.
    """
    known = reference[reference["label"].notna()]
    if "calibration" in known:  # a champion's reference: only rows it was not trained on
        known = known[known["calibration"].astype(bool)]
    if len(known) < min_rows or known["label"].nunique() < 2:
        return None
    versions = known.groupby("model_version", observed=True)
    # A version literally named "all" shares the pooled calibration rather than replace it.
    groups = {str(v): rows for v, rows in versions if len(rows) and str(v) != ALL}
    groups = {ALL: known} | groups
    maps, counts = {}, {}
    for name, rows in groups.items():
        if len(rows) < min_rows or rows["label"].nunique() < 2:
            continue
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(rows["score"].to_numpy(dtype=float), rows["label"].to_numpy(dtype=float))
        maps[name], counts[name] = model, len(rows)
    return Calibrator(maps=maps, rows=counts)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def rates(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 from a (possibly expected) confusion matrix.

    As scikit-learn defines them with ``zero_division=nan``: a ratio whose denominator is zero
    is undefined, and F1 is ``2 tp / (2 tp + fp + fn)``.
    """
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def expected_sample(
    score: np.ndarray, probability: np.ndarray, truth: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted sample whose metrics are the expected metrics.

    Args:
        score: the model's scores.
        probability: the calibrated probability of class 1 of each row.
        truth: known labels (NaN where unknown); a row with a known label keeps it, weight 1.

    Returns:
        Labels, scores and weights: each row without a label appears as class 1 with weight ``p``
        and as class 0 with weight ``1 - p``.
    """
    known = np.zeros(len(score), dtype=bool) if truth is None else ~np.isnan(truth)
    unknown = ~known
    labels = truth[known] if truth is not None else np.empty(0)
    y = np.concatenate([labels, np.ones(unknown.sum()), np.zeros(unknown.sum())])
    s = np.concatenate([score[known], score[unknown], score[unknown]])
    w = np.concatenate([np.ones(known.sum()), probability[unknown], 1 - probability[unknown]])
    return y.astype(np.int8), s, w


def estimate(
    score: np.ndarray, probability: np.ndarray, cutoff: float, descending: np.ndarray | None = None
) -> dict[str, float]:
    """CBPE: the expected accuracy, precision, recall, F1 and ROC AUC of unlabeled predictions.

    The expected confusion matrix sums ``p`` and ``1 - p`` over the predicted classes; the
    expected ROC curve accumulates them down the scores, and scikit-learn's ``auc`` measures it.
    Both equal scikit-learn's metrics on the sample of ``expected_sample`` (the tests hold
    them equal), without doubling the rows or sorting them again for every slice.

    Args:
        score: the model's scores of the rows.
        probability: their calibrated probabilities of class 1.
        cutoff: ``score >= cutoff`` is class 1.
        descending: the rows' positions by descending score, if already known.

    Returns:
        ``estimated_<metric>`` for each metric; NaN where undefined (no rows, one class expected).
    """
    predicted = score >= cutoff
    tp = float(probability[predicted].sum())
    fp = float((1 - probability[predicted]).sum())
    fn = float(probability[~predicted].sum())
    tn = float((1 - probability[~predicted]).sum())
    out = {f"estimated_{k}": v for k, v in rates(tp, fp, fn, tn).items()}
    return out | {"estimated_roc_auc": expected_roc_auc(score, probability, descending)}


def expected_roc_auc(
    score: np.ndarray, probability: np.ndarray, descending: np.ndarray | None = None
) -> float:
    """The area under the ROC curve expected from calibrated probabilities (NaN if undefined)."""
    order = np.argsort(-score, kind="stable") if descending is None else descending
    ranked, p = score[order], probability[order]
    positives, negatives = np.cumsum(p), np.cumsum(1 - p)
    if len(p) == 0 or positives[-1] <= 0 or negatives[-1] <= 0:
        return float("nan")
    # One point per distinct score: tied rows move the curve together, as scikit-learn's do.
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tpr = np.r_[0.0, positives[last_of_tie] / positives[-1]]
    fpr = np.r_[0.0, negatives[last_of_tie] / negatives[-1]]
    return float(skm.auc(fpr, tpr))
