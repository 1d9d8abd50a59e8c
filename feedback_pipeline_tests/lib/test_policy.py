"""The retraining rules: what fires, with which numbers, and why the others stay quiet."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from feedback_pipeline.lib.policy import Breach, evaluate, evaluate_history, reference_accuracy
from feedback_pipeline.lib.settings import ReferenceWindow, RetrainingThresholds

DAY = "2026-10-10"
# floor 0.70, drop 0.05, negative share 0.40, at least 200 samples
RULES = RetrainingThresholds()


def _values(**values: float) -> dict:
    return {"n_labeled": 500, "n_thumbs": 150, "n_ratings": 100} | values


def test_accuracy_below_the_floor_fires_with_its_numbers() -> None:
    breaches, quiet = evaluate(DAY, _values(accuracy=0.65), None, RULES)

    assert breaches == [
        Breach(DAY, "accuracy_floor", 0.65, 0.70, 500, "accuracy 0.650 < floor 0.700 on 500 labels")
    ]
    assert "negative_feedback: no value on 2026-10-10" in quiet


def test_accuracy_drop_from_the_baseline_fires_with_its_numbers() -> None:
    breaches, quiet = evaluate(DAY, _values(accuracy=0.80), 0.90, RULES)

    assert [b.rule for b in breaches] == ["accuracy_drop"]
    (drop,) = breaches
    assert drop.observed == pytest.approx(0.10)
    assert (drop.threshold, drop.sample, drop.day) == (0.05, 500, DAY)
    assert drop.message == (
        "accuracy 0.800 is 0.100 below the baseline 0.900 (limit 0.050, 500 labels)"
    )
    assert "accuracy_floor: 0.800 within 0.700 on 2026-10-10" in quiet


def test_negative_feedback_share_fires_with_its_numbers() -> None:
    breaches, _ = evaluate(DAY, _values(accuracy=0.9, negative_feedback_share=0.55), 0.9, RULES)

    assert [b.rule for b in breaches] == ["negative_feedback"]
    (negative,) = breaches
    assert (negative.observed, negative.threshold, negative.sample) == (0.55, 0.40, 250)
    assert negative.message == "negative feedback share 0.550 > 0.400 on 250 thumbs and ratings"


def test_all_three_rules_can_fire_on_one_day() -> None:
    values = _values(accuracy=0.5, negative_feedback_share=0.9)

    breaches, quiet = evaluate(DAY, values, 0.8, RULES)

    assert [b.rule for b in breaches] == ["accuracy_floor", "accuracy_drop", "negative_feedback"]
    assert quiet == []


def test_nothing_fires_under_the_minimum_sample_and_the_reason_says_so() -> None:
    values = {
        "accuracy": 0.10,
        "n_labeled": 199,
        "negative_feedback_share": 0.95,
        "n_thumbs": 20,
        "n_ratings": 30,
    }

    breaches, quiet = evaluate(DAY, values, 0.90, RULES)

    assert breaches == []
    assert quiet == [
        "accuracy_floor: 199 samples on 2026-10-10, fewer than 200",
        "accuracy_drop: 199 samples on 2026-10-10, fewer than 200",
        "negative_feedback: 50 samples on 2026-10-10, fewer than 200",
    ]


def test_exactly_the_minimum_sample_may_fire() -> None:
    breaches, _ = evaluate(DAY, {"accuracy": 0.5, "n_labeled": 200}, None, RULES)

    assert [(b.rule, b.sample) for b in breaches] == [("accuracy_floor", 200)]


def test_an_improvement_does_not_fire() -> None:
    values = _values(accuracy=0.90, negative_feedback_share=0.1)

    breaches, quiet = evaluate(DAY, values, 0.80, RULES)

    assert breaches == []
    assert quiet == [
        "accuracy_floor: 0.900 within 0.700 on 2026-10-10",
        "accuracy_drop: -0.100 within 0.050 on 2026-10-10",
        "negative_feedback: 0.100 within 0.400 on 2026-10-10",
    ]


def test_a_drop_within_the_limit_does_not_fire() -> None:
    breaches, quiet = evaluate(DAY, _values(accuracy=0.86), 0.90, RULES)

    assert breaches == []
    assert "accuracy_drop: 0.040 within 0.050 on 2026-10-10" in quiet


def test_missing_values_are_quiet_not_breaches() -> None:
    breaches, quiet = evaluate(DAY, {"accuracy": np.nan, "n_labeled": np.nan}, 0.9, RULES)

    assert breaches == []
    assert quiet == [
        "accuracy_floor: no value on 2026-10-10",
        "negative_feedback: no value on 2026-10-10",
    ]


def test_thresholds_come_from_the_rules() -> None:
    strict = RetrainingThresholds(accuracy_floor=0.95, min_labels=10)

    breaches, _ = evaluate(DAY, {"accuracy": 0.9, "n_labeled": 10}, None, strict)

    assert [b.message for b in breaches] == ["accuracy 0.900 < floor 0.950 on 10 labels"]


def _history(accuracies: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"accuracy": list(accuracies.values())}, index=list(accuracies))


def test_reference_accuracy_averages_only_the_reference_window_days() -> None:
    overall = _history(
        {
            "2026-09-30": 0.10,  # before the window
            "2026-10-01": 0.80,
            "2026-10-02": 0.90,
            "2026-10-03": 0.70,
            "2026-10-04": 0.20,  # after the window
            "2026-10-05": 0.30,
        }
    )
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=3)

    assert reference_accuracy(overall, window) == pytest.approx(0.80)


def test_reference_accuracy_skips_missing_days_and_values() -> None:
    overall = _history({"2026-10-01": 0.80, "2026-10-03": np.nan, "2026-10-04": 0.60})
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=7)

    assert reference_accuracy(overall, window) == pytest.approx(0.70)


def test_reference_accuracy_is_none_without_reference_days() -> None:
    overall = _history({"2026-11-01": 0.80})
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=7)

    assert reference_accuracy(overall, window) is None


def test_evaluate_history_reports_every_breaching_day() -> None:
    overall = pd.DataFrame(
        {"accuracy": [0.9, 0.6, 0.8], "n_labeled": [300, 300, 300]},
        index=["2026-10-08", "2026-10-09", "2026-10-10"],
    )

    breaches = evaluate_history(overall, RULES, baseline_accuracy=0.9)

    assert [(b.day, b.rule) for b in breaches] == [
        ("2026-10-09", "accuracy_floor"),
        ("2026-10-09", "accuracy_drop"),
        ("2026-10-10", "accuracy_drop"),
    ]
