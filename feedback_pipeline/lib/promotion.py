"""The champion/challenger gate: the same holdout, a margin, enough rows, a significance test.

Both models score the same holdout rows. The gain is the challenger's metric minus the
champion's; a paired bootstrap (``scipy.stats.bootstrap``, resampling rows with both models'
scores together) gives its one-sided lower confidence bound. The challenger is promoted only if
the holdout has at least ``min_samples`` rows and that lower bound is above ``margin``: it is
better by the margin, and not by luck. For accuracy the exact McNemar test on the rows where the
two models disagree is reported beside it.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from feedback_pipeline.lib.settings import PromotionMetric, PromotionSettings


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every number it rests on."""

    promote: bool
    metric: str
    n: int
    champion: float
    challenger: float
    gain: float
    lower_bound: float
    p_value: float  # bootstrap share of resampled gains at or below the margin
    margin: float
    alpha: float
    mcnemar_p_value: float | None = None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain values, for metadata and MLflow."""
        return asdict(self)


def _metric(name: PromotionMetric, labels: np.ndarray, scores: np.ndarray, cutoff: float) -> float:
    if name == PromotionMetric.ROC_AUC:
        if len(np.unique(labels)) < 2:
            return float("nan")
        return float(roc_auc_score(labels, scores))
    return float(np.mean((scores >= cutoff) == labels))


def mcnemar(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray, cutoff: float):
    """Exact McNemar p-value (two-sided) on the rows only one of the two models gets right."""
    right_a = (champion >= cutoff) == labels
    right_b = (challenger >= cutoff) == labels
    only_b, only_a = int(np.sum(right_b & ~right_a)), int(np.sum(right_a & ~right_b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


def compare(
    labels: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    settings: PromotionSettings,
    cutoff: float = 0.5,
) -> Decision:
    """Judges the challenger against the champion on the same holdout rows.

    Args:
        labels: the holdout's true classes (0/1).
        champion: the champion's scores of those rows.
        challenger: the challenger's scores of the same rows, in the same order.
        settings: margin, minimum sample, significance level and resamples.
        cutoff: score at or above which a row is predicted class 1.
    """
    labels = np.asarray(labels, dtype=int)
    champion, challenger = np.asarray(champion, float), np.asarray(challenger, float)
    if not len(labels) == len(champion) == len(challenger):
        raise ValueError("labels and both models' scores must cover the same rows")
    name, n = settings.metric, len(labels)
    base = _metric(name, labels, champion, cutoff) if n else float("nan")
    new = _metric(name, labels, challenger, cutoff) if n else float("nan")
    gain = new - base
    lower, p_value = float("nan"), float("nan")
    if n >= 2 and np.isfinite(gain):

        def statistic(y, a, b, axis=-1):
            if name == PromotionMetric.ACCURACY:
                right_b = (b >= cutoff) == y
                right_a = (a >= cutoff) == y
                return np.mean(right_b, axis=axis) - np.mean(right_a, axis=axis)
            return _metric(name, y, b, cutoff) - _metric(name, y, a, cutoff)

        result = stats.bootstrap(
            (labels, champion, challenger),
            statistic,
            paired=True,
            vectorized=name == PromotionMetric.ACCURACY,
            n_resamples=settings.n_resamples,
            confidence_level=1 - settings.alpha,
            alternative="greater",
            method="percentile",
            rng=np.random.default_rng(settings.seed),
        )
        lower = float(result.confidence_interval.low)
        distribution = np.asarray(result.bootstrap_distribution)
        distribution = distribution[np.isfinite(distribution)]
        p_value = float(np.mean(distribution <= settings.margin)) if len(distribution) else 1.0
    reasons = []
    if n < settings.min_samples:
        reasons.append(f"holdout has {n} rows, fewer than the {settings.min_samples} required")
    if not np.isfinite(gain):
        reasons.append(f"{name.value} cannot be computed on this holdout")
    elif gain < settings.margin:
        reasons.append(
            f"{name.value} gain {gain:+.4f} ({base:.4f} -> {new:.4f}) is below the margin"
            f" {settings.margin:.4f}"
        )
    elif not lower > settings.margin:
        reasons.append(
            f"not significant: the {1 - settings.alpha:.0%} lower bound of the gain is"
            f" {lower:+.4f}, not above the margin {settings.margin:.4f} (p={p_value:.3f})"
        )
    return Decision(
        promote=not reasons,
        metric=name.value,
        n=n,
        champion=base,
        challenger=new,
        gain=gain,
        lower_bound=lower,
        p_value=p_value,
        margin=settings.margin,
        alpha=settings.alpha,
        mcnemar_p_value=mcnemar(labels, champion, challenger, cutoff)
        if name == PromotionMetric.ACCURACY and n
        else None,
        reasons=reasons,
    )
