"""Parquet days: categories read as dictionaries, repeats across parts, the frames handed out."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib.ids import repeated
from feedback_pipeline.lib.ingestion import ingest_feedback, ingest_inferences
from feedback_pipeline.lib.schemas import TEXT
from feedback_pipeline.lib.settings import DATA_DIR_ENV, Settings
from feedback_pipeline_tests.lib.test_ingestion import DAY, _event, _folder, _inference, _write

CATEGORY_COLUMNS = ["model_name", "model_version", "country", "platform", "plan", "device_class"]
ROWS = [
    _inference(0),
    _inference(1, country="XX", platform="smart-fridge"),
    _inference(2, model_version="v2", plan=None),
    _inference(3, device_class="tablet", score=1.7),
    _inference(4, country="DE", platform="web"),
]


def _ingested(
    settings: Settings, root: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared rows written as two files of one format, without their file names."""
    folder = _folder(root / suffix, "inferences")
    _write(folder, f"a.{suffix}", ROWS[:3])
    _write(folder, f"b.{suffix}", ROWS[3:])
    monkeypatch.setenv(DATA_DIR_ENV, str(root / suffix))
    result = ingest_inferences(settings, DAY)
    valid = result.valid.drop(columns="source_file")
    return valid, result.quarantine.drop(columns=["source_file", "message", "record"])


def _categories_of_strings(column: pd.Series) -> list[str]:
    assert isinstance(column.dtype, pd.CategoricalDtype)
    assert column.cat.categories.dtype == object  # plain strings, as Parquet reads them back
    return list(column.cat.categories)


def test_parquet_and_csv_days_give_the_same_categories_judged_alike(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parquet_valid, parquet_bad = _ingested(settings, tmp_path, "parquet", monkeypatch)
    csv_valid, csv_bad = _ingested(settings, tmp_path, "csv", monkeypatch)

    for frame in (parquet_valid, csv_valid):
        # Sorted, and only the values of valid rows (not XX, smart-fridge, tablet).
        assert _categories_of_strings(frame["model_version"]) == ["v1", "v2"]
        assert _categories_of_strings(frame["country"]) == ["DE", "US"]
        assert _categories_of_strings(frame["platform"]) == ["ios", "web"]
        assert all(_categories_of_strings(frame[c]) for c in CATEGORY_COLUMNS)
        assert frame["prediction_id"].dtype == TEXT
    assert parquet_valid["plan"].isna().tolist() == [False, True, False]
    pd.testing.assert_frame_equal(parquet_valid, csv_valid)
    pd.testing.assert_frame_equal(parquet_bad, csv_bad)
    assert sorted(parquet_bad["reason"]) == [
        "country failed isin(['US', 'DE', 'FR', 'GB', 'BR', 'IN', 'JP']) (value XX); "
        "platform failed isin(['ios', 'android', 'web']) (value smart-fridge)",
        "score failed less_than_or_equal_to(1.0) (value 1.7)",
    ]


def test_a_day_of_parquet_and_csv_parts_has_the_same_categories(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.parquet", [_inference(0), _inference(1, country="XX")])
    _write(folder, "b.csv", [_inference(2, country="FR")])
    _write(folder, "c.parquet", [_inference(3, country="JP", plan="pro")])

    result = ingest_inferences(settings, DAY)

    assert result.valid["country"].tolist() == ["US", "FR", "JP"]
    assert _categories_of_strings(result.valid["country"]) == ["FR", "JP", "US"]
    assert all(_categories_of_strings(result.valid[c]) for c in CATEGORY_COLUMNS)
    assert result.quarantine["value"].tolist() == ["XX"]


def test_repeats_across_parquet_parts_keep_the_first_valid_row(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    first = _write(folder, "a.parquet", [_inference(0, score=2.0), _inference(1)])
    rows = [_inference(0), _inference(1), _inference(2), _inference(2, score=0.9)]
    second = _write(folder, "b.parquet", rows)

    result = ingest_inferences(settings, DAY, seen_ids=pd.Index(pd.array(["p9"], dtype=TEXT)))

    valid = result.valid.set_index("prediction_id")
    assert valid["source_file"].to_dict() == {"p1": first, "p0": second, "p2": second}
    assert valid.loc["p2", "score"] == 0.3
    bad = result.quarantine.set_index(["source_file", "source_row"])["check"].to_dict()
    assert bad == {
        (first, 0): "less_than_or_equal_to(1.0)",
        (second, 1): "duplicate_id",
        (second, 3): "duplicate_id",
    }


def test_ids_seen_on_earlier_days_as_arrow_text_are_duplicates(
    settings: Settings, tmp_path: Path
) -> None:
    _write(_folder(tmp_path, "feedback"), "a.parquet", [_event(0), _event(1), _event(2)])
    seen = pd.Index(pd.array(["f2", "f0", "f-older"], dtype=TEXT))

    result = ingest_feedback(settings, DAY, seen_ids=seen)

    assert result.valid["feedback_id"].tolist() == ["f1"]
    assert _categories_of_strings(result.valid["kind"]) == ["thumb"]
    assert result.valid["feedback_id"].dtype == TEXT
    assert set(result.quarantine["reason"]) == {"repeats an id already ingested on an earlier day"}


def test_the_valid_rows_of_a_clean_parquet_day_can_be_changed_in_place(
    settings: Settings, tmp_path: Path
) -> None:
    _write(_folder(tmp_path, "inferences"), "a.parquet", [_inference(0), _inference(1)])

    valid = ingest_inferences(settings, DAY).valid
    valid.loc[0, "latency_ms"] = 1.0
    valid.loc[1, "timestamp"] = pd.Timestamp("2026-10-05", tz="UTC")

    assert valid["latency_ms"].tolist() == [1.0, 12.5]


@hypothesis_settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.booleans()), max_size=30))
def test_repeats_today_are_the_valid_rows_whose_id_an_earlier_valid_row_has(
    rows: list[tuple[str | None, bool]],
) -> None:
    ids = pa.chunked_array([pa.array([i for i, _ in rows], pa.large_string())])
    passed = np.array([p for _, p in rows], dtype=bool)

    got = repeated(ids, passed)

    seen, expected = set(), []
    for value, valid in rows:
        expected.append(valid and value in seen)
        seen |= {value} if valid else set()
    assert got.tolist() == expected


def test_an_unknown_kind_and_a_failed_row_check_are_quarantined_without_a_warning(
    settings: Settings, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    folder = _folder(tmp_path, "feedback")
    bad = [_event(1, kind="emoji"), _event(2, request_id=None, customer_id=None)]
    _write(folder, "a.parquet", [_event(0), *bad])

    result = ingest_feedback(settings, DAY)

    assert result.valid["feedback_id"].tolist() == ["f0"]
    reasons = dict(zip(result.quarantine["source_row"], result.quarantine["reason"], strict=True))
    assert reasons[1].startswith("kind failed isin(") and reasons[1].endswith("(value emoji)")
    assert "has_prediction_or_entity_id" in reasons[2]
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
