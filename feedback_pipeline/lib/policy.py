"""The retraining rules: when a day's numbers say the model has worsened enough to retrain.

A day's numbers are the overall row of ``performance_metrics`` and the drift share of
``monitoring_reports`` (the same keys the assets put in their materialization metadata), plus
``new_labels``: labels that arrived for days after the champion's training data ended. Each rule
fires only on a worsening, and only on enough samples; a drop is measured against the champion's
baseline (its numbers on the gate's holdout, or the reference window before any promotion).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from feedback_pipeline.lib.settings import (
    ReferenceWindow,
    RetrainingPolicy,
    RetrainingRule,
    RuleMetric,
)

# What counts as the sample of each metric: the rows its value was computed from.
SAMPLE_KEYS: dict[RuleMetric, tuple[str, ...]] = {
    RuleMetric.ACCURACY: ("n_labeled",),
    RuleMetric.ROC_AUC: ("n_labeled",),
    RuleMetric.F1: ("n_labeled",),
    RuleMetric.ESTIMATED_ACCURACY: ("n_predictions",),
    RuleMetric.ESTIMATED_ROC_AUC: ("n_predictions",),
    RuleMetric.DRIFT_SHARE: ("n_predictions",),
    RuleMetric.NEGATIVE_FEEDBACK_SHARE: ("n_thumbs", "n_ratings"),
    RuleMetric.NEW_LABELS: ("new_labels",),
}


# A worsening of exactly the limit does not fire, whatever the floating-point rounding.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Breach:
    """One rule that fired on one day, with the numbers that made it fire."""

    day: str
    rule: str
    observed: float
    threshold: float
    sample: int
    message: str


def number(values: Mapping, key: str) -> float | None:
    """A value as a float, or None when missing or not a number."""
    value = values.get(key)
    if value is None or isinstance(value, str | bool):
        return None
    try:
        return None if pd.isna(value) else float(value)
    except (TypeError, ValueError):
        return None


def sample_size(metric: RuleMetric, values: Mapping) -> int:
    """The samples behind a metric's value on a day."""
    return int(sum(number(values, key) or 0 for key in SAMPLE_KEYS[metric]))


def _check(
    rule: RetrainingRule, day: str, values: Mapping, baselines: Mapping[str, float]
) -> Breach | str:
    """The breach, or why the rule stays quiet, naming the numbers either way."""
    metric = rule.metric.value
    value, sample = number(values, metric), sample_size(rule.metric, values)
    if value is None:
        return f"{rule.name}: no {metric} on {day}"
    if rule.final_only and values.get("maturity") != "final":
        return f"{rule.name}: {day} is provisional, its labels are still arriving"
    if sample < rule.min_samples:
        return f"{rule.name}: {sample} samples on {day}, fewer than {rule.min_samples}"
    if rule.max_drop is not None:
        baseline = baselines.get(metric)
        if baseline is None:
            return f"{rule.name}: no champion baseline of {metric}"
        worse = baseline - value if rule.metric.higher_is_better else value - baseline
        direction = "below" if rule.metric.higher_is_better else "above"
        if worse > rule.max_drop + TOLERANCE:
            return Breach(
                day,
                rule.name,
                worse,
                rule.max_drop,
                sample,
                f"{metric} {value:.3f} is {worse:.3f} {direction} the champion's baseline"
                f" {baseline:.3f} (limit {rule.max_drop:.3f}, {sample} samples)",
            )
        return (
            f"{rule.name}: {metric} {value:.3f} vs baseline {baseline:.3f}, within"
            f" {rule.max_drop:.3f} on {day}"
        )
    bound = rule.below if rule.below is not None else rule.above
    assert bound is not None
    fired = value < bound if rule.below is not None else value > bound
    sign = "<" if rule.below is not None else ">"
    if fired:
        return Breach(
            day,
            rule.name,
            value,
            bound,
            sample,
            f"{metric} {value:.3f} {sign} {bound:.3f} on {sample} samples",
        )
    return f"{rule.name}: {metric} {value:.3f} within {bound:.3f} on {day}"


def evaluate(
    day: str, values: Mapping, baselines: Mapping[str, float], policy: RetrainingPolicy
) -> tuple[list[Breach], list[str]]:
    """The rules that fire on one day, and why each of the others did not."""
    breaches: list[Breach] = []
    quiet: list[str] = []
    for rule in policy.rules:
        outcome = _check(rule, day, values, baselines)
        if isinstance(outcome, Breach):
            breaches.append(outcome)
        else:
            quiet.append(outcome)
    return breaches, quiet


def reference_baselines(overall: pd.DataFrame, reference: ReferenceWindow) -> dict[str, float]:
    """Mean daily value of each rule metric over the reference window, indexed by date."""
    days = pd.date_range(reference.start, periods=reference.days).strftime("%Y-%m-%d")
    window = overall[overall.index.astype(str).isin(days)]
    out = {}
    for metric in RuleMetric:
        if metric.value in window:
            values = pd.to_numeric(window[metric.value], errors="coerce").dropna()
            if len(values):
                out[metric.value] = float(values.mean())
    return out


def evaluate_history(
    overall: pd.DataFrame, policy: RetrainingPolicy, baselines: Mapping[str, float]
) -> list[Breach]:
    """Every breach over a history of overall daily rows indexed by date."""
    breaches: list[Breach] = []
    for day, row in overall.iterrows():
        breaches += evaluate(str(day), row.to_dict(), baselines, policy)[0]
    return breaches
