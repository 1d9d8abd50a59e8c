"""CBPE against scikit-learn on the expected sample, calibration, and estimates in the metrics.

``estimate`` claims to equal scikit-learn's metrics on the weighted, doubled sample of
``expected_sample``; hypothesis holds it to that on random data with tied scores. Simulations
with a known truth check what the estimate is for: right when the calibration is right, and
blind to concept drift, which is why its error is tracked once labels mature.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from feedback_pipeline.lib.estimation import (
    ALL,
    ESTIMATED,
    Calibrator,
    estimate,
    expected_roc_auc,
    expected_sample,
    fit_calibrator,
    rates,
)
from feedback_pipeline.lib.metrics import performance_metrics
from feedback_pipeline.lib.settings import (
    MissingFeedbackPolicy,
    Settings,
    default_settings_path,
    load_settings,
)

# Read once (YAML parsing is slow); each test works on its own copy.
_SHIPPED = load_settings(default_settings_path())
NAN = float("nan")


def _settings(**update: object) -> Settings:
    return _SHIPPED.model_copy(update=update)


def _same(got: float, expected: float, tol: float = 1e-12) -> bool:
    """Equal within ``tol``, or both undefined."""
    if math.isnan(expected) or math.isnan(got):
        return math.isnan(expected) and math.isnan(got)
    return abs(got - expected) <= tol


def _sklearn_expected(
    score: np.ndarray, probability: np.ndarray, cutoff: float, truth: np.ndarray | None = None
) -> dict[str, float]:
    """scikit-learn's metrics on the weighted, doubled sample."""
    y, s, w = expected_sample(score, probability, truth)
    predicted = (s >= cutoff).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            y, predicted, average="binary", sample_weight=w, zero_division=np.nan
        )
        positives, negatives = w[y == 1].sum(), w[y == 0].sum()
        auc = skm.roc_auc_score(y, s, sample_weight=w) if positives > 0 and negatives > 0 else NAN
    return {
        "estimated_accuracy": skm.accuracy_score(y, predicted, sample_weight=w),
        "estimated_precision": float(precision),
        "estimated_recall": float(recall),
        "estimated_f1": float(f1),
        "estimated_roc_auc": float(auc),
    }


def _pairwise_auc(score: np.ndarray, probability: np.ndarray) -> float:
    """Expected AUC as Mann-Whitney over every (positive copy, negative copy) pair, ties half."""
    positive, negative = probability[:, None], (1 - probability)[None, :]
    above = (score[:, None] > score[None, :]) + 0.5 * (score[:, None] == score[None, :])
    return float(
        (positive * negative * above).sum() / (probability.sum() * (1 - probability).sum())
    )


# --- expected_sample -------------------------------------------------------------------------


def test_expected_sample_doubles_unlabeled_rows_and_keeps_known_labels() -> None:
    score = np.array([0.9, 0.6, 0.3])
    probability = np.array([0.8, 0.5, 0.1])
    truth = np.array([NAN, 0.0, NAN])

    y, s, w = expected_sample(score, probability, truth)

    # The labeled row once with weight 1; each unlabeled row as class 1 (p) and class 0 (1 - p).
    assert y.tolist() == [0, 1, 1, 0, 0]
    assert s.tolist() == [0.6, 0.9, 0.3, 0.9, 0.3]
    assert w == pytest.approx([1.0, 0.8, 0.1, 0.2, 0.9])
    assert y.dtype.kind == "i"


def test_expected_sample_without_truth_doubles_every_row() -> None:
    y, s, w = expected_sample(np.array([0.2, 0.7]), np.array([0.25, 0.75]))

    assert y.tolist() == [1, 1, 0, 0]
    assert s.tolist() == [0.2, 0.7, 0.2, 0.7]
    assert w.tolist() == [0.25, 0.75, 0.75, 0.25]


# --- estimate equals scikit-learn on the expected sample -------------------------------------


def test_estimate_by_hand() -> None:
    score = np.array([0.9, 0.6, 0.3])
    probability = np.array([0.8, 0.5, 0.1])

    got = estimate(score, probability, 0.5)

    # Predicted 1: the first two. tp = 0.8 + 0.5, fp = 0.2 + 0.5, fn = 0.1, tn = 0.9.
    assert got["estimated_accuracy"] == pytest.approx(2.2 / 3, abs=1e-12)
    assert got["estimated_precision"] == pytest.approx(1.3 / 2.0, abs=1e-12)
    assert got["estimated_recall"] == pytest.approx(1.3 / 1.4, abs=1e-12)
    assert got["estimated_f1"] == pytest.approx(2.6 / 3.4, abs=1e-12)
    # Pairs ranked right: 0.8*0.5 + 0.8*0.9 + 0.5*0.9 = 1.57; each row against its own
    # negative copy is a tie: 0.5 * (0.16 + 0.25 + 0.09) = 0.25; over 1.4 * 1.6.
    assert got["estimated_roc_auc"] == pytest.approx(1.82 / 2.24, abs=1e-12)
    for key, value in _sklearn_expected(score, probability, 0.5).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_estimate_by_hand_with_tied_scores() -> None:
    score = np.array([0.7, 0.7, 0.2, 0.2, 0.2])
    probability = np.array([0.9, 0.3, 0.6, 0.1, 0.5])

    got = estimate(score, probability, 0.5)
    expected = _sklearn_expected(score, probability, 0.5)

    assert got["estimated_roc_auc"] == pytest.approx(_pairwise_auc(score, probability), abs=1e-12)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


_GRID = st.integers(0, 100).map(lambda i: i / 100)  # scores to 2 decimals: many ties


@st.composite
def _rows(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    n = draw(st.integers(1, 40))
    score = np.array(draw(st.lists(_GRID, min_size=n, max_size=n)))
    probability = np.array(
        draw(
            st.lists(
                st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)),
                min_size=n,
                max_size=n,
            )
        )
    )
    cutoff = draw(st.sampled_from([0.01, 0.3, 0.5, 0.5001, 0.99]))
    return score, probability, cutoff


@hypothesis_settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(_rows())
def test_estimate_equals_scikit_learn_on_the_expected_sample(
    rows: tuple[np.ndarray, np.ndarray, float],
) -> None:
    score, probability, cutoff = rows

    got = estimate(score, probability, cutoff)
    expected = _sklearn_expected(score, probability, cutoff)

    assert set(got) == {f"estimated_{m}" for m in ESTIMATED}
    for key, value in expected.items():
        assert _same(got[key], value), (key, got[key], value)
    if not math.isnan(got["estimated_roc_auc"]):
        assert _same(got["estimated_roc_auc"], _pairwise_auc(score, probability))


@hypothesis_settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(_rows())
def test_a_given_descending_order_gives_the_same_estimate_even_with_ties_in_another_order(
    rows: tuple[np.ndarray, np.ndarray, float],
) -> None:
    score, probability, cutoff = rows
    # Descending by score, ties in reverse position: not the order estimate would choose.
    descending = np.lexsort((-np.arange(len(score)), -score))

    given_order = estimate(score, probability, cutoff, descending)
    own_order = estimate(score, probability, cutoff)

    for key, value in own_order.items():
        assert _same(given_order[key], value), key


def test_estimate_of_no_rows_is_undefined_everywhere() -> None:
    got = estimate(np.array([]), np.array([]), 0.5)

    assert all(math.isnan(v) for v in got.values())
    assert len(got) == len(ESTIMATED)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_roc_auc_is_undefined_when_only_one_class_is_expected(p: float) -> None:
    score = np.array([0.1, 0.4, 0.8])

    got = estimate(score, np.full(3, p), 0.5)

    assert math.isnan(got["estimated_roc_auc"])
    assert math.isnan(expected_roc_auc(score, np.full(3, p)))
    assert got["estimated_accuracy"] == pytest.approx(2 / 3 if p == 0 else 1 / 3)


def test_expected_roc_auc_is_one_half_when_every_score_ties() -> None:
    assert expected_roc_auc(np.full(4, 0.3), np.array([0.1, 0.9, 0.4, 0.6])) == pytest.approx(0.5)


def test_expected_roc_auc_is_one_when_certain_positives_outrank_certain_negatives() -> None:
    score = np.array([0.9, 0.8, 0.2, 0.1])

    assert expected_roc_auc(score, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert expected_roc_auc(score, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.0)


# --- rates -----------------------------------------------------------------------------------


def _from_matrix(tp: int, fp: int, fn: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
    y_pred = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
    return y_true, y_pred


@pytest.mark.parametrize(
    "matrix",
    [
        pytest.param((3, 1, 2, 4), id="ordinary"),
        pytest.param((0, 0, 3, 5), id="no predicted positives"),
        pytest.param((0, 4, 0, 5), id="no actual positives"),
        pytest.param((0, 0, 0, 5), id="only true negatives"),
        pytest.param((5, 0, 0, 0), id="only true positives"),
        pytest.param((0, 3, 3, 0), id="all wrong"),
        pytest.param((0, 1, 0, 0), id="one false positive"),
    ],
)
def test_rates_equal_scikit_learn_with_zero_division_nan(matrix: tuple[int, ...]) -> None:
    y_true, y_pred = _from_matrix(*matrix)

    got = rates(*(float(v) for v in matrix))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "accuracy": skm.accuracy_score(y_true, y_pred),
            "precision": skm.precision_score(y_true, y_pred, zero_division=np.nan),
            "recall": skm.recall_score(y_true, y_pred, zero_division=np.nan),
            "f1": skm.f1_score(y_true, y_pred, zero_division=np.nan),
        }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert _same(got[key], float(value)), (key, got[key], value)


def test_rates_of_an_empty_matrix_are_all_undefined() -> None:
    got = rates(0.0, 0.0, 0.0, 0.0)

    assert all(math.isnan(v) for v in got.values())


def test_rates_of_a_fractional_matrix() -> None:
    got = rates(1.5, 0.5, 0.25, 1.75)

    assert got["accuracy"] == pytest.approx(3.25 / 4)
    assert got["precision"] == pytest.approx(0.75)
    assert got["recall"] == pytest.approx(1.5 / 1.75)
    assert got["f1"] == pytest.approx(3.0 / 3.75)


# --- CBPE is right when the calibration is right, blind to concept drift ---------------------


def test_cbpe_equals_the_realized_metrics_when_scores_are_perfectly_calibrated() -> None:
    rng = np.random.default_rng(20261005)
    p = rng.uniform(0, 1, 200_000)
    truth = (rng.uniform(0, 1, p.size) < p).astype(int)

    got = estimate(p, p, 0.5)

    realized_accuracy = skm.accuracy_score(truth, (p >= 0.5).astype(int))
    realized_auc = skm.roc_auc_score(truth, p)
    assert got["estimated_accuracy"] == pytest.approx(realized_accuracy, abs=0.01)
    assert got["estimated_roc_auc"] == pytest.approx(realized_auc, abs=0.01)
    # And both near their theoretical values: E max(p, 1 - p) = 3/4, AUC = 5/6.
    assert got["estimated_accuracy"] == pytest.approx(0.75, abs=0.005)
    assert got["estimated_roc_auc"] == pytest.approx(5 / 6, abs=0.005)


def _reference(n: int, version: str, rng: np.random.Generator, power: float = 1.0) -> pd.DataFrame:
    """Scores uniform on [0, 1]; labels drawn with probability ``score ** power``."""
    score = rng.uniform(0, 1, n)
    label = (rng.uniform(0, 1, n) < score**power).astype(float)
    return pd.DataFrame({"model_version": version, "score": score, "label": label})


def _labeled_frame(score: np.ndarray, label: np.ndarray, version: str = "v1") -> pd.DataFrame:
    """A labeled day of one version and segment: rows with a label are labeled, others final."""
    n = len(score)
    return pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(n)],
            "model_version": version,
            "country": "US",
            "platform": "ios",
            "score": score,
            "label": label,
            "label_status": np.where(np.isnan(label), "unlabeled_final", "labeled"),
            "latency_ms": 10.0,
            "thumb": NAN,
            "rating": NAN,
            "clicked": NAN,
            "converted": NAN,
        }
    )


def _overall(table: pd.DataFrame) -> pd.Series:
    rows = table[(table["model_version"] == "all") & (table["segment"] == "all")]
    assert len(rows) == 1
    return rows.iloc[0]


def test_cbpe_cannot_see_concept_drift_known_limitation() -> None:
    rng = np.random.default_rng(7)
    calibrator = fit_calibrator(_reference(20_000, "v1", rng))
    assert calibrator is not None
    score = rng.uniform(0, 1, 20_000)
    before = (rng.uniform(0, 1, score.size) < score).astype(float)
    # Concept drift: the same scores, the opposite relation to the outcome.
    after = (rng.uniform(0, 1, score.size) < 1 - score).astype(float)

    steady = _overall(
        performance_metrics(_labeled_frame(score, before), _SHIPPED, "final", calibrator)
    )
    drifted = _overall(
        performance_metrics(_labeled_frame(score, after), _SHIPPED, "final", calibrator)
    )

    # The estimate depends on the scores only: it does not move at all ...
    for metric in ESTIMATED:
        assert drifted[f"estimated_{metric}"] == steady[f"estimated_{metric}"], metric
    assert steady["estimated_accuracy"] == pytest.approx(steady["accuracy"], abs=0.02)
    # ... while the realized accuracy collapses from about 0.75 to about 0.25 ...
    assert steady["accuracy"] - drifted["accuracy"] > 0.4
    assert steady["roc_auc"] - drifted["roc_auc"] > 0.5
    # ... and only the estimator's own error, once labels are in, shows it.
    assert abs(steady["estimation_error_accuracy"]) < 0.02
    assert drifted["estimation_error_accuracy"] > 0.4


# --- fit_calibrator --------------------------------------------------------------------------


def test_no_calibrator_with_fewer_labeled_rows_than_the_minimum() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(199, "v1", rng)
    unlabeled = _reference(1000, "v1", rng).assign(label=NAN)  # unlabeled rows do not count

    assert fit_calibrator(pd.concat([reference, unlabeled]), min_rows=200) is None
    enough = pd.concat([reference, _reference(1, "v1", rng).assign(label=1.0 - reference.label[0])])
    assert fit_calibrator(enough, min_rows=200) is not None


def test_no_calibrator_when_the_labels_have_one_class() -> None:
    reference = _reference(1000, "v1", np.random.default_rng(2)).assign(label=1.0)

    assert fit_calibrator(reference) is None


def test_a_version_with_enough_rows_has_its_own_map_and_others_use_all_versions() -> None:
    rng = np.random.default_rng(3)
    reference = pd.concat([_reference(1000, "v1", rng), _reference(50, "v2", rng)])

    calibrator = fit_calibrator(reference, min_rows=200)

    assert calibrator is not None
    assert set(calibrator.maps) == {ALL, "v1"}
    assert calibrator.rows == {ALL: 1050, "v1": 1000}
    assert calibrator.basis("v1") == "v1"
    assert calibrator.basis("v2") == ALL
    assert calibrator.basis("never_seen") == ALL


def test_a_version_with_enough_rows_but_one_class_uses_all_versions() -> None:
    rng = np.random.default_rng(4)
    one_class = _reference(500, "v2", rng).assign(label=0.0)
    reference = pd.concat([_reference(1000, "v1", rng), one_class])

    calibrator = fit_calibrator(reference, min_rows=200)

    assert calibrator is not None
    assert calibrator.basis("v2") == ALL
    assert calibrator.basis("v1") == "v1"


def test_each_version_is_calibrated_on_its_own_rows() -> None:
    rng = np.random.default_rng(5)
    reference = pd.concat([_reference(5000, "v1", rng), _reference(5000, "v2", rng, power=3)])

    calibrator = fit_calibrator(reference)

    assert calibrator is not None
    mid = np.array([0.4, 0.5, 0.6])
    assert calibrator.probability(mid, "v1").mean() == pytest.approx(0.5, abs=0.08)
    assert calibrator.probability(mid, "v2").mean() == pytest.approx(0.13, abs=0.08)


def test_calibration_corrects_a_miscalibrated_score() -> None:
    rng = np.random.default_rng(6)
    reference = _reference(50_000, "v1", rng, power=2)  # truth ~ Bernoulli(score ** 2)

    calibrator = fit_calibrator(reference)

    assert calibrator is not None
    score = rng.uniform(0, 1, 20_000)
    calibrated = calibrator.probability(score, "v1")
    bins = np.minimum((score * 10).astype(int), 9)
    errors = [abs(calibrated[bins == b].mean() - (score[bins == b] ** 2).mean()) for b in range(10)]
    assert max(errors) < 0.05
    assert np.mean(errors) < 0.02
    # The raw score is far off in the middle bins: calibration did something.
    assert abs(score[bins == 5].mean() - (score[bins == 5] ** 2).mean()) > 0.2
    assert ((calibrated >= 0) & (calibrated <= 1)).all()


def test_scores_outside_the_reference_range_get_the_edge_probabilities() -> None:
    rng = np.random.default_rng(8)
    reference = _reference(2000, "v1", rng).assign(score=lambda f: 0.2 + 0.6 * f["score"])
    calibrator = fit_calibrator(reference)
    assert calibrator is not None

    low, high = calibrator.probability(np.array([0.0, 1.0]), "v1")

    edges = calibrator.probability(
        np.array([reference["score"].min(), reference["score"].max()]), "v1"
    )
    assert (low, high) == (edges[0], edges[1])
    assert 0.0 <= low <= high <= 1.0


def test_probabilities_of_mixed_versions_equal_each_versions_probability() -> None:
    rng = np.random.default_rng(9)
    reference = pd.concat(
        [_reference(3000, "v1", rng), _reference(3000, "v2", rng, power=3)], ignore_index=True
    )
    calibrator = fit_calibrator(reference)
    assert calibrator is not None
    versions = pd.Series(
        rng.choice(["v1", "v2", "v3"], 500), index=np.arange(1000, 1500)
    )  # v3 has no map of its own
    scores = rng.uniform(0, 1, 500)

    got = calibrator.probabilities(scores, versions)

    assert not np.isnan(got).any()
    for version in ("v1", "v2", "v3"):
        rows = (versions == version).to_numpy()
        assert rows.any()
        np.testing.assert_array_equal(got[rows], calibrator.probability(scores[rows], version))
    # v1 and v2 really went through different maps.
    assert not np.allclose(
        calibrator.probability(scores, "v1"), calibrator.probability(scores, "v2")
    )


# --- estimates in performance_metrics --------------------------------------------------------

COUNTRIES, PLATFORMS = ["US", "DE", "FR"], ["ios", "web"]


@pytest.fixture(scope="module")
def calibrator() -> Calibrator:
    rng = np.random.default_rng(10)
    reference = pd.concat(
        [_reference(3000, "v1", rng), _reference(3000, "v2", rng, power=2)], ignore_index=True
    )
    fitted = fit_calibrator(reference)
    assert fitted is not None
    return fitted


def _day(n: int = 900, seed: int = 11) -> pd.DataFrame:
    """A labeled day: labels from the reference relations; some labeled, some not."""
    rng = np.random.default_rng(seed)
    version = rng.choice(["v1", "v2"], n)
    score = np.round(rng.uniform(0, 1, n), 2)  # ties, as scores often have
    truth = (rng.uniform(0, 1, n) < np.where(version == "v1", score, score**2)).astype(float)
    status = rng.choice(["labeled", "pending", "unlabeled_final"], n, p=[0.6, 0.2, 0.2])
    return pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(n)],
            "model_version": version,
            "country": rng.choice(COUNTRIES, n),
            "platform": rng.choice(PLATFORMS, n),
            "score": score,
            "label": np.where(status == "labeled", truth, NAN),
            "label_status": status,
            "latency_ms": rng.uniform(5, 50, n),
            "thumb": rng.choice([1.0, -1.0, NAN], n),
            "rating": rng.choice([1.0, 3.0, 5.0, NAN], n),
            "clicked": rng.choice([0.0, 1.0, NAN], n),
            "converted": rng.choice([0.0, 1.0, NAN], n),
        }
    )


def _slice_rows(frame: pd.DataFrame, version: str, segment: str) -> pd.DataFrame:
    """The slice's rows, found independently of ``metrics.slices``."""
    keep = np.ones(len(frame), dtype=bool)
    if version != "all":
        keep &= (frame["model_version"] == version).to_numpy()
    if segment != "all":
        column, value = segment.split("=")
        keep &= (frame[column] == value).to_numpy()
    return frame[keep]


@pytest.fixture(scope="module")
def day() -> pd.DataFrame:
    return _day()


@pytest.fixture(scope="module")
def final(day: pd.DataFrame, calibrator: Calibrator) -> pd.DataFrame:
    return performance_metrics(day, _settings(), "final", calibrator)


def test_estimated_columns_are_present_and_finite_with_a_calibrator(final: pd.DataFrame) -> None:
    assert len(final) == 3 * (1 + len(COUNTRIES) + len(PLATFORMS))
    for metric in ESTIMATED:
        values = final[f"estimated_{metric}"].to_numpy(dtype=float)
        assert np.isfinite(values).all(), metric
        assert ((values >= 0) & (values <= 1)).all(), metric


def test_estimated_metrics_are_cbpe_over_every_prediction_of_the_slice(
    final: pd.DataFrame, day: pd.DataFrame, calibrator: Calibrator
) -> None:
    for row in final.itertuples():
        rows = _slice_rows(day, row.model_version, row.segment)
        score = rows["score"].to_numpy()
        expected = _sklearn_expected(
            score, calibrator.probabilities(score, rows["model_version"]), 0.5
        )
        for key, value in expected.items():
            assert getattr(row, key) == pytest.approx(value, abs=1e-12), (row.segment, key)


def test_estimation_error_is_missing_on_a_provisional_day(
    day: pd.DataFrame, calibrator: Calibrator
) -> None:
    table = performance_metrics(day, _settings(), "provisional", calibrator)

    for metric in ESTIMATED:
        assert table[f"estimation_error_{metric}"].isna().all(), metric
        assert table[f"estimated_{metric}"].notna().all(), metric


def test_estimation_error_on_a_final_day_is_cbpe_on_the_labeled_rows_minus_realized(
    final: pd.DataFrame, day: pd.DataFrame, calibrator: Calibrator
) -> None:
    for row in final.itertuples():
        labeled = _slice_rows(day, row.model_version, row.segment)
        labeled = labeled[labeled["label_status"] == "labeled"]
        score, truth = labeled["score"].to_numpy(), labeled["label"].to_numpy(dtype=int)
        on_labeled = estimate(score, calibrator.probabilities(score, labeled["model_version"]), 0.5)
        predicted = (score >= 0.5).astype(int)
        realized = {
            "accuracy": skm.accuracy_score(truth, predicted),
            "precision": skm.precision_score(truth, predicted, zero_division=np.nan),
            "recall": skm.recall_score(truth, predicted, zero_division=np.nan),
            "f1": skm.f1_score(truth, predicted, zero_division=np.nan),
            "roc_auc": skm.roc_auc_score(truth, score),
        }
        for metric, value in realized.items():
            expected = on_labeled[f"estimated_{metric}"] - value
            got = getattr(row, f"estimation_error_{metric}")
            assert got == pytest.approx(expected, abs=1e-12), (row.segment, metric)


def test_estimation_error_is_small_when_the_calibration_holds(final: pd.DataFrame) -> None:
    overall = _overall(final)

    assert abs(overall["estimation_error_accuracy"]) < 0.06
    assert abs(overall["estimation_error_roc_auc"]) < 0.06


def test_without_a_calibrator_nothing_is_estimated(day: pd.DataFrame) -> None:
    table = performance_metrics(day, _settings(), "final")

    for metric in ESTIMATED:
        assert table[f"estimated_{metric}"].isna().all(), metric
        assert table[f"estimation_error_{metric}"].isna().all(), metric
    assert table["accuracy"].notna().all()  # realized metrics are unaffected


def test_estimates_do_not_change_the_realized_metrics_under_the_exclude_policy(
    final: pd.DataFrame, day: pd.DataFrame
) -> None:
    plain = performance_metrics(day, _settings(), "final")

    for column in ("accuracy", "precision", "roc_auc", "tp", "fp", "n_labeled"):
        pd.testing.assert_series_equal(final[column], plain[column])


@pytest.fixture(scope="module")
def estimated_policy(day: pd.DataFrame, calibrator: Calibrator) -> pd.DataFrame:
    settings = _settings(missing_feedback_policy=MissingFeedbackPolicy.ESTIMATE)
    return performance_metrics(day, settings, "final", calibrator)


def test_estimate_policy_realized_metrics_use_the_expected_sample_of_the_slice(
    estimated_policy: pd.DataFrame, day: pd.DataFrame, calibrator: Calibrator
) -> None:
    for row in estimated_policy.itertuples():
        rows = _slice_rows(day, row.model_version, row.segment)
        score = rows["score"].to_numpy()
        probability = calibrator.probabilities(score, rows["model_version"])
        truth = np.where(rows["label_status"] == "labeled", rows["label"], NAN)
        y, s, w = expected_sample(score, probability, truth)
        predicted = (s >= 0.5).astype(int)

        assert row.accuracy == pytest.approx(
            skm.accuracy_score(y, predicted, sample_weight=w), abs=1e-12
        )
        assert row.roc_auc == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert row.n_labeled == int((rows["label_status"] == "labeled").sum())


def test_estimate_policy_confusion_counts_are_expected_counts(
    estimated_policy: pd.DataFrame, day: pd.DataFrame, calibrator: Calibrator
) -> None:
    fractional = 0
    for row in estimated_policy.itertuples():
        rows = _slice_rows(day, row.model_version, row.segment)
        score = rows["score"].to_numpy()
        p = calibrator.probabilities(score, rows["model_version"])
        known = (rows["label_status"] == "labeled").to_numpy()
        label = rows["label"].to_numpy()
        pred = score >= 0.5
        expected = {
            "tp": ((label == 1) & pred & known).sum() + p[pred & ~known].sum(),
            "fp": ((label == 0) & pred & known).sum() + (1 - p[pred & ~known]).sum(),
            "fn": ((label == 1) & ~pred & known).sum() + p[~pred & ~known].sum(),
            "tn": ((label == 0) & ~pred & known).sum() + (1 - p[~pred & ~known]).sum(),
        }
        for key, value in expected.items():
            assert getattr(row, key) == pytest.approx(value, abs=1e-9), (row.segment, key)
        total = row.tp + row.fp + row.fn + row.tn
        assert total == pytest.approx(row.n_predictions, abs=1e-9)
        fractional += not float(row.tp).is_integer()
    assert fractional == len(estimated_policy)


def test_estimate_policy_without_a_calibrator_falls_back_to_the_labeled_rows(
    day: pd.DataFrame, final: pd.DataFrame
) -> None:
    settings = _settings(missing_feedback_policy=MissingFeedbackPolicy.ESTIMATE)

    table = performance_metrics(day, settings, "final")

    for column in ("accuracy", "roc_auc", "tp", "tn"):
        np.testing.assert_allclose(table[column], final[column], rtol=0, atol=1e-12)
    assert table["estimated_accuracy"].isna().all()


def test_estimate_policy_estimation_error_still_compares_with_the_labels_alone(
    estimated_policy: pd.DataFrame, final: pd.DataFrame
) -> None:
    # The estimator and the labeled rows are the same under either policy, so is its error.
    for metric in ("accuracy", "roc_auc"):
        column = f"estimation_error_{metric}"
        np.testing.assert_allclose(
            estimated_policy[column], final[column], rtol=0, atol=1e-12, err_msg=column
        )


def test_a_perfect_estimator_reports_no_error_under_the_estimate_policy() -> None:
    # Scores are their own calibrated probabilities, and every label equals its expected value
    # exactly (four rows at 0.75: three 1s; four at 0.25: one 1). The unlabeled rows score 0.5.
    rows = [(0.75, 1.0)] * 3 + [(0.75, 0.0), (0.25, 1.0)] + [(0.25, 0.0)] * 3
    rows += [(0.5, NAN)] * 8
    score = np.array([r[0] for r in rows])
    label = np.array([r[1] for r in rows])
    frame = _labeled_frame(score, label)
    reference = pd.DataFrame(
        {"model_version": "v1", "score": np.repeat([0.25, 0.5, 0.75], 400)}
    ).assign(label=np.tile([1.0, 0.0, 0.0, 0.0], 300))
    reference.loc[reference["score"] == 0.5, "label"] = np.tile([1.0, 0.0], 200)
    reference.loc[reference["score"] == 0.75, "label"] = np.tile([1.0, 1.0, 1.0, 0.0], 100)
    calibrator = fit_calibrator(reference)
    assert calibrator is not None
    np.testing.assert_allclose(calibrator.probability(score, "v1"), score, atol=1e-12)
    excluded = _overall(performance_metrics(frame, _settings(), "final", calibrator))
    assert excluded["estimation_error_accuracy"] == pytest.approx(0.0, abs=1e-12)
    settings = _settings(missing_feedback_policy=MissingFeedbackPolicy.ESTIMATE)

    table = performance_metrics(frame, settings, "final", calibrator)

    overall = _overall(table)
    # On the labeled rows CBPE accuracy is 0.75 and the realized accuracy is 6/8 = 0.75.
    assert overall["estimation_error_accuracy"] == pytest.approx(0.0, abs=1e-12)
