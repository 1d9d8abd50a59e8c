"""The champion/challenger gate: better by the margin, on enough rows, and not by luck.

Each holdout is synthetic and seeded, with exactly as many rows right for each model as the
scenario needs (a chosen number of rows, drawn at random), so the true gain is known: a much
better challenger, a worse one, an equal one, one better on too few rows, one significantly but
too little better, one better by the margin on a sample too small and noisy to tell. McNemar is
checked by hand on a tiny table; hypothesis checks the gate never promotes both ways round.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from feedback_pipeline.lib.promotion import compare, mcnemar
from feedback_pipeline.lib.settings import PromotionMetric, PromotionSettings

# Margin 0.01, 500 rows at least, alpha 0.05, 2000 resamples, seed 0.
GATE = PromotionSettings()


def _right_on(labels: np.ndarray, n_right: int, rng: np.random.Generator) -> np.ndarray:
    """Scores that classify exactly ``n_right`` randomly chosen rows right at the 0.5 cutoff."""
    n = len(labels)
    right = np.zeros(n, dtype=bool)
    right[rng.choice(n, n_right, replace=False)] = True
    predicted = np.where(right, labels, 1 - labels)
    return np.where(predicted == 1, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))


def _holdout(
    n: int, champion_right: int, challenger_right: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' scores, each right on its own random rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, _right_on(labels, champion_right, rng), _right_on(labels, challenger_right, rng)


# --- the verdicts ----------------------------------------------------------------------------


def test_a_truly_better_challenger_is_promoted() -> None:
    labels, champion, challenger = _holdout(2000, champion_right=1400, challenger_right=1700)

    decision = compare(labels, champion, challenger, GATE)

    assert decision.promote
    assert decision.reasons == []
    assert (decision.metric, decision.n) == ("accuracy", 2000)
    assert (decision.champion, decision.challenger) == pytest.approx((0.70, 0.85))
    assert decision.gain == pytest.approx(0.15)
    # The paired bootstrap's 95% lower bound sits a few standard errors (about 0.013) below 0.15.
    assert 0.10 < decision.lower_bound < 0.15
    assert decision.p_value == 0.0
    assert decision.mcnemar_p_value is not None and decision.mcnemar_p_value < 1e-10


def test_a_worse_challenger_is_rejected_for_its_negative_gain() -> None:
    labels, champion, challenger = _holdout(2000, champion_right=1700, challenger_right=1400)

    decision = compare(labels, champion, challenger, GATE)

    assert not decision.promote
    assert decision.gain == pytest.approx(-0.15)
    assert decision.lower_bound < -0.15
    assert decision.reasons == [
        "accuracy gain -0.1500 (0.8500 -> 0.7000) is below the margin 0.0100"
    ]


def test_a_challenger_with_the_same_scores_is_rejected() -> None:
    labels, champion, _ = _holdout(2000, champion_right=1700, challenger_right=1700)

    decision = compare(labels, champion, champion.copy(), GATE)

    assert not decision.promote
    assert (decision.gain, decision.lower_bound) == (0.0, 0.0)
    assert decision.p_value == 1.0
    assert decision.mcnemar_p_value == 1.0
    assert decision.reasons == [
        "accuracy gain +0.0000 (0.8500 -> 0.8500) is below the margin 0.0100"
    ]


def test_a_different_but_equally_good_challenger_is_rejected() -> None:
    # Both right on 1600 rows, not the same ones: they disagree on about 640 rows.
    labels, champion, challenger = _holdout(2000, champion_right=1600, challenger_right=1600)

    decision = compare(labels, champion, challenger, GATE)

    assert 500 < np.sum((champion >= 0.5) != (challenger >= 0.5)) < 800
    assert not decision.promote
    assert decision.gain == 0.0
    assert decision.lower_bound < 0
    assert decision.mcnemar_p_value == 1.0
    assert decision.reasons == [
        "accuracy gain +0.0000 (0.8000 -> 0.8000) is below the margin 0.0100"
    ]


def test_a_much_better_challenger_on_too_few_rows_is_rejected_with_the_numbers() -> None:
    labels, champion, challenger = _holdout(100, champion_right=50, challenger_right=95)

    decision = compare(labels, champion, challenger, GATE)

    assert not decision.promote
    # Better by 0.45 and significant: only the sample size stops it.
    assert decision.gain == pytest.approx(0.45)
    assert decision.lower_bound > 0.3
    assert decision.reasons == ["holdout has 100 rows, fewer than the 500 required"]


def test_a_significant_gain_below_the_margin_is_rejected() -> None:
    # The models agree except on 60 of 2000 rows, all of which only the challenger gets right:
    # a gain of 0.03, certain, but under a margin of 0.05.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    champion = _right_on(labels, 1600, rng)
    challenger = champion.copy()
    wrong = np.flatnonzero((champion >= 0.5) != labels)[:60]
    challenger[wrong] = np.where(labels[wrong] == 1, 0.9, 0.1)

    decision = compare(labels, champion, challenger, PromotionSettings(margin=0.05))

    assert not decision.promote
    assert decision.gain == pytest.approx(0.03)
    assert 0 < decision.lower_bound < 0.03
    assert decision.mcnemar_p_value == pytest.approx(2 * 0.5**60)
    assert decision.reasons == [
        "accuracy gain +0.0300 (0.8000 -> 0.8300) is below the margin 0.0500"
    ]


def test_a_gain_above_the_margin_that_could_be_luck_is_rejected() -> None:
    # 0.70 against 0.72 on 600 rows, right on independent rows: the standard error of the gain
    # is about 0.026, so a gain of 0.02 says little.
    labels, champion, challenger = _holdout(600, champion_right=420, challenger_right=432)

    decision = compare(labels, champion, challenger, GATE)

    assert not decision.promote
    assert decision.gain == pytest.approx(0.02)
    assert decision.lower_bound < 0
    assert 0.2 < decision.p_value < 0.8
    (reason,) = decision.reasons
    assert reason.startswith("not significant: the 95% lower bound of the gain is -0.0")
    assert reason.endswith(f"not above the margin 0.0100 (p={decision.p_value:.3f})")


def test_the_same_gain_on_ten_times_the_rows_is_promoted() -> None:
    # The counterpart of the last test: 0.70 against 0.75 is clear on 6000 rows.
    labels, champion, challenger = _holdout(6000, champion_right=4200, challenger_right=4500)

    decision = compare(labels, champion, challenger, GATE)

    assert decision.promote
    assert decision.gain == pytest.approx(0.05)
    assert 0.01 < decision.lower_bound < 0.05


def test_an_empty_holdout_is_rejected_for_both_reasons() -> None:
    empty = np.array([], dtype=float)

    decision = compare(empty, empty, empty, GATE)

    assert not decision.promote
    assert decision.n == 0
    assert math.isnan(decision.gain)
    assert decision.mcnemar_p_value is None
    assert decision.reasons == [
        "holdout has 0 rows, fewer than the 500 required",
        "accuracy cannot be computed on this holdout",
    ]


def test_mismatched_lengths_raise() -> None:
    labels, champion, challenger = _holdout(600, 400, 400)

    with pytest.raises(ValueError, match="same rows"):
        compare(labels, champion, challenger[:-1], GATE)
    with pytest.raises(ValueError, match="same rows"):
        compare(labels[:-1], champion, challenger, GATE)


def test_the_cutoff_decides_which_scores_are_right() -> None:
    # The champion scores every row 0.65; the challenger gives 0.6 to class 1 and 0.1 to class 0:
    # perfect at a cutoff of 0.5, no better than the champion at 0.8.
    labels = np.repeat([1, 0], 300)
    champion = np.full(600, 0.65)
    challenger = np.where(labels == 1, 0.6, 0.1)

    at_half = compare(labels, champion, challenger, GATE, cutoff=0.5)
    at_high = compare(labels, champion, challenger, GATE, cutoff=0.8)

    assert (at_half.champion, at_half.challenger) == (0.5, 1.0)
    assert (at_high.champion, at_high.challenger) == (0.5, 0.5)
    assert at_half.promote
    assert not at_high.promote


# --- roc_auc, determinism --------------------------------------------------------------------


def test_the_roc_auc_path_compares_sklearns_auc_and_reports_no_mcnemar() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 600)
    champion = rng.uniform(0, 1, 600)  # no skill
    challenger = 1 / (1 + np.exp(-(2.0 * (labels - 0.5) * 2 + rng.normal(0, 1, 600))))
    gate = PromotionSettings(metric=PromotionMetric.ROC_AUC, n_resamples=100)

    promoted = compare(labels, champion, challenger, gate)
    rejected = compare(labels, challenger, champion, gate)

    assert promoted.metric == "roc_auc"
    assert promoted.champion == pytest.approx(roc_auc_score(labels, champion))
    assert promoted.challenger == pytest.approx(roc_auc_score(labels, challenger))
    assert promoted.gain > 0.3
    assert promoted.promote and promoted.lower_bound > 0.3
    assert promoted.mcnemar_p_value is None
    assert not rejected.promote
    assert rejected.gain == pytest.approx(-promoted.gain)


def test_roc_auc_on_a_holdout_of_one_class_cannot_be_computed() -> None:
    gate = PromotionSettings(metric=PromotionMetric.ROC_AUC, n_resamples=100)
    scores = np.linspace(0, 1, 600)

    decision = compare(np.ones(600), scores, scores[::-1], gate)

    assert not decision.promote
    assert math.isnan(decision.champion) and math.isnan(decision.challenger)
    assert decision.reasons == ["roc_auc cannot be computed on this holdout"]


def test_the_decision_is_the_same_for_the_same_seed_and_the_bound_moves_with_it() -> None:
    labels, champion, challenger = _holdout(600, champion_right=420, challenger_right=450)

    first = compare(labels, champion, challenger, GATE)
    second = compare(labels, champion, challenger, GATE)
    reseeded = compare(labels, champion, challenger, PromotionSettings(seed=1))

    assert first.as_dict() == second.as_dict()
    # The seed drives the bootstrap only: the point estimates stay, the bound does not.
    assert reseeded.gain == first.gain
    assert reseeded.lower_bound != first.lower_bound


def test_as_dict_holds_every_number_of_the_decision() -> None:
    labels, champion, challenger = _holdout(100, champion_right=50, challenger_right=95)

    values = compare(labels, champion, challenger, GATE).as_dict()

    assert values["promote"] is False
    assert (values["n"], values["margin"], values["alpha"]) == (100, 0.01, 0.05)
    assert values["reasons"] == ["holdout has 100 rows, fewer than the 500 required"]
    assert set(values) == {
        "promote",
        "metric",
        "n",
        "champion",
        "challenger",
        "gain",
        "lower_bound",
        "p_value",
        "margin",
        "alpha",
        "mcnemar_p_value",
        "reasons",
    }


# --- McNemar ---------------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_the_rows_only_one_model_gets_right() -> None:
    # Eight rows: both right on two, only the challenger on five, only the champion on one.
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    champion = np.array([0.9, 0.1, 0.2, 0.3, 0.6, 0.7, 0.4, 0.2])
    challenger = np.array([0.8, 0.3, 0.7, 0.5, 0.4, 0.2, 0.9, 0.6])

    p_value = mcnemar(labels, champion, challenger, 0.5)

    # Two-sided: P(X <= 1) + P(X >= 5) for X ~ Binomial(6, 1/2) = (1 + 6 + 6 + 1) / 64.
    assert p_value == pytest.approx(14 / 64)
    assert p_value == pytest.approx(stats.binomtest(5, 6, 0.5).pvalue)
    assert mcnemar(labels, challenger, champion, 0.5) == pytest.approx(14 / 64)


def test_mcnemar_counts_a_score_at_the_cutoff_as_class_one() -> None:
    labels = np.array([1, 1, 1])
    champion = np.array([0.49, 0.49, 0.49])
    challenger = np.array([0.5, 0.5, 0.5])

    # The challenger alone is right on all three: 2 * (1/2)**3.
    assert mcnemar(labels, champion, challenger, 0.5) == pytest.approx(0.25)
    assert mcnemar(labels, champion, challenger, 0.51) == 1.0


def test_mcnemar_without_disagreement_is_one() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.1, 0.1])

    assert mcnemar(labels, scores, scores, 0.5) == 1.0


# --- a property ------------------------------------------------------------------------------


@st.composite
def _holdouts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(10, 60))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    scores = st.lists(
        st.sampled_from([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0]), min_size=n, max_size=n
    )
    return np.array(labels), np.array(draw(scores)), np.array(draw(scores))


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    holdout=_holdouts(),
    margin=st.sampled_from([0.0, 0.001, 0.01, 0.1]),
    seed=st.integers(0, 3),
)
def test_swapping_champion_and_challenger_never_promotes_both(
    holdout: tuple[np.ndarray, np.ndarray, np.ndarray], margin: float, seed: int
) -> None:
    labels, a, b = holdout
    gate = PromotionSettings(margin=margin, min_samples=10, n_resamples=100, seed=seed)

    forward = compare(labels, a, b, gate)
    backward = compare(labels, b, a, gate)

    assert not (forward.promote and backward.promote)
    assert forward.gain == pytest.approx(-backward.gain)
    assert forward.mcnemar_p_value == pytest.approx(backward.mcnemar_p_value)
