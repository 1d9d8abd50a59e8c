"""Why users complain: the model's errors, its latency, or drift — and for whom.

Three views, each a table of tests with its own Benjamini–Hochberg correction, so that a table of
dozens of tests does not turn up a "finding" by chance:

- ``metric_correlations``: day by day, per model version and segment, does a feedback signal
  (thumbs, ratings, clicks, comment sentiment) move with a model metric (accuracy, drift,
  latency)? Spearman's rank correlation, at lags of zero to a few days, since feedback can follow
  a metric late; ``strongest_lag`` keeps the lag where each relation is strongest.
- ``by_correctness``: prediction by prediction, is the feedback on the predictions the model got
  wrong different from the feedback on those it got right? This is the direct test of "users
  complain because the model errs", where daily correlations only show that both move together.
- ``by_latency``: prediction by prediction, do clicks, thumbs and ratings fall as the response
  gets slower? Quantile buckets to look at, and a rank correlation to decide.

A test on too little data (fewer days or rows than asked for) or on a series that does not vary
is *inconclusive*: it has no p-value, says why in ``reason`` with the numbers, and takes no part in
the correction. Daily correlations are of a few dozen points at best and are about association,
not cause: a drift that lowers accuracy and a latency regression on the same days will both
correlate with a fall in thumbs; the prediction-level views are the ones that separate them.
"""

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from feedback_pipeline.lib.estimation import ALL

SIGNALS = [
    "thumbs_up_share",
    "mean_rating",
    "negative_feedback_share",
    "click_rate",
    "conversion_rate",
    "comment_sentiment",
]
METRICS = ["accuracy", "roc_auc", "estimated_accuracy", "drift_share", "latency_p95_ms"]
CORRELATION_COLUMNS = [
    "model_version",
    "segment",
    "signal",
    "metric",
    "lag",
    "n",
    "rho",
    "p_value",
    "p_adjusted",
    "ci_low",
    "ci_high",
    "verdict",
    "reason",
]
CORRECTNESS_COLUMNS = [
    "model_version",
    "signal",
    "n_correct",
    "n_wrong",
    "mean_correct",
    "mean_wrong",
    "difference",
    "p_value",
    "p_adjusted",
    "verdict",
    "reason",
]
BUCKET_COLUMNS = [
    "model_version",
    "bucket",
    "latency_range",
    "latency_low",
    "latency_high",
    "n",
    "n_clicks_known",
    "n_thumbs",
    "n_ratings",
    "click_rate",
    "thumbs_up_share",
    "mean_rating",
]
LATENCY_COLUMNS = [
    "model_version",
    "signal",
    "n",
    "rho",
    "p_value",
    "p_adjusted",
    "verdict",
    "reason",
]
INCONCLUSIVE = "inconclusive"
NO_EVIDENCE = "no evidence"


def _adjust(table: pd.DataFrame, alpha: float, found: np.ndarray) -> None:
    """Fills ``p_adjusted`` (Benjamini–Hochberg over the conclusive rows) and their verdicts.

    Args:
        table: rows with ``p_value`` (NaN on inconclusive rows) and ``verdict``.
        alpha: the false discovery rate.
        found: per row, the verdict when its adjusted p-value is below ``alpha``.
    """
    adjusted = np.full(len(table), np.nan)
    conclusive = (table["verdict"] != INCONCLUSIVE).to_numpy()
    if conclusive.any():
        p = table["p_value"].to_numpy(dtype=float)[conclusive]
        adjusted[conclusive] = stats.false_discovery_control(p, method="bh")
    table["p_adjusted"] = adjusted
    with np.errstate(invalid="ignore"):
        significant = adjusted < alpha
    verdict = np.where(significant, found, NO_EVIDENCE)
    table["verdict"] = np.where(conclusive, verdict, INCONCLUSIVE)


def _direction(rho: pd.Series) -> np.ndarray:
    """``positive`` or ``negative`` by the sign of each rho."""
    return np.where(rho.to_numpy(dtype=float) > 0, "positive", "negative")


def _versions(frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """``all`` and then each model version in sorted order, as boolean masks of the rows."""
    version = frame["model_version"].astype(str).to_numpy()
    out = [(ALL, np.ones(len(frame), dtype=bool))]
    out.extend((str(v), version == v) for v in sorted(set(version) - {ALL}))
    return out


def _first_key(value: str) -> tuple[bool, str]:
    """Sorts ``all`` before every other name."""
    return (value != ALL, value)


# --- daily correlations ----------------------------------------------------------------------


def _confidence_interval(rho: float, n: int, alpha: float) -> tuple[float, float]:
    """Fisher-z interval of Spearman's rho, Bonett–Wright standard error sqrt((1 + rho²/2)/(n-3)).

    With three pairs or fewer the interval is the whole range; with |rho| = 1 it is the point.
    """
    if n <= 3:
        return -1.0, 1.0
    if abs(rho) >= 1.0:
        return rho, rho
    z = np.arctanh(rho)
    se = np.sqrt((1.0 + rho**2 / 2.0) / (n - 3))
    half = stats.norm.ppf(1.0 - alpha / 2.0) * se
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def _spearman_row(
    x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, minimum: int, unit: str
) -> dict:
    """Spearman's rho and its two-sided p-value, or the reason the pair is inconclusive.

    Args:
        x: the first series, NaN where missing.
        y: the second series, NaN where missing; pairs with either missing are dropped.
        x_name: the first series' name, for the reason.
        y_name: the second series' name, for the reason.
        minimum: the fewest pairs to test.
        unit: what a pair is ("days", "rows"), for the reason.
    """
    both = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[both], y[both]
    n = len(x)
    out = {"n": n, "rho": np.nan, "p_value": np.nan, "verdict": INCONCLUSIVE, "reason": ""}
    if n < minimum:
        out["reason"] = f"{n} {unit}, fewer than {minimum}"
    elif np.all(x == x[0]):
        out["reason"] = f"{x_name} does not vary over {n} {unit}"
    elif np.all(y == y[0]):
        out["reason"] = f"{y_name} does not vary over {n} {unit}"
    else:
        result: Any = stats.spearmanr(x, y)  # a SignificanceResult, untyped in scipy
        out |= {
            "rho": float(result.statistic),
            "p_value": float(result.pvalue),
            "verdict": NO_EVIDENCE,
        }
    return out


def metric_correlations(
    daily: pd.DataFrame, *, min_days: int = 7, alpha: float = 0.05, max_lag: int = 2
) -> pd.DataFrame:
    """Spearman correlation of each feedback signal with each model metric, day by day.

    Args:
        daily: one row per (``date``, ``model_version``, ``segment``), the date a 'YYYY-MM-DD'
            string, with any of the ``SIGNALS`` and ``METRICS`` columns (absent ones are skipped;
            a pair's days with either value missing are left out of that pair).
        min_days: the fewest days a pair needs to be tested.
        alpha: the false discovery rate, and one minus the confidence level of the intervals.
        max_lag: the longest lag tested, in days.

    Returns:
        One row per group (model version, segment; ``all`` first, then sorted), signal, metric
        (in the order of ``SIGNALS`` and ``METRICS``) and lag from 0 to ``max_lag``. Lag ``k``
        pairs the metric of day ``t`` with the signal of calendar day ``t + k``. ``rho`` is
        Spearman's rho, ``p_value`` its two-sided p-value, ``ci_low``/``ci_high`` its
        ``1 - alpha`` interval (Fisher z, Bonett–Wright standard error) and ``p_adjusted`` the
        Benjamini–Hochberg adjustment over every conclusive row of the table. ``verdict`` is
        ``positive`` or ``negative`` when ``p_adjusted < alpha``, ``no evidence`` otherwise, and
        ``inconclusive`` (no rho, no p-value, ``reason`` says why) for a pair with fewer than
        ``min_days`` days or one series constant.

    Raises:
        ValueError: when a group has two rows for one date.
    """
    signals = [s for s in SIGNALS if s in daily.columns]
    metrics = [m for m in METRICS if m in daily.columns]
    frame = daily.assign(
        model_version=daily["model_version"].astype(str),
        segment=daily["segment"].astype(str),
        date=pd.to_datetime(daily["date"], format="%Y-%m-%d"),
    )
    duplicated = frame.duplicated(["model_version", "segment", "date"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(
            f"{first['model_version']}/{first['segment']} has more than one row on "
            f"{first['date']:%Y-%m-%d}"
        )
    keys = sorted(
        {(v, s) for v, s in zip(frame["model_version"], frame["segment"], strict=True)},
        key=lambda key: (_first_key(key[0]), _first_key(key[1])),
    )
    groups = dict(tuple(frame.groupby(["model_version", "segment"], sort=False)))
    rows = []
    for key in keys:
        group = groups[key].set_index("date").sort_index()
        dates = group.index
        for signal in signals:
            values = group[signal].astype(float)
            for metric in metrics:
                x = group[metric].to_numpy(dtype=float)
                for lag in range(max_lag + 1):
                    y = values.reindex(dates + pd.Timedelta(days=lag)).to_numpy(dtype=float)
                    row = _spearman_row(x, y, metric, signal, min_days, "days")
                    if row["verdict"] == INCONCLUSIVE:
                        low = high = np.nan
                    else:
                        low, high = _confidence_interval(row["rho"], row["n"], alpha)
                    rows.append(
                        {
                            "model_version": key[0],
                            "segment": key[1],
                            "signal": signal,
                            "metric": metric,
                            "lag": lag,
                            **row,
                            "ci_low": low,
                            "ci_high": high,
                        }
                    )
    table = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    table = table.astype({"lag": int, "n": int, "rho": float, "p_value": float})
    _adjust(table, alpha, _direction(table["rho"]))
    return table[CORRELATION_COLUMNS]


def strongest_lag(table: pd.DataFrame) -> pd.DataFrame:
    """The lag at which each signal moves most with each metric: does feedback trail the metric?

    Args:
        table: the output of ``metric_correlations``.

    Returns:
        Per model version, segment, signal and metric, the conclusive row with the largest
        ``|rho|`` (the shorter lag on a tie), in the table's order. A pair with no conclusive lag
        has no row. The row's ``verdict`` still says whether that lag's relation is significant.
    """
    keys = ["model_version", "segment", "signal", "metric"]
    conclusive = table[table["verdict"] != INCONCLUSIVE]
    ranked = conclusive.assign(_strength=conclusive["rho"].abs()).sort_values(
        ["_strength", "lag"], ascending=[False, True], kind="stable"
    )
    best = ranked.drop_duplicates(keys, keep="first").sort_index()
    return best.drop(columns="_strength").reset_index(drop=True)


# --- prediction level ------------------------------------------------------------------------


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A feedback column as floats, all NaN when the frame lacks it."""
    if name not in rows.columns:
        return np.full(len(rows), np.nan)
    return rows[name].to_numpy(dtype=float)


def _signals(rows: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """Each prediction-level signal as (values, rows that have it, whether it is binary)."""
    thumb, rating = _column(rows, "thumb"), _column(rows, "rating")
    clicked, converted = _column(rows, "clicked"), _column(rows, "converted")
    comment = _column(rows, "comment_score")
    has_thumb, has_rating = ~np.isnan(thumb), ~np.isnan(rating)
    with np.errstate(invalid="ignore"):
        negative = ((thumb < 0) | (rating <= 2)).astype(float)
    return {
        "thumbs_up": ((thumb > 0).astype(float), has_thumb, True),
        "rating": (rating, has_rating, False),
        "negative": (negative, has_thumb | has_rating, True),
        "clicked": (clicked, ~np.isnan(clicked), True),
        "converted": (converted, ~np.isnan(converted), True),
        "comment_score": (comment, ~np.isnan(comment), False),
    }


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


def _difference_test(right: np.ndarray, wrong: np.ndarray, binary: bool) -> float:
    """Two-sided p-value: Fisher's exact test of two shares, or Mann–Whitney U of two samples."""
    if binary:
        a, b = int(right.sum()), int(wrong.sum())
        table = [[a, len(right) - a], [b, len(wrong) - b]]
        result: Any = stats.fisher_exact(table, alternative="two-sided")
        return float(result.pvalue)
    return float(stats.mannwhitneyu(right, wrong, alternative="two-sided").pvalue)


def by_correctness(
    rows: pd.DataFrame, cutoff: float, *, min_rows: int = 30, alpha: float = 0.05
) -> pd.DataFrame:
    """Is the feedback on the predictions the model got wrong different from the rest?

    Args:
        rows: one row per prediction with ``score``, ``label`` (NaN when unknown),
            ``model_version`` and the feedback columns ``thumb`` (-1/1), ``rating`` (1-5),
            ``clicked`` (0/1), ``converted`` (0/1) and ``comment_score`` (sentiment), NaN where
            the prediction has none; an absent feedback column counts as all missing.
        cutoff: ``score >= cutoff`` predicts class 1.
        min_rows: the fewest rows with the signal each side (correct, wrong) needs to be tested.
        alpha: the false discovery rate.

    Returns:
        Per model version (``all`` first) and signal: ``thumbs_up`` (share of thumbs that are
        up), ``rating`` (mean), ``negative`` (share of rows with a thumb or a rating that have a
        thumb down or a rating of 2 or less), ``clicked``, ``converted`` (shares among rows that
        have them) and ``comment_score`` (mean sentiment). Only labeled rows count; a row is
        correct when its predicted class equals its label. ``difference`` is the correct mean
        minus the wrong mean; ``p_value`` is Fisher's exact test for the binary signals and the
        Mann–Whitney U test for rating and comment score, both two-sided; ``p_adjusted`` is
        Benjamini–Hochberg over the conclusive rows. ``verdict`` is ``differs`` when
        ``p_adjusted < alpha``, else ``no evidence``, or ``inconclusive`` (with a ``reason``)
        when a side has fewer than ``min_rows`` rows.
    """
    labeled = rows[rows["label"].notna()].reset_index(drop=True)
    predicted = (labeled["score"].to_numpy(dtype=float) >= cutoff).astype(float)
    correct = predicted == labeled["label"].to_numpy(dtype=float)
    signals = _signals(labeled)
    out = []
    for version, members in _versions(labeled):
        for signal, (values, present, binary) in signals.items():
            right = values[members & present & correct]
            wrong = values[members & present & ~correct]
            row = {
                "model_version": version,
                "signal": signal,
                "n_correct": len(right),
                "n_wrong": len(wrong),
                "mean_correct": _mean(right),
                "mean_wrong": _mean(wrong),
                "p_value": np.nan,
                "verdict": INCONCLUSIVE,
                "reason": "",
            }
            row["difference"] = row["mean_correct"] - row["mean_wrong"]
            short = [(len(right), "correct"), (len(wrong), "wrong")]
            few = [f"{k} {side} rows" for k, side in short if k < min_rows]
            if few:
                row["reason"] = f"{' and '.join(few)} with {signal}, fewer than {min_rows}"
            else:
                row["p_value"] = _difference_test(right, wrong, binary)
                row["verdict"] = NO_EVIDENCE
            out.append(row)
    table = pd.DataFrame(out, columns=CORRECTNESS_COLUMNS)
    table = table.astype({"n_correct": int, "n_wrong": int, "p_value": float})
    _adjust(table, alpha, np.full(len(table), "differs"))
    return table


def _buckets(latency: np.ndarray, buckets: int) -> tuple[np.ndarray, list[pd.Interval]]:
    """Quantile bucket codes of the latencies (ties merged), and each bucket's interval."""
    if len(latency) == 0:
        return np.zeros(0, dtype=int), []
    if np.all(latency == latency[0]):
        return np.zeros(len(latency), dtype=int), [pd.Interval(latency[0], latency[0], "both")]
    cut = pd.qcut(latency, buckets, duplicates="drop")
    return np.asarray(cut.codes), list(cut.categories)


def by_latency(
    rows: pd.DataFrame, buckets: int = 5, *, min_rows: int = 30, alpha: float = 0.05
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Do clicks, thumbs and ratings fall as the response gets slower?

    Args:
        rows: one row per prediction with ``model_version``, ``latency_ms`` and the feedback
            columns ``clicked`` (0/1), ``thumb`` (-1/1) and ``rating`` (1-5), NaN where missing.
        buckets: how many latency quantile buckets per version (fewer when latencies tie).
        min_rows: the fewest rows with a signal (and a latency) to test it.
        alpha: the false discovery rate.

    Returns:
        Two tables. The buckets: per model version (``all`` first) and latency quantile bucket
        (0 the fastest), the bucket's interval as text and its bounds, its rows, how many of them
        have each signal, and the click rate, share of thumbs up and mean rating (NaN when no row
        has the signal). The tests: per model version and signal (``clicked``, ``thumbs_up``,
        ``rating``), Spearman's rho of latency against the signal over the rows that have both,
        its two-sided p-value, Benjamini–Hochberg ``p_adjusted`` over the table's conclusive rows,
        and a ``positive``/``negative``/``no evidence`` verdict, or ``inconclusive`` (with a
        ``reason``) under ``min_rows`` rows or when a side does not vary.
    """
    latency = _column(rows, "latency_ms")
    signals = _signals(rows)
    timed = ~np.isnan(latency)
    tested = {name: signals[name] for name in ("clicked", "thumbs_up", "rating")}
    bucket_rows, test_rows = [], []
    for version, members in _versions(rows):
        at = members & timed
        codes, intervals = _buckets(latency[at], buckets)
        picked = {name: (values[at], present[at]) for name, (values, present, _) in tested.items()}
        for code, interval in enumerate(intervals):
            inside = codes == code
            counts, means = {}, {}
            for name, (values, present) in picked.items():
                counts[name] = int((inside & present).sum())
                means[name] = _mean(values[inside & present])
            bucket_rows.append(
                {
                    "model_version": version,
                    "bucket": code,
                    "latency_range": str(interval),
                    "latency_low": float(interval.left),
                    "latency_high": float(interval.right),
                    "n": int(inside.sum()),
                    "n_clicks_known": counts["clicked"],
                    "n_thumbs": counts["thumbs_up"],
                    "n_ratings": counts["rating"],
                    "click_rate": means["clicked"],
                    "thumbs_up_share": means["thumbs_up"],
                    "mean_rating": means["rating"],
                }
            )
        for name, (values, present, _) in tested.items():
            y = np.where(present, values, np.nan)[members]
            row = _spearman_row(latency[members], y, "latency_ms", name, min_rows, "rows")
            test_rows.append({"model_version": version, "signal": name, **row})
    table = pd.DataFrame(bucket_rows, columns=BUCKET_COLUMNS)
    tests = pd.DataFrame(test_rows, columns=LATENCY_COLUMNS)
    tests = tests.astype({"n": int, "rho": float, "p_value": float})
    _adjust(tests, alpha, _direction(tests["rho"]))
    return table, tests
