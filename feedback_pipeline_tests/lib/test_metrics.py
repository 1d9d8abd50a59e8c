"""Realized metrics per slice against scikit-learn and numpy computed independently."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from feedback_pipeline.lib import metrics, parallel
from feedback_pipeline.lib.estimation import fit_calibrator
from feedback_pipeline.lib.metrics import (
    _FeedbackRates,
    _shares,
    classification_metrics,
    performance_metrics,
)
from feedback_pipeline.lib.settings import (
    MissingFeedbackPolicy,
    Settings,
    default_settings_path,
    load_settings,
)

# Read once; each test works on its own copy (``model_copy`` would carry cached values over).
_SHIPPED = load_settings(default_settings_path())

NAN = float("nan")
COLUMNS = [
    "prediction_id",
    "model_version",
    "country",
    "platform",
    "score",
    "label",
    "label_status",
    "latency_ms",
    "thumb",
    "rating",
    "clicked",
    "converted",
]
ROWS = [
    ("p1", "v1", "US", "ios", 0.90, 1.0, "labeled", 10.0, 1.0, 5.0, 1.0, 1.0),
    ("p2", "v1", "US", "web", 0.70, 0.0, "labeled", 20.0, -1.0, NAN, 0.0, NAN),
    ("p3", "v1", "DE", "ios", 0.50, 1.0, "labeled", 30.0, NAN, 2.0, NAN, NAN),
    ("p4", "v1", "DE", "ios", 0.20, 0.0, "labeled", 40.0, NAN, NAN, NAN, NAN),
    ("p5", "v1", "US", "ios", 0.40, 1.0, "labeled", 50.0, 1.0, NAN, 1.0, 0.0),
    ("p6", "v1", "FR", "web", 0.60, NAN, "pending", 60.0, NAN, NAN, NAN, NAN),
    ("p7", "v2", "US", "ios", 0.80, 1.0, "labeled", 15.0, 1.0, 4.0, 1.0, 1.0),
    ("p8", "v2", "US", "web", 0.30, 0.0, "labeled", 25.0, NAN, 1.0, 0.0, NAN),
    ("p9", "v2", "DE", "ios", 0.55, 0.0, "labeled", NAN, -1.0, 3.0, NAN, NAN),
    ("p10", "v2", "DE", "web", 0.10, 0.0, "labeled", 35.0, NAN, NAN, NAN, NAN),
    ("p11", "v2", "FR", "web", 0.45, NAN, "unlabeled_final", 45.0, NAN, NAN, NAN, NAN),
    ("p12", "v2", "US", "ios", 0.65, 1.0, "labeled", 55.0, NAN, NAN, NAN, NAN),
]


def _settings(**update: object) -> Settings:
    return _SHIPPED.model_copy(update=update)


def _labeled(rows: list[tuple] = ROWS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """The metrics of ROWS under the shipped settings, computed once for the module."""
    return performance_metrics(_labeled(), _settings(), "final")


def _row(table: pd.DataFrame, version: str, segment: str) -> pd.Series:
    rows = table[(table["model_version"] == version) & (table["segment"] == segment)]
    assert len(rows) == 1
    return rows.iloc[0]


def _sklearn(frame: pd.DataFrame, cutoff: float = 0.5) -> dict:
    known = frame[frame["label_status"] == "labeled"]
    y = known["label"].to_numpy(dtype=int)
    score = known["score"].to_numpy()
    pred = (score >= cutoff).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, score),
        "log_loss": skm.log_loss(y, score),
        "brier": skm.brier_score_loss(y, score),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


@pytest.mark.parametrize(("version", "rows"), [("all", ROWS), ("v1", ROWS[:6])])
def test_overall_and_version_slice_equal_scikit_learn(
    table: pd.DataFrame, version: str, rows: list[tuple]
) -> None:
    got = _row(table, version, "all")
    expected = _sklearn(_labeled(rows))

    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["n_predictions"] == len(rows)
    assert got["n_labeled"] == sum(r[6] == "labeled" for r in rows)


def test_overall_counts_coverage_and_confusion_by_hand(table: pd.DataFrame) -> None:
    overall = _row(table, "all", "all")

    assert (overall["n_predictions"], overall["n_labeled"], overall["n_pending"]) == (12, 10, 1)
    assert overall["label_coverage"] == pytest.approx(10 / 12)
    # Predicted 1 at score >= 0.5: p1 p2 p3 p6 p7 p9 p12.
    assert overall["positive_rate_predicted"] == pytest.approx(7 / 12)
    assert (overall["tp"], overall["fp"], overall["tn"], overall["fn"]) == (4, 2, 3, 1)
    assert overall["positive_rate_actual"] == pytest.approx(5 / 10)
    # Costs of the shipped settings: tp 12, fp -2, tn 0, fn -4.
    assert overall["business_value"] == pytest.approx(4 * 12 - 2 * 2 + 0 - 4)


def test_every_slice_is_reported_once(table: pd.DataFrame) -> None:
    segments = {"all", "country=US", "country=DE", "country=FR", "platform=ios", "platform=web"}
    assert set(zip(table["model_version"], table["segment"], strict=True)) == {
        (version, segment) for version in ("all", "v1", "v2") for segment in segments
    }
    assert len(table) == 18


def test_one_class_slice_has_missing_roc_auc_not_zero(table: pd.DataFrame) -> None:
    german_v2 = _row(table, "v2", "country=DE")  # labels 0 and 0

    assert german_v2["n_labeled"] == 2
    assert math.isnan(german_v2["roc_auc"])
    assert german_v2["accuracy"] == 0.5  # p9 (0.55) wrong, p10 (0.10) right
    assert (german_v2["tn"], german_v2["fp"]) == (1, 1)


def test_slice_without_labeled_rows_has_missing_metrics(table: pd.DataFrame) -> None:
    france = _row(table, "all", "country=FR")  # one pending, one unlabeled_final

    assert france["n_predictions"] == 2
    assert france["n_labeled"] == 0
    assert france["label_coverage"] == 0.0
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "tp"):
        assert math.isnan(france[key]), key


def test_latency_percentiles_equal_numpy(table: pd.DataFrame) -> None:
    overall, v2 = _row(table, "all", "all"), _row(table, "v2", "all")

    every = [r[7] for r in ROWS if not math.isnan(r[7])]
    second = [r[7] for r in ROWS[6:] if not math.isnan(r[7])]

    assert [overall[f"latency_p{q}_ms"] for q in (50, 95, 99)] == pytest.approx(
        list(np.percentile(every, [50, 95, 99]))
    )
    assert [v2[f"latency_p{q}_ms"] for q in (50, 95, 99)] == pytest.approx(
        list(np.percentile(second, [50, 95, 99]))
    )


def test_feedback_rates_by_hand(table: pd.DataFrame) -> None:
    overall = _row(table, "all", "all")

    # thumbs: p1 +1, p2 -1, p5 +1, p7 +1, p9 -1
    assert overall["thumbs_up_share"] == pytest.approx(3 / 5)
    assert overall["n_thumbs"] == 5
    # ratings: 5, 2, 4, 1, 3
    assert overall["mean_rating"] == pytest.approx(3.0)
    assert overall["n_ratings"] == 5
    # explicit: p1 p2 p3 p5 p7 p8 p9; negative (thumb down or rating <= 2): p2 p3 p8 p9
    assert overall["negative_feedback_share"] == pytest.approx(4 / 7)
    # clicks known on p1 p2 p5 p7 p8: 1 0 1 1 0
    assert overall["click_rate"] == pytest.approx(3 / 5)
    # conversions: p1 and p7 of 12 predictions, unknown counts as no conversion
    assert overall["conversion_rate"] == pytest.approx(2 / 12)


def test_feedback_rates_are_missing_without_feedback(table: pd.DataFrame) -> None:
    france = _row(table, "all", "country=FR")

    assert math.isnan(france["thumbs_up_share"])
    assert math.isnan(france["mean_rating"])
    assert math.isnan(france["negative_feedback_share"])
    assert (france["n_thumbs"], france["n_ratings"]) == (0, 0)


CUTOFF_ROWS = [
    ("a", "v1", "US", "ios", 0.5, 1.0, "labeled", 1.0, NAN, NAN, NAN, NAN),
    ("b", "v1", "US", "ios", 0.4999, 0.0, "labeled", 1.0, NAN, NAN, NAN, NAN),
]


def test_score_exactly_at_the_cutoff_is_class_one() -> None:
    overall = _row(performance_metrics(_labeled(CUTOFF_ROWS), _settings(), "final"), "all", "all")

    assert (overall["tp"], overall["tn"], overall["fp"], overall["fn"]) == (1, 1, 0, 0)
    assert overall["accuracy"] == 1.0
    assert overall["positive_rate_predicted"] == 0.5


def test_the_cutoff_changes_predicted_labels() -> None:
    settings = _settings(score_cutoff=0.6)

    table = performance_metrics(_labeled(), settings, "final")
    overall = _row(table, "all", "all")

    # At 0.6, p3 (0.50) and p9 (0.55) become class 0.
    assert (overall["tp"], overall["fp"], overall["tn"], overall["fn"]) == (3, 1, 4, 2)
    assert overall["positive_rate_predicted"] == pytest.approx(5 / 12)
    assert overall["accuracy"] == pytest.approx(_sklearn(_labeled(), cutoff=0.6)["accuracy"])
    # Threshold-free metrics do not move.
    assert overall["roc_auc"] == pytest.approx(_sklearn(_labeled())["roc_auc"])


def test_maturity_cutoff_and_policy_are_recorded_on_every_row() -> None:
    settings = _settings(score_cutoff=0.6, missing_feedback_policy=MissingFeedbackPolicy.NEGATIVE)

    table = performance_metrics(_labeled(), settings, "provisional")

    assert table["maturity"].tolist() == ["provisional"] * len(table)
    assert table["score_cutoff"].tolist() == [0.6] * len(table)
    assert table["missing_feedback_policy"].tolist() == ["negative"] * len(table)


def test_imputed_negatives_count_as_known_labels() -> None:
    rows = [r if r[0] != "p11" else (*r[:5], 0.0, "imputed_negative", *r[7:]) for r in ROWS]

    overall = _row(performance_metrics(_labeled(rows), _settings(), "final"), "all", "all")

    assert overall["n_labeled"] == 11
    assert overall["tn"] == 4  # p11 (score 0.45) is a true negative


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("float_labels", [False, True], ids=["int_labels", "float_labels"])
def test_counted_confusion_matrix_and_rates_equal_scikit_learn(
    seed: int, float_labels: bool
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    y = (rng.random(n) < rng.random()).astype(float if float_labels else int)
    score = np.where(rng.random(n) < 0.2, 0.5, rng.random(n))  # many exactly at the cutoff
    pred = (score >= 0.5).astype(int)

    got = classification_metrics(y, score, 0.5)

    expected = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
    assert [got[k] for k in ("tn", "fp", "fn", "tp")] == expected
    assert all(type(got[k]) is int for k in ("tn", "fp", "fn", "tp"))
    assert got["accuracy"] == skm.accuracy_score(y, pred)
    for key, metric in [
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ]:
        want = metric(y, pred, zero_division=np.nan)
        assert got[key] == pytest.approx(want, abs=1e-15, nan_ok=True), key
    two_classes = len(np.unique(y)) == 2
    assert math.isnan(got["roc_auc"]) != two_classes
    if two_classes:
        assert got["roc_auc"] == skm.roc_auc_score(y, score)


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(2, 1000))
def test_roc_auc_of_scores_in_descending_order_equals_scikit_learn_s(
    seed: int, n: int, distinct: int
) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rng.random()).astype(np.int8)
    score = rng.integers(0, distinct, n) / distinct  # ties, many of them with few values
    order = np.argsort(-score, kind="stable")

    got = classification_metrics(y[order], score[order], 0.5, descending=True)["roc_auc"]

    if len(np.unique(y)) == 2:
        assert got == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    else:
        assert math.isnan(got)


def _rates_of_the_slice(columns: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """Reference: read every row of the slice, drop the missing values."""
    thumb, rating = columns["thumb"][rows], columns["rating"][rows]
    clicked, comments = columns["clicked"][rows], columns["comment_score"][rows]
    explicit = ~np.isnan(thumb) | ~np.isnan(rating)
    with np.errstate(invalid="ignore"):
        negative = (thumb < 0) | (rating <= 2)

    def share(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else np.nan

    thumbs, ratings = thumb[~np.isnan(thumb)], rating[~np.isnan(rating)]
    return {
        "thumbs_up_share": share(thumbs > 0),
        "mean_rating": share(ratings),
        "negative_feedback_share": share(negative[explicit]),
        "click_rate": share(clicked[~np.isnan(clicked)]),
        "conversion_rate": share(np.nan_to_num(columns["converted"][rows])),
        "comment_sentiment": share(comments[~np.isnan(comments)]),
        "n_comments": int((~np.isnan(comments)).sum()),
        "n_thumbs": len(thumbs),
        "n_ratings": len(ratings),
    }


@hypothesis_settings(max_examples=100, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.floats(0.0, 1.0))
def test_feedback_rates_equal_reading_every_row_of_the_slice_to_the_last_bit(
    seed: int, n: int, density: float
) -> None:
    rng = np.random.default_rng(seed)

    def sparse(values: np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < density, values, np.nan)

    columns = {
        "thumb": sparse(rng.choice([-1.0, 1.0, 0.0], n)),
        "rating": sparse(rng.integers(1, 6, n).astype(float)),
        "clicked": sparse(rng.integers(0, 2, n).astype(float)),
        "converted": sparse(rng.choice([0.0, 1.0, 1 / 3], n)),
        "comment_score": sparse(rng.uniform(-1, 1, n)),
    }
    rates = _FeedbackRates(columns)
    for rows in (np.arange(n), np.flatnonzero(rng.random(n) < 0.5), np.array([], dtype=int)):
        got, expected = rates(rows), _rates_of_the_slice(columns, rows)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == value or (np.isnan(got[key]) and np.isnan(value)), key


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, np.nan]), st.floats(0.0, 1.0)),
        max_size=60,
    )
)
def test_descending_score_order_is_numpy_s_stable_sort_ties_and_missing_included(
    scores: list[float],
) -> None:
    score = np.array(scores, dtype=float)
    expected = np.argsort(-score, kind="stable")  # ties in row order, NaN last
    np.testing.assert_array_equal(metrics.by_descending_score(score), expected)


def _random_day(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    status = rng.choice(["labeled", "pending", "unlabeled_final"], n, p=[0.6, 0.3, 0.1])
    label = np.where(status == "labeled", (rng.random(n) < score).astype(float), np.nan)
    return pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(n)],
            "model_version": rng.choice(["v1", "v2", "v3"], n, p=[0.6, 0.3, 0.1]),
            "country": rng.choice(["US", "DE", "FR", "BR"], n),
            "platform": rng.choice(["ios", "web", "android"], n),
            "score": score,
            "label": label,
            "label_status": status,
            "latency_ms": rng.gamma(2.0, 20.0, n),
            "thumb": np.where(rng.random(n) < 0.2, rng.choice([-1.0, 1.0], n), np.nan),
            "rating": np.where(rng.random(n) < 0.1, rng.integers(1, 6, n).astype(float), np.nan),
            "clicked": np.where(rng.random(n) < 0.3, rng.integers(0, 2, n).astype(float), np.nan),
            "converted": np.where(rng.random(n) < 0.3, rng.integers(0, 2, n).astype(float), np.nan),
        }
    )


@pytest.mark.skipif(not parallel.can_fork(), reason="this platform cannot fork")
@pytest.mark.parametrize(
    "policy",
    [MissingFeedbackPolicy.EXCLUDE, MissingFeedbackPolicy.NEGATIVE, MissingFeedbackPolicy.ESTIMATE],
)
def test_slices_measured_in_worker_processes_give_the_one_process_table(
    policy: MissingFeedbackPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = _random_day(6000, seed=11)
    if policy == MissingFeedbackPolicy.NEGATIVE:
        day["label_status"] = day["label_status"].replace("unlabeled_final", "imputed_negative")
        day.loc[day["label_status"] == "imputed_negative", "label"] = 0.0
    calibrator = fit_calibrator(_random_day(3000, seed=12))
    settings = _settings(missing_feedback_policy=policy)
    calls: list[tuple[int, int]] = []
    real = parallel.forked_map
    monkeypatch.setattr(
        metrics,
        "forked_map",
        lambda function, pieces, workers: (
            calls.append((len(pieces), workers)) or real(function, pieces, workers)
        ),
    )

    alone = performance_metrics(day, settings, "final", calibrator)
    side_by_side = performance_metrics(day, settings, "final", calibrator, workers=3)

    assert calls == [(1, 1), (3, 3)]
    pd.testing.assert_frame_equal(side_by_side, alone)
    assert alone["estimated_roc_auc"].notna().all()
    assert len(alone) == 4 * (1 + 4 + 3)  # all and three versions, each whole and by segment


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(0, 10_000), max_size=60), st.integers(1, 8))
def test_the_slices_are_dealt_once_each_and_no_worker_carries_much_more_than_its_share(
    sizes: list[int], workers: int
) -> None:
    shares = _shares(sizes, workers)

    dealt = [i for share in shares for i in share]
    assert sorted(dealt) == list(range(len(sizes)))
    assert all(share == sorted(share) and share for share in shares)
    assert len(shares) <= workers
    cost = [size + 1 for size in sizes]  # a slice costs its rows and a little more
    if cost:
        # Greedy dealing never exceeds the even share by more than the largest slice.
        most = max(sum(cost[i] for i in share) for share in shares)
        assert most <= sum(cost) / len(shares) + max(cost)


@hypothesis_settings(max_examples=300, deadline=None, database=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 400),
    st.sampled_from(["float64", "float32"]),
)
def test_log_loss_and_brier_equal_scikit_learn_s_to_the_last_bit(
    seed: int, n: int, dtype: str
) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rng.random()).astype(np.int8)  # one class only, at times
    score = rng.random(n)
    ends = rng.random(n)
    score[ends < 0.1] = 0.0  # certain and wrong or right: the clipping matters
    score[ends > 0.9] = 1.0
    score = score.astype(dtype)

    got = classification_metrics(y, score, 0.5)

    assert got["log_loss"] == skm.log_loss(y, score, labels=[0, 1])
    assert got["brier"] == skm.brier_score_loss(y, score, pos_label=1)


@pytest.mark.parametrize("bad", [-0.1, 1.1, np.nan])
def test_log_loss_refuses_scores_that_are_not_probabilities(bad: float) -> None:
    score = np.array([0.2, bad, 0.7])
    y = np.array([1, 1, 1])  # one class: no ROC AUC, whose own checks would come first

    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        classification_metrics(y, score, 0.5)
    with pytest.raises(ValueError):  # as scikit-learn does
        skm.log_loss(y, score, labels=[0, 1])
