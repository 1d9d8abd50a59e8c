"""Realized performance, latency, feedback rates and business value per slice of a day.

A slice is a model version (or ``all``) crossed with a segment value (or ``all``). Metrics use
scikit-learn on the rows whose label is known under the missing-feedback policy; a metric that is
undefined on a slice (one class only, no labels) is missing, never zero.
"""

import warnings

import numpy as np
import pandas as pd
import polars as pl
from sklearn import metrics as skm

from feedback_pipeline.lib.estimation import (
    ALL,
    ESTIMATED,
    Calibrator,
    estimate,
    expected_roc_auc,
    expected_sample,
    rates,
)
from feedback_pipeline.lib.parallel import forked_map
from feedback_pipeline.lib.settings import MissingFeedbackPolicy, Settings

CLASSIFICATION = (
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
)
KNOWN = ("labeled", "imputed_negative")


def _groups(
    codes: np.ndarray, names: pd.Index | np.ndarray, rows: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """The positions in ``rows`` grouped by their code (missing values, code -1, in none)."""
    sub = codes[rows]
    order = np.argsort(sub, kind="stable")  # a radix sort of the small codes
    bounds = np.searchsorted(sub[order], np.arange(len(names) + 1))
    return [
        (str(names[i]), rows[order[bounds[i] : bounds[i + 1]]])
        for i in range(len(names))
        if bounds[i + 1] > bounds[i]
    ]


def slices(
    frame: pd.DataFrame, segments: list[str], order: np.ndarray | None = None
) -> list[tuple[str, str, np.ndarray]]:
    """Every (model version, segment) slice of the frame, ``all`` included.

    Args:
        frame: the rows, with ``model_version`` and the segment columns.
        segments: the segment columns.
        order: the frame's row positions in another order (default: as they are).

    Returns:
        Each slice's model version, segment and rows, as ascending positions in ``order``.
    """
    factorized = {c: _factorize(frame[c]) for c in ["model_version", *segments]}
    if order is not None:
        factorized = {c: (codes[order], names) for c, (codes, names) in factorized.items()}
    everything = np.arange(len(frame))
    out = []
    versions = [(ALL, everything), *_groups(*factorized["model_version"], everything)]
    for version, rows in versions:
        out.append((version, ALL, rows))
        for column in segments:
            found = _groups(*factorized[column], rows)
            out.extend((version, f"{column}={value}", at) for value, at in found)
    return out


def classification_metrics(
    y_true: np.ndarray,
    score: np.ndarray,
    cutoff: float,
    weight: np.ndarray | None = None,
    *,
    descending: bool = False,
) -> dict:
    """Accuracy to Brier score with scikit-learn; NaN where a metric is undefined.

    The confusion matrix is computed once, and accuracy, precision, recall and F1 from it, as
    scikit-learn's own functions would compute them (the tests hold them equal). Unweighted, its
    cells are counts, taken with numpy; weighted, scikit-learn sums the weights. So with the log
    loss and Brier score: unweighted, they are computed as scikit-learn computes them
    (``_losses``); weighted, scikit-learn's.

    The classes are handed to scikit-learn as 8-bit integers: it finds them again in every call
    (``np.unique`` over every label, a dozen times per slice), and over bytes that took 1.5 s
    instead of 2.1 s for a slice of 3M labels.

    Args:
        y_true: the classes, 0 or 1.
        score: the model's scores.
        cutoff: ``score >= cutoff`` is class 1.
        weight: optional sample weights (expected outcomes of unlabeled rows).
        descending: the scores are in descending order already (a slice of a day sorted once,
            see ``performance_metrics``). Unweighted, the ROC curve is then drawn from the
            labels in that order (``expected_roc_auc`` with each label as its own probability),
            and only ``auc`` is scikit-learn's: ``roc_auc_score`` sorted every slice again, a
            fifth of the slices' time at 10M predictions. The tests hold the two equal.
    """
    nan = float("nan")
    if len(y_true) == 0:
        return dict.fromkeys(CLASSIFICATION, nan)
    y_true = np.asarray(y_true).astype(np.int8, copy=False)
    y_pred = score >= cutoff
    negative, positive = y_true == 0, y_true == 1
    if weight is None:
        tn, fp, fn, tp = _confusion(negative, positive, y_pred)
    else:
        matrix = skm.confusion_matrix(
            y_true, y_pred.astype(int), labels=[0, 1], sample_weight=weight
        )
        tn, fp, fn, tp = (v.item() for v in matrix.ravel())
    two_classes = bool(negative.any() and positive.any())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            **rates(tp, fp, fn, tn),
            "roc_auc": nan
            if not two_classes
            else expected_roc_auc(score, y_true.astype(float), np.arange(len(score)))
            if descending and weight is None
            else skm.roc_auc_score(y_true, score, sample_weight=weight),
            **(
                _losses(positive, score)
                if weight is None
                else {
                    "log_loss": skm.log_loss(y_true, score, labels=[0, 1], sample_weight=weight),
                    "brier": skm.brier_score_loss(y_true, score, pos_label=1, sample_weight=weight),
                }
            ),
            "tn": tn,
            "fp": fp,
            "fn": fn,
            "tp": tp,
            "positive_rate_actual": float(np.average(y_true, weights=weight)),
        }


def _confusion(
    negative: np.ndarray, positive: np.ndarray, predicted: np.ndarray
) -> tuple[int, int, int, int]:
    """``tn``, ``fp``, ``fn`` and ``tp``, counted: scikit-learn's confusion matrix, unweighted."""
    fp = int(np.count_nonzero(negative & predicted))
    tp = int(np.count_nonzero(positive & predicted))
    return int(np.count_nonzero(negative)) - fp, fp, int(np.count_nonzero(positive)) - tp, tp


def _losses(positive: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """scikit-learn's ``log_loss`` and ``brier_score_loss`` of scores of class 1, unweighted.

    Computed as scikit-learn computes them, to the last bit (the tests hold them equal): each
    row's probabilities of both classes, clipped to the float type's epsilon for the log loss,
    and half the squared error summed over both classes for the Brier score. scikit-learn's
    checks of its input (finding and one-hot encoding the classes again) took 2.6 of the 17
    processor seconds of a 10M day's slices; the metrics' own work, 0.4.
    """
    score = np.asarray(score)
    if not np.issubdtype(score.dtype, np.floating):
        score = score.astype(float)
    low, high = (score.min(), score.max()) if len(score) else (0, 0)
    if not (low >= 0 and high <= 1):  # a missing score fails too
        raise ValueError(f"scores must be probabilities in [0, 1], not {low} to {high}")
    other = 1 - score
    eps = np.finfo(score.dtype).eps
    log_loss = -np.where(
        positive, np.log(np.clip(score, eps, 1 - eps)), np.log(np.clip(other, eps, 1 - eps))
    )
    y = positive.astype(score.dtype)
    squared = ((1 - y) - other) ** 2 + (y - score) ** 2
    return {"log_loss": float(np.mean(log_loss)), "brier": float(np.mean(squared) * 0.5)}


def by_descending_score(score: np.ndarray) -> np.ndarray:
    """The rows' positions by descending score, ties in row order and missing scores last.

    ``np.argsort(-score, kind="stable")``, sorted by polars on every core: a 10M day's scores
    in 0.6-0.8 s, where NumPy's stable sort of floats took 1.8 s on one.
    """
    scores = pl.DataFrame({"score": pl.Series(score, nan_to_null=True)}).with_row_index("row")
    ordered = scores.sort("score", descending=True, nulls_last=True, maintain_order=True)
    return ordered.get_column("row").to_numpy()


def _factorize(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Sorted distinct values and each row's code, in the smallest integer type that holds it."""
    codes, names = pd.factorize(column, sort=True)
    return codes.astype(np.min_scalar_type(-len(names) - 1)), names


def _share(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


class _FeedbackRates:
    """The feedback rates of any slice, from where each sparse feedback column has a value.

    Most predictions have no thumb, rating or comment: a slice's values are read from the rows
    that have one, in the same order as reading the slice and dropping the missing ones (so every
    rate is the same to the last bit), instead of reading every row of the slice per column.
    """

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        thumb, rating = columns["thumb"], columns["rating"]
        self.converted = columns["converted"]
        self.member = np.zeros(len(thumb), dtype=bool)
        self.present: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in ("thumb", "rating", "clicked", "comment_score"):
            at = np.flatnonzero(~np.isnan(columns[name]))
            self.present[name] = (at, columns[name][at])
        explicit = np.flatnonzero(~np.isnan(thumb) | ~np.isnan(rating))
        with np.errstate(invalid="ignore"):
            negative = (thumb[explicit] < 0) | (rating[explicit] <= 2)
        self.present["negative"] = (explicit, negative)

    def __call__(self, rows: np.ndarray) -> dict:
        """The rates of the slice of ``rows`` (ascending positions)."""
        self.member[rows] = True
        try:
            got = {name: values[self.member[at]] for name, (at, values) in self.present.items()}
        finally:
            self.member[rows] = False
        thumbs, ratings, comments = got["thumb"], got["rating"], got["comment_score"]
        return {
            "thumbs_up_share": _share(thumbs > 0),
            "mean_rating": _share(ratings),
            "negative_feedback_share": _share(got["negative"]),
            "click_rate": _share(got["clicked"]),
            # Over every prediction of the slice, a missing conversion counting as none.
            "conversion_rate": _share(np.nan_to_num(self.converted[rows])),
            "comment_sentiment": _share(comments),
            "n_comments": len(comments),
            "n_thumbs": len(thumbs),
            "n_ratings": len(ratings),
        }


def _percentiles(latency: np.ndarray) -> dict:
    present = latency[~np.isnan(latency)]
    values = np.percentile(present, [50, 95, 99]) if len(present) else [np.nan] * 3
    return {f"latency_p{q}_ms": float(v) for q, v in zip((50, 95, 99), values, strict=True)}


def performance_metrics(
    labeled: pd.DataFrame,
    settings: Settings,
    maturity: str,
    calibrator: Calibrator | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per slice of a labeled day: counts, coverage, realized and estimated metrics.

    Args:
        labeled: the day's labeled predictions.
        settings: cutoff, missing-feedback policy, segments and costs.
        maturity: ``final`` or ``provisional``, recorded on every row.
        calibrator: the reference period's score calibration; without it nothing is estimated.
        workers: processes measuring the slices side by side (``parallel.forked_map``); each
            slice is measured whole by one of them, so the table is the same for any number.

    Returns:
        Realized metrics use the rows whose label is known under the policy (``exclude``: the
        labeled ones; ``negative``: also those imputed as class 0; ``estimate``: the labeled ones,
        plus every unlabeled one as its expected outcome from its calibrated score).
        ``estimated_*`` is CBPE over every prediction of the slice, labels unseen, and once the
        day is final ``estimation_error_*`` is CBPE on the labeled rows minus the realized value.
    """
    cutoff, costs = settings.score_cutoff, settings.costs
    policy = settings.missing_feedback_policy
    status = labeled["label_status"]
    score = labeled["score"].to_numpy(dtype=float)
    probability = (
        calibrator.probabilities(score, labeled["model_version"])
        if calibrator is not None
        else None
    )
    mix = policy == MissingFeedbackPolicy.ESTIMATE and probability is not None
    # Every column is put in descending score order once. A slice's rows are then ascending
    # positions: read in memory order, and by descending score, so estimation never sorts again.
    descending = by_descending_score(score)
    score = score[descending]
    probability = probability[descending] if probability is not None else None
    known = status.isin(KNOWN).to_numpy()[descending]
    pending = (status == "pending").to_numpy()[descending]
    label = labeled["label"].to_numpy(dtype=float)[descending]
    latency = labeled["latency_ms"].to_numpy(dtype=float)[descending]
    feedback = {
        c: labeled[c].to_numpy(dtype=float)[descending]
        if c in labeled
        else np.full(len(labeled), np.nan)
        for c in ("thumb", "rating", "clicked", "converted", "comment_score")
    }
    feedback_rates = _FeedbackRates(feedback)

    def measure(version: str, segment: str, at: np.ndarray) -> dict:
        mask, labels, ranked = known[at], label[at], score[at]
        truth, scores = labels[mask].astype(np.int8), ranked[mask]
        if mix:
            assert probability is not None
            sample = expected_sample(ranked, probability[at], np.where(mask, labels, np.nan))
            realized = classification_metrics(sample[0], sample[1], cutoff, sample[2])
        else:
            realized = classification_metrics(truth, scores, cutoff, descending=True)
        # The estimator's error is judged against the labels alone, whatever the policy.
        observed = (
            classification_metrics(truth, scores, cutoff, descending=True) if mix else realized
        )
        value = (
            costs.true_positive * realized["tp"]
            + costs.false_positive * realized["fp"]
            + costs.true_negative * realized["tn"]
            + costs.false_negative * realized["fn"]
        )
        return {
            "model_version": version,
            "segment": segment,
            "n_predictions": len(at),
            "n_labeled": int(mask.sum()),
            "n_pending": int(pending[at].sum()),
            "label_coverage": _share(mask),
            "positive_rate_predicted": _share(ranked >= cutoff),
            **realized,
            **_estimates(probability, score, at, mask, observed, maturity, cutoff),
            **_percentiles(latency[at]),
            **feedback_rates(at),
            "business_value": value,
            "maturity": maturity,
            "score_cutoff": cutoff,
            "missing_feedback_policy": policy.value,
        }

    cut = slices(labeled, settings.inference_columns.segments, descending)
    shares = _shares([len(at) for _, _, at in cut], workers)
    measured = forked_map(lambda share: [measure(*cut[i]) for i in share], shares, workers)
    rows: list[dict] = [{}] * len(cut)
    for share, done in zip(shares, measured, strict=True):
        for i, row in zip(share, done, strict=True):
            rows[i] = row
    return pd.DataFrame(rows)


def _shares(sizes: list[int], workers: int) -> list[list[int]]:
    """The slices' indices dealt to ``workers`` processes, each slice's cost its rows.

    Largest first, each to the process with the fewest rows so far: no process gets more than
    a third over the best split (Graham's bound), and the shares come back to their places.
    """
    shares: list[list[int]] = [[] for _ in range(max(1, min(workers, len(sizes))))]
    loads = [0] * len(shares)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        least = loads.index(min(loads))
        shares[least].append(i)
        loads[least] += sizes[i] + 1
    return [sorted(share) for share in shares if share]


def _estimates(
    probability: np.ndarray | None,
    score: np.ndarray,
    at: np.ndarray,
    known: np.ndarray,
    realized: dict,
    maturity: str,
    cutoff: float,
) -> dict:
    """CBPE over the slice, and its error against the realized value once the day is final.

    Args:
        probability: every row's calibrated probability (None: nothing is estimated).
        score: every row's score.
        at: the slice's rows by descending score.
        known: which of the slice's rows have a known label.
        realized: the slice's realized metrics.
        maturity: the day's maturity.
        cutoff: ``score >= cutoff`` is class 1.
    """
    nan = float("nan")
    errors = {f"estimation_error_{m}": nan for m in ESTIMATED}
    if probability is None:
        return {f"estimated_{m}": nan for m in ESTIMATED} | errors
    estimated = estimate(score[at], probability[at], cutoff, np.arange(len(at)))
    if maturity == "final" and known.any():
        rows = at[known]
        on_labeled = estimate(score[rows], probability[rows], cutoff, np.arange(len(rows)))
        errors = {
            f"estimation_error_{m}": on_labeled[f"estimated_{m}"] - realized[m] for m in ESTIMATED
        }
    return estimated | errors
