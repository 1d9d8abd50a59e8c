"""The retraining rules: when a day's realized numbers say the model has worsened enough.

Each rule has a minimum sample before it may fire and fires only on a worsening. A day's numbers
are the overall row of ``performance_metrics`` (or the same keys from its materialization
metadata); the baseline is the mean accuracy over the reference window.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from feedback_pipeline.lib.settings import ReferenceWindow, RetrainingThresholds


@dataclass(frozen=True)
class Breach:
    """One rule that fired on one day, with the numbers that made it fire."""

    day: str
    rule: str
    observed: float
    threshold: float
    sample: int
    message: str


def _number(values: Mapping, key: str) -> float | None:
    value = values.get(key)
    return None if value is None or pd.isna(value) else float(value)


def evaluate(
    day: str, values: Mapping, baseline_accuracy: float | None, rules: RetrainingThresholds
) -> tuple[list[Breach], list[str]]:
    """The rules that fire on one day, and why each of the others did not."""
    breaches, quiet = [], []
    accuracy, n_labeled = _number(values, "accuracy"), int(_number(values, "n_labeled") or 0)
    negative = _number(values, "negative_feedback_share")
    n_explicit = int((_number(values, "n_thumbs") or 0) + (_number(values, "n_ratings") or 0))

    def check(rule: str, observed: float | None, limit: float, sample: int, worse: bool, text: str):
        if observed is None:
            quiet.append(f"{rule}: no value on {day}")
        elif sample < rules.min_labels:
            quiet.append(f"{rule}: {sample} samples on {day}, fewer than {rules.min_labels}")
        elif worse:
            breaches.append(Breach(day, rule, observed, limit, sample, text))
        else:
            quiet.append(f"{rule}: {observed:.3f} within {limit:.3f} on {day}")

    floor = rules.accuracy_floor
    check(
        "accuracy_floor",
        accuracy,
        floor,
        n_labeled,
        accuracy is not None and accuracy < floor,
        f"accuracy {accuracy or 0:.3f} < floor {floor:.3f} on {n_labeled} labels",
    )
    if baseline_accuracy is not None and accuracy is not None:
        drop = baseline_accuracy - accuracy
        check(
            "accuracy_drop",
            drop,
            rules.max_accuracy_drop,
            n_labeled,
            drop > rules.max_accuracy_drop,
            f"accuracy {accuracy:.3f} is {drop:.3f} below the baseline {baseline_accuracy:.3f}"
            f" (limit {rules.max_accuracy_drop:.3f}, {n_labeled} labels)",
        )
    limit = rules.max_negative_feedback_share
    check(
        "negative_feedback",
        negative,
        limit,
        n_explicit,
        negative is not None and negative > limit,
        f"negative feedback share {negative or 0:.3f} > {limit:.3f} on {n_explicit} thumbs"
        " and ratings",
    )
    return breaches, quiet


def reference_accuracy(overall: pd.DataFrame, reference: ReferenceWindow) -> float | None:
    """Mean daily accuracy over the reference window: the baseline a drop is measured from."""
    days = pd.date_range(reference.start, periods=reference.days).strftime("%Y-%m-%d")
    values = overall["accuracy"][overall.index.astype(str).isin(days)].dropna()
    return float(values.mean()) if len(values) else None


def evaluate_history(
    overall: pd.DataFrame, rules: RetrainingThresholds, baseline_accuracy: float | None
) -> list[Breach]:
    """Every breach over a history of overall daily rows indexed by date."""
    breaches: list[Breach] = []
    for day, row in overall.iterrows():
        breaches += evaluate(str(day), row.to_dict(), baseline_accuracy, rules)[0]
    return breaches
