"""The retraining rules: what fires, with which numbers, and why the others stay quiet.

A rule is a floor (``below``), a ceiling (``above``) or a drop against the champion's baseline
(``max_drop``). Each scenario gives one day's numbers whose right answer is known by hand: a floor
or ceiling crossed, a worsening larger than the limit, an improvement far larger than the limit
(which must never fire), too few samples, a missing value or baseline. The settings section holds
the validation that keeps a rule from pointing the wrong way.
"""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from feedback_pipeline.lib.policy import (
    Breach,
    evaluate,
    evaluate_history,
    number,
    reference_baselines,
    sample_size,
)
from feedback_pipeline.lib.settings import (
    SETTINGS_ENV,
    ReferenceWindow,
    RetrainingPolicy,
    RetrainingRule,
    RuleMetric,
    SettingsError,
    default_settings_path,
    load_settings,
)

DAY = "2026-10-10"

ACCURACY_FLOOR = RetrainingRule(metric=RuleMetric.ACCURACY, below=0.70, min_samples=200)
ACCURACY_DROP = RetrainingRule(metric=RuleMetric.ACCURACY, max_drop=0.05, min_samples=200)
DRIFT_CEILING = RetrainingRule(metric=RuleMetric.DRIFT_SHARE, above=0.5, min_samples=1000)
DRIFT_DROP = RetrainingRule(metric=RuleMetric.DRIFT_SHARE, max_drop=0.2, min_samples=1000)
NEGATIVE_CEILING = RetrainingRule(
    metric=RuleMetric.NEGATIVE_FEEDBACK_SHARE, above=0.40, min_samples=200
)
NEW_LABELS_CEILING = RetrainingRule(metric=RuleMetric.NEW_LABELS, above=5000, min_samples=1000)


def _policy(*rules: RetrainingRule) -> RetrainingPolicy:
    return RetrainingPolicy(rules=list(rules))


# --- floors and ceilings ---------------------------------------------------------------------


def test_accuracy_below_the_floor_fires_with_its_numbers() -> None:
    breaches, quiet = evaluate(
        DAY, {"accuracy": 0.65, "n_labeled": 500}, {}, _policy(ACCURACY_FLOOR)
    )

    assert breaches == [
        Breach(DAY, "accuracy_floor", 0.65, 0.70, 500, "accuracy 0.650 < 0.700 on 500 samples")
    ]
    assert quiet == []


@pytest.mark.parametrize("accuracy", [0.70, 0.75, 0.99])
def test_accuracy_at_or_above_the_floor_is_quiet_and_says_so(accuracy: float) -> None:
    breaches, quiet = evaluate(
        DAY, {"accuracy": accuracy, "n_labeled": 500}, {}, _policy(ACCURACY_FLOOR)
    )

    assert breaches == []
    assert quiet == [f"accuracy_floor: accuracy {accuracy:.3f} within 0.700 on {DAY}"]


def test_drift_share_above_the_ceiling_fires_on_its_predictions() -> None:
    values = {"drift_share": 0.62, "n_predictions": 4000, "n_labeled": 3}

    breaches, _ = evaluate(DAY, values, {}, _policy(DRIFT_CEILING))

    # The sample of drift is the day's predictions, not its (few) labels.
    assert breaches == [
        Breach(
            DAY, "drift_share_ceiling", 0.62, 0.5, 4000, "drift_share 0.620 > 0.500 on 4000 samples"
        )
    ]


def test_drift_share_below_the_ceiling_is_quiet() -> None:
    breaches, quiet = evaluate(
        DAY, {"drift_share": 0.1, "n_predictions": 4000}, {}, _policy(DRIFT_CEILING)
    )

    assert breaches == []
    assert quiet == [f"drift_share_ceiling: drift_share 0.100 within 0.500 on {DAY}"]


def test_negative_feedback_share_counts_thumbs_and_ratings_together() -> None:
    # 150 thumbs alone or 100 ratings alone are under 200; together they are 250.
    values = {"negative_feedback_share": 0.55, "n_thumbs": 150, "n_ratings": 100}

    breaches, _ = evaluate(DAY, values, {}, _policy(NEGATIVE_CEILING))

    assert breaches == [
        Breach(
            DAY,
            "negative_feedback_share_ceiling",
            0.55,
            0.40,
            250,
            "negative_feedback_share 0.550 > 0.400 on 250 samples",
        )
    ]


def test_negative_feedback_share_without_ratings_counts_thumbs_only() -> None:
    values = {"negative_feedback_share": 0.55, "n_thumbs": 150, "n_ratings": np.nan}

    breaches, quiet = evaluate(DAY, values, {}, _policy(NEGATIVE_CEILING))

    assert breaches == []
    assert quiet == [f"negative_feedback_share_ceiling: 150 samples on {DAY}, fewer than 200"]


def test_new_labels_above_the_ceiling_fires_and_are_their_own_sample() -> None:
    breaches, _ = evaluate(DAY, {"new_labels": 6000}, {}, _policy(NEW_LABELS_CEILING))

    assert breaches == [
        Breach(
            DAY,
            "new_labels_ceiling",
            6000.0,
            5000.0,
            6000,
            "new_labels 6000.000 > 5000.000 on 6000 samples",
        )
    ]


def test_new_labels_below_the_ceiling_or_the_minimum_are_quiet() -> None:
    policy = _policy(NEW_LABELS_CEILING)

    assert evaluate(DAY, {"new_labels": 4000}, {}, policy) == (
        [],
        [f"new_labels_ceiling: new_labels 4000.000 within 5000.000 on {DAY}"],
    )
    assert evaluate(DAY, {"new_labels": 999}, {}, policy) == (
        [],
        [f"new_labels_ceiling: 999 samples on {DAY}, fewer than 1000"],
    )


# --- drops against the champion's baseline ---------------------------------------------------


def test_accuracy_drop_from_the_baseline_fires_with_its_numbers() -> None:
    breaches, _ = evaluate(
        DAY, {"accuracy": 0.80, "n_labeled": 500}, {"accuracy": 0.90}, _policy(ACCURACY_DROP)
    )

    (drop,) = breaches
    assert (drop.day, drop.rule, drop.threshold, drop.sample) == (DAY, "accuracy_drop", 0.05, 500)
    assert drop.observed == pytest.approx(0.10)
    assert drop.message == (
        "accuracy 0.800 is 0.100 below the champion's baseline 0.900 (limit 0.050, 500 samples)"
    )


def test_accuracy_drop_within_the_limit_is_quiet() -> None:
    breaches, quiet = evaluate(
        DAY, {"accuracy": 0.87, "n_labeled": 500}, {"accuracy": 0.90}, _policy(ACCURACY_DROP)
    )

    assert breaches == []
    assert quiet == [f"accuracy_drop: accuracy 0.870 vs baseline 0.900, within 0.050 on {DAY}"]


def test_a_drop_of_exactly_the_limit_does_not_fire() -> None:
    # A drop of exactly the limit does not fire, though 0.90 - 0.85 is 0.05000000000000004.
    breaches, _ = evaluate(
        DAY, {"accuracy": 0.85, "n_labeled": 500}, {"accuracy": 0.90}, _policy(ACCURACY_DROP)
    )

    assert breaches == []


@pytest.mark.parametrize("accuracy", [0.90, 0.95, 1.0])
def test_an_accuracy_improvement_never_fires_however_large(accuracy: float) -> None:
    # From 0.80 every one of these is a rise of at least twice the 0.05 limit.
    breaches, quiet = evaluate(
        DAY, {"accuracy": accuracy, "n_labeled": 500}, {"accuracy": 0.80}, _policy(ACCURACY_DROP)
    )

    assert breaches == []
    assert quiet == [
        f"accuracy_drop: accuracy {accuracy:.3f} vs baseline 0.800, within 0.050 on {DAY}"
    ]


def test_drift_share_rising_from_the_baseline_fires_as_a_worsening_above_it() -> None:
    values = {"drift_share": 0.45, "n_predictions": 3000}

    breaches, _ = evaluate(DAY, values, {"drift_share": 0.10}, _policy(DRIFT_DROP))

    (drop,) = breaches
    assert (drop.rule, drop.threshold, drop.sample) == ("drift_share_drop", 0.2, 3000)
    assert drop.observed == pytest.approx(0.35)
    assert drop.message == (
        "drift_share 0.450 is 0.350 above the champion's baseline 0.100 (limit 0.200, 3000 samples)"
    )


def test_drift_share_falling_from_the_baseline_never_fires() -> None:
    # A fall of 0.5 is well past the 0.2 limit, but less drift is better.
    values = {"drift_share": 0.0, "n_predictions": 3000}

    breaches, quiet = evaluate(DAY, values, {"drift_share": 0.5}, _policy(DRIFT_DROP))

    assert breaches == []
    assert quiet == [
        f"drift_share_drop: drift_share 0.000 vs baseline 0.500, within 0.200 on {DAY}"
    ]


def test_a_drop_rule_without_a_champion_baseline_is_quiet_and_says_so() -> None:
    # A baseline of another metric is no baseline of accuracy.
    breaches, quiet = evaluate(
        DAY, {"accuracy": 0.10, "n_labeled": 500}, {"roc_auc": 0.9}, _policy(ACCURACY_DROP)
    )

    assert breaches == []
    assert quiet == ["accuracy_drop: no champion baseline of accuracy"]


# --- minimum samples and missing values ------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "values", "baselines", "expected"),
    [
        (ACCURACY_FLOOR, {"accuracy": 0.1, "n_labeled": 199}, {}, "accuracy_floor: 199 samples"),
        (
            ACCURACY_DROP,
            {"accuracy": 0.1, "n_labeled": 199},
            {"accuracy": 0.9},
            "accuracy_drop: 199 samples",
        ),
        (
            DRIFT_CEILING,
            # Plenty of labels, but drift counts predictions.
            {"drift_share": 1.0, "n_predictions": 999, "n_labeled": 5000},
            {},
            "drift_share_ceiling: 999 samples",
        ),
        (
            DRIFT_DROP,
            {"drift_share": 1.0, "n_predictions": 999},
            {"drift_share": 0.0},
            "drift_share_drop: 999 samples",
        ),
        (
            NEGATIVE_CEILING,
            {"negative_feedback_share": 1.0, "n_thumbs": 120, "n_ratings": 79},
            {},
            "negative_feedback_share_ceiling: 199 samples",
        ),
        (
            RetrainingRule(metric=RuleMetric.ESTIMATED_ACCURACY, max_drop=0.05, min_samples=1000),
            {"estimated_accuracy": 0.2, "n_predictions": 500, "n_labeled": 5000},
            {"estimated_accuracy": 0.9},
            "estimated_accuracy_drop: 500 samples",
        ),
    ],
)
def test_each_rule_stays_quiet_under_its_minimum_sample_and_names_the_numbers(
    rule: RetrainingRule, values: dict, baselines: dict, expected: str
) -> None:
    breaches, quiet = evaluate(DAY, values, baselines, _policy(rule))

    assert breaches == []
    assert quiet == [f"{expected} on {DAY}, fewer than {rule.min_samples}"]


def test_exactly_the_minimum_sample_may_fire() -> None:
    breaches, _ = evaluate(DAY, {"accuracy": 0.5, "n_labeled": 200}, {}, _policy(ACCURACY_FLOOR))

    assert [(b.rule, b.sample) for b in breaches] == [("accuracy_floor", 200)]


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA, "n/a", True])
def test_a_missing_or_non_numeric_value_is_quiet_not_a_breach(missing: object) -> None:
    values = {"accuracy": missing, "drift_share": missing, "n_labeled": 500, "n_predictions": 5000}

    breaches, quiet = evaluate(
        DAY, values, {"accuracy": 0.9}, _policy(ACCURACY_FLOOR, ACCURACY_DROP, DRIFT_CEILING)
    )

    assert breaches == []
    assert quiet == [
        f"accuracy_floor: no accuracy on {DAY}",
        f"accuracy_drop: no accuracy on {DAY}",
        f"drift_share_ceiling: no drift_share on {DAY}",
    ]


def test_an_absent_metric_is_quiet_and_missing_counts_are_zero_samples() -> None:
    breaches, quiet = evaluate(
        DAY, {"accuracy": 0.1}, {}, _policy(ACCURACY_FLOOR, NEGATIVE_CEILING)
    )

    assert breaches == []
    assert quiet == [
        f"accuracy_floor: 0 samples on {DAY}, fewer than 200",
        f"negative_feedback_share_ceiling: no negative_feedback_share on {DAY}",
    ]


def test_number_and_sample_size_read_numbers_of_any_numeric_type() -> None:
    assert number({"x": np.int64(3)}, "x") == 3.0
    assert number({"x": np.float32(0.5)}, "x") == 0.5
    assert number({"x": "0.5"}, "x") is None
    assert number({}, "x") is None
    values = {"n_thumbs": np.int64(7), "n_ratings": 5.0, "n_labeled": None}
    assert sample_size(RuleMetric.NEGATIVE_FEEDBACK_SHARE, values) == 12
    assert sample_size(RuleMetric.ACCURACY, values) == 0


# --- several rules, several days -------------------------------------------------------------


def test_the_default_rules_fire_in_their_order_on_a_bad_final_day() -> None:
    values = {
        "maturity": "final",
        "accuracy": 0.60,
        "n_labeled": 400,
        "estimated_accuracy": 0.70,
        "n_predictions": 5000,
        "drift_share": 0.8,
        "n_thumbs": 100,
        "n_ratings": 150,
        "negative_feedback_share": 0.5,
    }
    baselines = {"accuracy": 0.85, "estimated_accuracy": 0.85, "negative_feedback_share": 0.3}

    breaches, quiet = evaluate(DAY, values, baselines, RetrainingPolicy())

    assert [b.rule for b in breaches] == [
        "accuracy_floor",
        "accuracy_drop",
        "estimated_accuracy_drop",
        "drift_share_ceiling",
        "negative_feedback_share_ceiling",
        "negative_feedback_share_drop",
    ]
    assert [b.sample for b in breaches] == [400, 400, 5000, 5000, 250, 250]
    assert quiet == []


@pytest.mark.parametrize("maturity", ["provisional", None])
def test_a_final_only_rule_waits_for_the_days_labels_to_be_final(maturity: str | None) -> None:
    final_only = RetrainingRule(
        metric=RuleMetric.ACCURACY, below=0.70, min_samples=200, final_only=True
    )
    values = {"accuracy": 0.1, "n_labeled": 5000, "maturity": maturity}

    breaches, quiet = evaluate(DAY, values, {}, _policy(final_only))
    anytime, _ = evaluate(DAY, values, {}, _policy(ACCURACY_FLOOR))

    assert breaches == []
    assert quiet == [f"accuracy_floor: {DAY} is provisional, its labels are still arriving"]
    # The same rule without final_only fires on the same numbers.
    assert [b.rule for b in anytime] == ["accuracy_floor"]


def test_a_final_only_rule_fires_on_a_final_day() -> None:
    final_only = RetrainingRule(
        metric=RuleMetric.ACCURACY, below=0.70, min_samples=200, final_only=True
    )
    values = {"accuracy": 0.6, "n_labeled": 300, "maturity": "final"}

    breaches, _ = evaluate(DAY, values, {}, _policy(final_only))

    assert breaches == [
        Breach(DAY, "accuracy_floor", 0.6, 0.70, 300, "accuracy 0.600 < 0.700 on 300 samples")
    ]


def _history(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index")


def test_evaluate_history_reports_every_breach_of_every_day_in_order() -> None:
    overall = _history(
        {
            "2026-10-08": {"accuracy": 0.90, "n_labeled": 300},
            "2026-10-09": {"accuracy": 0.60, "n_labeled": 300},
            "2026-10-10": {"accuracy": 0.80, "n_labeled": 300},
            "2026-10-11": {"accuracy": 0.10, "n_labeled": 20},  # too few labels
        }
    )

    breaches = evaluate_history(overall, _policy(ACCURACY_FLOOR, ACCURACY_DROP), {"accuracy": 0.9})

    assert [(b.day, b.rule, b.sample) for b in breaches] == [
        ("2026-10-09", "accuracy_floor", 300),
        ("2026-10-09", "accuracy_drop", 300),
        ("2026-10-10", "accuracy_drop", 300),
    ]
    assert [b.observed for b in breaches] == pytest.approx([0.60, 0.30, 0.10])


def test_evaluate_history_of_a_quiet_history_is_empty() -> None:
    overall = _history({"2026-10-08": {"accuracy": 0.9, "n_labeled": 300}})

    assert evaluate_history(overall, _policy(ACCURACY_FLOOR), {}) == []


def test_reference_baselines_average_only_the_reference_window_days() -> None:
    overall = _history(
        {
            "2026-09-30": {"accuracy": 0.10, "drift_share": 0.9},  # before the window
            "2026-10-01": {"accuracy": 0.80, "drift_share": 0.1},
            "2026-10-02": {"accuracy": 0.90, "drift_share": np.nan},
            "2026-10-03": {"accuracy": 0.70, "drift_share": 0.3},
            "2026-10-04": {"accuracy": 0.20, "drift_share": 0.9},  # after the window
        }
    )
    overall["n_labeled"] = 500  # a count, not a rule metric
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=3)

    baselines = reference_baselines(overall, window)

    assert baselines == pytest.approx({"accuracy": 0.80, "drift_share": 0.20})


def test_reference_baselines_read_a_datetime_index_and_skip_non_numbers() -> None:
    overall = pd.DataFrame(
        {"roc_auc": [0.7, "broken", 0.9]},
        index=pd.to_datetime(["2026-10-01", "2026-10-02", "2026-10-03"]),
    )
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=7)

    assert reference_baselines(overall, window) == pytest.approx({"roc_auc": 0.8})


def test_reference_baselines_are_empty_without_reference_days() -> None:
    overall = _history({"2026-11-01": {"accuracy": 0.8}})
    window = ReferenceWindow(start=dt.date(2026, 10, 1), days=7)

    assert reference_baselines(overall, window) == {}


# --- settings of the rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"metric": "drift_share", "below": 0.3}, "drift_share worsens upwards: use above"),
        (
            {"metric": "negative_feedback_share", "below": 0.3},
            "negative_feedback_share worsens upwards: use above",
        ),
        ({"metric": "accuracy", "above": 0.9}, "accuracy worsens downwards: use below"),
        ({"metric": "estimated_roc_auc", "above": 0.9}, "estimated_roc_auc worsens downwards"),
        (
            {"metric": "accuracy", "below": 0.7, "max_drop": 0.05},
            r"give exactly one of below, above or max_drop, got \['below', 'max_drop'\]",
        ),
        ({"metric": "accuracy"}, "give exactly one of below, above or max_drop, got none"),
        ({"metric": "new_labels", "max_drop": 100}, "new_labels has no baseline: use above"),
        ({"metric": "accuracy", "max_drop": 0}, "greater than 0"),
        ({"metric": "accuracy", "below": 0.7, "min_samples": 0}, "greater than or equal to 1"),
        ({"metric": "latency", "above": 100}, "Input should be"),
    ],
)
def test_a_rule_that_cannot_fire_on_a_worsening_is_rejected(rule: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetrainingRule.model_validate(rule)


def test_the_same_rule_twice_is_rejected_but_two_kinds_on_one_metric_are_not() -> None:
    with pytest.raises(ValidationError, match=r"rules given twice: \['accuracy_floor'\]"):
        RetrainingPolicy(
            rules=[
                ACCURACY_FLOOR,
                RetrainingRule(metric=RuleMetric.ACCURACY, below=0.5, min_samples=10),
            ]
        )

    policy = _policy(ACCURACY_FLOOR, ACCURACY_DROP)
    assert [r.name for r in policy.rules] == ["accuracy_floor", "accuracy_drop"]


def test_the_shipped_default_settings_parse_into_the_default_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)

    retraining = load_settings().retraining

    assert [(r.name, r.min_samples, r.final_only) for r in retraining.rules] == [
        ("accuracy_floor", 200, True),
        ("accuracy_drop", 200, True),
        ("estimated_accuracy_drop", 1000, False),
        ("drift_share_ceiling", 1000, False),
        ("negative_feedback_share_ceiling", 200, False),
        ("negative_feedback_share_drop", 200, False),
    ]
    assert retraining.cooldown == dt.timedelta(days=3)
    # The file and the code agree on the defaults.
    assert retraining == RetrainingPolicy()


def test_a_wrong_way_rule_in_the_settings_file_names_its_position(tmp_path: Path) -> None:
    raw = yaml.safe_load(default_settings_path().read_text(encoding="utf-8"))
    raw["retraining"]["rules"][3] = {"metric": "drift_share", "below": 0.2}
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    with pytest.raises(SettingsError, match=r"retraining\.rules\.3: drift_share worsens upwards"):
        load_settings(path)
