"""The feedback contract's row checks: a target to attribute to, and values each kind allows."""

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pytest

from feedback_pipeline.lib.schemas import VALUE_RULES, FeedbackEvent, feedback_schema
from feedback_pipeline.lib.settings import default_settings_path, load_settings

# Per kind: values it allows and values it does not (NaN is missing).
CASES = {
    "label": ([0.0, 1.0], [0.5, -1.0, 2.0, np.nan]),
    "correction": ([0.0, 1.0], [0.5, np.nan]),
    "click": ([0.0, 1.0], [0.1, np.nan]),
    "conversion": ([1.0, 0.0], [3.0, np.nan]),
    "thumb": ([-1.0, 1.0], [0.0, 0.5, np.nan]),
    "rating": ([1.0, 5.0, 3.5], [0.99, 5.01, np.nan]),
    "dwell": ([0.0, 1e6, np.inf], [-0.001, np.nan]),
    "comment": ([-1.0, 1.0, 0.0, np.nan], [-1.01, 1.01]),
}


def _events(kind_dtype: str) -> tuple[pd.DataFrame, np.ndarray]:
    kinds, values, allowed = [], [], []
    for kind, (good, bad) in CASES.items():
        kinds += [kind] * (len(good) + len(bad))
        values += good + bad
        allowed += [True] * len(good) + [False] * len(bad)
    # Kinds outside the rules are not judged here (the column's own check refuses them).
    kinds.append("unknown")
    values.append(42.0)
    allowed.append(True)
    frame = pd.DataFrame({"kind": pd.Series(kinds, dtype=kind_dtype), "value": values})
    return frame.set_axis(np.arange(100, 100 + len(frame))), np.array(allowed)


def test_every_kind_has_its_cases() -> None:
    assert set(CASES) == set(VALUE_RULES)


@pytest.mark.parametrize("kind_dtype", ["string[pyarrow]", "category", "object"])
def test_each_kind_allows_only_its_own_values(kind_dtype: str) -> None:
    frame, allowed = _events(kind_dtype)

    ok = FeedbackEvent.value_fits_kind(frame)  # pyright: ignore[reportCallIssue]

    assert ok.index.equals(frame.index)
    np.testing.assert_array_equal(ok.to_numpy(), allowed)


def test_a_value_that_is_not_a_number_fits_no_kind_that_needs_one() -> None:
    frame = pd.DataFrame(
        {
            "kind": ["rating", "comment", "thumb"],
            "value": pd.Series(["five", None, "1"], dtype=object),
        }
    )

    ok = FeedbackEvent.value_fits_kind(frame)  # pyright: ignore[reportCallIssue]

    assert ok.tolist() == [False, True, True]


def test_an_event_needs_a_prediction_or_an_entity_that_is_not_blank() -> None:
    blanks = ["", " ", "\t\n", "\u00a0", "\u3000", None]
    ids = [*blanks, " p1 ", "p2"]
    frame = pd.DataFrame(
        {
            "prediction_id": pd.Series([*ids, None, ""], dtype="string[pyarrow]"),
            "entity_id": pd.Series([None] * len(ids) + ["c1", " "], dtype=object),
        }
    )

    ok = FeedbackEvent.has_a_target(frame)  # pyright: ignore[reportCallIssue]

    assert ok.tolist() == [False] * len(blanks) + [True, True, True, False]


def test_the_contract_names_the_rows_that_fail_each_check() -> None:
    settings = load_settings(default_settings_path())
    frame = pd.DataFrame(
        {
            "feedback_id": ["f0", "f1", "f2", "f3"],
            "prediction_id": ["p0", " ", "p2", None],
            "entity_id": [None, None, None, "c3"],
            "timestamp": pd.to_datetime(["2026-10-05T10:00:00Z"] * 4, utc=True),
            "kind": ["rating", "thumb", "thumb", "click"],
            "value": [6.0, 1.0, 0.0, 1.0],
            "text": [None] * 4,
            "source": ["explicit", "explicit", "explicit", "implicit"],
            "user_id": [None] * 4,
        }
    )

    with pytest.raises(pa_errors.SchemaErrors) as caught:
        feedback_schema(settings, pd.Timestamp("2026-10-06", tz="UTC")).validate(frame, lazy=True)

    cases = caught.value.failure_cases
    failing = cases.groupby("check")["index"].apply(lambda rows: sorted(set(rows)))
    assert failing["value_in_range_for_kind"] == [0, 2]
    assert failing["has_prediction_or_entity_id"] == [1]
