"""Dataset-level expectations on a day of validated data, run by Great Expectations.

pandera decides row by row what may enter; these expectations look at the day as a whole against
the days before it: is the volume normal, did the traffic split between model versions move, did
the score distribution shift, are optional columns suddenly empty. Great Expectations runs them in
an ephemeral context on a seeded sample (its cost grows with rows) or on per-day aggregates.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from feedback_pipeline.lib.ids import repeated
from feedback_pipeline.lib.settings import DataQuality

QUANTILES = [0.1, 0.5, 0.9]


@dataclass(frozen=True)
class Outcome:
    """The verdict of one named expectation group, with what Great Expectations observed."""

    name: str
    passed: bool
    summary: dict[str, Any] = field(default_factory=dict)


@cache
def _context() -> Any:
    import great_expectations as gx  # heavy: imported only where expectations run

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    return context


def run_expectations(frame: pd.DataFrame, expectations: Sequence[Any]) -> list[dict[str, Any]]:
    """Validates one frame against expectations; returns one plain result per expectation."""
    import great_expectations as gx

    context = _context()
    source = context.data_sources.add_or_update_pandas("frames")
    asset = source.add_dataframe_asset(f"frame_{id(frame)}")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = gx.ExpectationSuite(name="day", expectations=list(expectations))
    result = batch.validate(suite)
    source.delete_asset(asset.name)
    # The execution engine keeps the batch's frame until the next validation replaces it: a
    # 10M-row day held through the steps in between.
    batches = source.get_execution_engine().batch_manager
    batches.reset_batch_cache()
    batches.batch_data_cache.clear()
    return [
        {
            "expectation": r.expectation_config.type if r.expectation_config else "unknown",
            "column": (r.expectation_config.kwargs.get("column") if r.expectation_config else None),
            "success": bool(r.success),
            "observed": _plain(r.result.get("observed_value", r.result.get("unexpected_percent"))),
        }
        for r in result.results
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _outcome(name: str, results: list[dict[str, Any]], **extra: Any) -> Outcome:
    return Outcome(name, all(r["success"] for r in results), {"results": results, **extra})


def volume(rows_today: int, rows_before: list[int], rules: DataQuality) -> Outcome:
    """Today's row count within the tolerance around the median of the trailing days."""
    import great_expectations as gx

    if not rows_before:
        return Outcome("volume_within_trailing_range", True, {"note": "no earlier days yet"})
    median = float(np.median(rows_before))
    low, high = (1 - rules.volume_tolerance) * median, (1 + rules.volume_tolerance) * median
    results = run_expectations(
        pd.DataFrame({"rows": [rows_today]}),
        [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="rows", min_value=low, max_value=high
            )
        ],
    )
    return _outcome(
        "volume_within_trailing_range",
        results,
        rows=rows_today,
        trailing_median=median,
        bounds=[low, high],
    )


def version_shares(today: pd.Series, before: pd.Series, rules: DataQuality) -> Outcome:
    """Each model version's share of traffic moved by at most the tolerance."""
    import great_expectations as gx

    if before.empty:
        return Outcome("model_version_shares_are_stable", True, {"note": "no earlier days yet"})
    shares = pd.concat(
        {
            "today": today.value_counts(normalize=True),
            "before": before.value_counts(normalize=True),
        },
        axis=1,
    ).fillna(0.0)
    changes = (shares["today"] - shares["before"]).rename("share_change").reset_index()
    tolerance = rules.version_share_tolerance
    results = run_expectations(
        changes,
        [
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="share_change", min_value=-tolerance, max_value=tolerance
            )
        ],
    )
    table = {
        str(k): {c: round(float(v), 4) for c, v in row.items()}
        for k, row in shares.to_dict("index").items()
    }
    return _outcome("model_version_shares_are_stable", results, shares=table)


def score_distribution(today: pd.Series, before: pd.Series, rules: DataQuality) -> Outcome:
    """Scores stay in [0, 1] and their mean and deciles stay near the trailing days'."""
    import great_expectations as gx

    frame = today.to_frame("score")
    expectations: list[Any] = [
        gx.expectations.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1)
    ]
    if not before.empty:
        tolerance = rules.score_tolerance
        mean = float(before.mean())
        quantiles = before.quantile(QUANTILES).to_numpy()
        expectations += [
            gx.expectations.ExpectColumnMeanToBeBetween(
                column="score", min_value=mean - tolerance, max_value=mean + tolerance
            ),
            gx.expectations.ExpectColumnQuantileValuesToBeBetween(
                column="score",
                quantile_ranges={
                    "quantiles": QUANTILES,
                    "value_ranges": [
                        [float(q) - tolerance, float(q) + tolerance] for q in quantiles
                    ],
                },
            ),
        ]
    results = run_expectations(frame, expectations)
    return _outcome("score_distribution_is_stable", results, sample_rows=len(frame))


def null_shares(frame: pd.DataFrame, columns: list[str], rules: DataQuality) -> Outcome:
    """Each optional column is filled in at least ``1 - max_null_share`` of the rows."""
    import great_expectations as gx

    present = [c for c in columns if c in frame.columns]
    results = run_expectations(
        frame[present],
        [
            gx.expectations.ExpectColumnValuesToNotBeNull(column=c, mostly=1 - rules.max_null_share)
            for c in present
        ],
    )
    return _outcome("optional_columns_are_mostly_present", results, columns=len(present))


def inference_day(
    rows_today: int,
    rows_before: list[int],
    today: pd.DataFrame,
    trailing: pd.DataFrame,
    optional: list[str],
    rules: DataQuality,
) -> list[Outcome]:
    """The inference log's day: volume, version shares, score distribution and null shares.

    Args:
        rows_today: the day's rows.
        rows_before: the rows of each trailing day.
        today: a sample of the day (``model_version``, ``score`` and the optional columns).
        trailing: a sample of the trailing days (``model_version``, ``score``).
        optional: the columns that may be empty now and then.
        rules: the bounds.
    """
    return [
        volume(rows_today, rows_before, rules),
        version_shares(today["model_version"], trailing["model_version"], rules),
        score_distribution(today["score"], trailing["score"], rules),
        null_shares(today, optional, rules),
    ]


def warm_up() -> None:
    """Builds the context and runs one expectation, as the first real one would."""
    volume(1, [1], DataQuality())


@dataclass(frozen=True)
class LabelCounts:
    """What the labeled expectations judge of a day: its rows, ids and labels, counted."""

    rows: int
    repeated_ids: int  # rows repeating an earlier row's id
    labeled: int  # rows with a label
    positive: float  # the sum of the labels (the rows of class 1, for 0/1 labels)

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "LabelCounts":
        """The counts of a day's labeled predictions (``prediction_id``, ``label``)."""
        return cls.of_labels(frame["label"], repeated_ids(frame["prediction_id"]))

    @classmethod
    def of_labels(cls, label: pd.Series, repeated_ids: int) -> "LabelCounts":
        """The counts of a day's labels, its repeated ids counted already (no polars here)."""
        return cls(
            rows=len(label),
            repeated_ids=repeated_ids,
            labeled=int(label.notna().sum()),
            positive=float(label.sum()),  # missing labels count nothing
        )


def labeled_dataset(frame: pd.DataFrame, final: bool, rules: DataQuality) -> list[Outcome]:
    """A day's labeled predictions: ids unique, the class balance and the coverage in bounds.

    Args:
        frame: the day's labeled predictions (``prediction_id``, ``label``).
        final: whether the day's labels have matured; a provisional day's coverage is still
            growing, so its coverage is reported but not judged.
        rules: the bounds.
    """
    return labeled_outcomes(LabelCounts.of(frame), final, rules)


def repeated_ids(ids: pd.Series) -> int:
    """How many ids are there more than once (each extra copy counted)."""
    # Counted here rather than by Great Expectations' uniqueness check, which builds a pandas
    # hash table of every id: 40 s for a day of 10M predictions.
    return int(repeated(ids).sum())


def labeled_outcomes(counts: LabelCounts, final: bool, rules: DataQuality) -> list[Outcome]:
    """``labeled_dataset`` from the day's counts.

    Great Expectations judges the day's aggregates, one row of them, like the volume: its
    pandas engine took 3.3 s to take the mean and count the missing values of a day of 10M
    labels, which the counts have at the cost of one pass.
    """
    import great_expectations as gx

    share = counts.positive / counts.labeled if counts.labeled else None
    coverage = counts.labeled / counts.rows if counts.rows else 0.0
    # One row: its maximum is the day's value, which Great Expectations reports as observed.
    between = gx.expectations.ExpectColumnMaxToBeBetween
    judged = [between(column="repeated_prediction_ids", min_value=0, max_value=0)]
    if share is not None:
        low, high = rules.min_label_share, rules.max_label_share
        judged.append(between(column="label_share", min_value=low, max_value=high))
    if final:
        judged.append(between(column="label_coverage", min_value=rules.min_label_coverage))
    day = pd.DataFrame(
        {
            "repeated_prediction_ids": [counts.repeated_ids],
            "label_share": [share],
            "label_coverage": [coverage],
        }
    )
    results = {r["column"]: [r] for r in run_expectations(day, judged)}
    coverage_outcome = (
        _outcome(
            "label_coverage_above_floor",
            results["label_coverage"],
            coverage=coverage,
            floor=rules.min_label_coverage,
        )
        if final
        else Outcome(
            "label_coverage_above_floor",
            True,
            {"note": "provisional day: labels are still arriving", "coverage": coverage},
        )
    )
    return [
        _outcome(
            "prediction_ids_are_unique",
            results["repeated_prediction_ids"],
            rows=counts.rows,
            repeated_ids=counts.repeated_ids,
        ),
        _outcome(
            "label_share_within_bounds",
            results["label_share"],
            labeled_rows=counts.labeled,
            share=share,
            bounds=[rules.min_label_share, rules.max_label_share],
        )
        if share is not None
        else Outcome("label_share_within_bounds", True, {"note": "no labels yet"}),
        coverage_outcome,
    ]
