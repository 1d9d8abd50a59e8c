import numpy as np
import pandas as pd

from feedback_pipeline.lib.expectations import LabelCounts, labeled_dataset
from feedback_pipeline.lib.schemas import TEXT
from feedback_pipeline.lib.settings import DataQuality

RULES = DataQuality(min_label_share=0.1, max_label_share=0.9, min_label_coverage=0.5)


def _labeled(ids: list[str], labels: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"prediction_id": pd.Series(ids, dtype=TEXT), "label": labels})


def _verdicts(frame: pd.DataFrame, final: bool = True) -> dict[str, tuple[bool, dict]]:
    return {o.name: (o.passed, o.summary) for o in labeled_dataset(frame, final, RULES)}


def test_a_sound_day_passes_every_expectation() -> None:
    verdicts = _verdicts(_labeled(["p1", "p2", "p3", "p4"], [1.0, 0.0, 1.0, np.nan]))

    assert {name: passed for name, (passed, _) in verdicts.items()} == {
        "prediction_ids_are_unique": True,
        "label_share_within_bounds": True,
        "label_coverage_above_floor": True,
    }
    assert verdicts["label_coverage_above_floor"][1]["coverage"] == 0.75


def test_a_repeated_prediction_id_fails_and_is_counted() -> None:
    passed, summary = _verdicts(_labeled(["p1", "p2", "p1", "p1"], [1.0, 0.0, 1.0, 0.0]))[
        "prediction_ids_are_unique"
    ]

    assert not passed
    assert summary["repeated_ids"] == 2  # two rows repeat an earlier id


def test_labels_of_one_class_fail_the_share_bounds() -> None:
    passed, summary = _verdicts(_labeled(["p1", "p2", "p3"], [1.0, 1.0, 1.0]))[
        "label_share_within_bounds"
    ]

    assert not passed
    assert summary["labeled_rows"] == 3


def test_thin_coverage_fails_only_once_the_day_is_final() -> None:
    thin = _labeled(["p1", "p2", "p3", "p4"], [1.0, np.nan, np.nan, np.nan])

    assert not _verdicts(thin, final=True)["label_coverage_above_floor"][0]
    provisional = _verdicts(thin, final=False)["label_coverage_above_floor"]
    assert provisional[0] and provisional[1]["coverage"] == 0.25


def test_a_validated_frame_is_not_kept_after_its_validation() -> None:
    import gc
    import weakref

    import great_expectations as gx

    from feedback_pipeline.lib.expectations import run_expectations

    frame = pd.DataFrame({"label": np.linspace(0.0, 1.0, 50)})
    kept = weakref.ref(frame)
    between = gx.expectations.ExpectColumnValuesToBeBetween(
        column="label", min_value=0.0, max_value=1.0
    )
    [result] = run_expectations(frame, [between])
    del frame
    gc.collect()

    assert result["success"]
    assert kept() is None


def test_the_day_is_judged_by_its_counts_as_great_expectations_observed_them() -> None:
    frame = _labeled(["p1", "p2", "p2", "p3", "p4"], [1.0, 0.0, np.nan, 1.0, 1.0])

    counts = LabelCounts.of(frame)
    verdicts = _verdicts(frame)

    assert counts == LabelCounts(rows=5, repeated_ids=1, labeled=4, positive=3.0)
    share = verdicts["label_share_within_bounds"][1]
    assert share["share"] == 0.75
    assert [r["observed"] for r in share["results"]] == [0.75]
    coverage = verdicts["label_coverage_above_floor"][1]
    assert [r["observed"] for r in coverage["results"]] == [0.8]
    assert verdicts["prediction_ids_are_unique"][1]["results"][0]["observed"] == 1


def test_a_day_without_labels_has_no_share_to_judge() -> None:
    verdicts = _verdicts(_labeled(["p1", "p2"], [np.nan, np.nan]), final=True)

    assert verdicts["label_share_within_bounds"] == (True, {"note": "no labels yet"})
    assert not verdicts["label_coverage_above_floor"][0]
