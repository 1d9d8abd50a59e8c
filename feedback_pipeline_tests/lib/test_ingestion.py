"""Reading landing files: valid rows through, every bad row or file quarantined and explained."""

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from feedback_pipeline.lib.ingestion import (
    QUARANTINE_COLUMNS,
    _take_rows,
    conservation,
    ingest_feedback,
    ingest_inferences,
    json_lines,
    rows_at,
    to_utc,
)
from feedback_pipeline.lib.landing import landing_files, read_landing_file
from feedback_pipeline.lib.settings import (
    DATA_DIR_ENV,
    Landing,
    Settings,
    default_settings_path,
    load_settings,
)

DAY = dt.date(2026, 10, 5)
# Read once; tests use copies (``model_copy`` would carry cached values over).
_SHIPPED = load_settings(default_settings_path())
FEATURES = _SHIPPED.inference_columns.features
FUTURE_CHECK = "not_in_the_future"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    return _SHIPPED.model_copy()


def _inference(i: int, **overrides: object) -> dict:
    """One prediction in the user's column names (the shipped default.yaml)."""
    row = {
        "request_id": f"p{i}",
        "customer_id": f"c{i}",
        "served_at": "2026-10-05T10:00:00",
        "model": "conversion_propensity",
        "model_version": "v1",
        "score": 0.3,
        "latency_ms": 12.5,
        "country": "US",
        "platform": "ios",
        "plan": "free",
        "acquisition_channel": "organic",
        "device_class": "phone",
        **{name: float(n) for n, name in enumerate(FEATURES)},
    }
    return row | overrides


def _event(i: int, **overrides: object) -> dict:
    """One feedback event in the user's column names."""
    row = {
        "event_id": f"f{i}",
        "request_id": f"p{i}",
        "customer_id": f"c{i}",
        "received_at": "2026-10-05T11:00:00",
        "kind": "thumb",
        "value": "1",
        "text": None,
        "source": "explicit",
        "user_id": "u1",
    }
    return row | overrides


def _folder(root: Path, dataset: str) -> Path:
    folder = root / "landing" / dataset / f"date={DAY:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(folder: Path, name: str, rows: list[dict]) -> str:
    path = folder / name
    frame = pd.DataFrame(rows)
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def _by_row(frame: pd.DataFrame, path: str, row: int) -> pd.Series:
    rows = frame[(frame["source_file"] == path) & (frame["source_row"] == row)]
    assert len(rows) == 1
    return rows.iloc[0]


BAD = _inference(99, score=2.0)


# --- good rows -------------------------------------------------------------------------------


def test_good_rows_of_each_format_are_valid_in_canonical_columns(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    csv = _write(folder, "a.csv", [_inference(0), _inference(1, score=0.5), BAD])
    jsonl = _write(folder, "b.jsonl", [_inference(2, score=0.9)])
    parquet = _write(folder, "c.parquet", [_inference(3, latency_ms=None)])

    result = ingest_inferences(settings, DAY)

    valid = result.valid.set_index("prediction_id")
    assert sorted(valid.index) == ["p0", "p1", "p2", "p3"]
    assert valid.loc["p0", "entity_id"] == "c0"
    assert valid.loc["p0", "model_name"] == "conversion_propensity"
    assert valid.loc["p2", "source_file"] == jsonl
    assert valid.loc["p3", "source_file"] == parquet
    assert pd.isna(valid.loc["p3", "latency_ms"])
    assert str(result.valid["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert result.valid["score"].dtype == float
    assert result.valid["tenure_days"].dtype == float
    assert valid.loc["p1", "page_load_ms"] == float(FEATURES.index("page_load_ms"))
    # The predicted label is derived from score >= cutoff (0.5 is class 1).
    assert valid["predicted_label"].to_dict() == {"p0": 0, "p1": 1, "p2": 1, "p3": 0}
    assert str(result.valid["predicted_label"].dtype) == "Int8"
    assert result.quarantine["source_file"].tolist() == [csv]
    assert list(result.quarantine.columns) == QUARANTINE_COLUMNS


def test_a_day_without_bad_rows_has_an_empty_quarantine(settings: Settings, tmp_path: Path) -> None:
    _write(_folder(tmp_path, "inferences"), "a.csv", [_inference(0), _inference(1)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p1"]
    assert len(result.quarantine) == 0
    assert list(result.quarantine.columns) == QUARANTINE_COLUMNS


def test_a_day_without_landing_files_is_empty(settings: Settings) -> None:
    result = ingest_feedback(settings, DAY)

    assert len(result.valid) == 0
    assert len(result.quarantine) == 0


# --- bad rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "column", "check", "value"),
    [
        ({"request_id": None}, "prediction_id", "not_nullable", "null"),
        ({"score": 1.7}, "score", "less_than_or_equal_to(1.0)", "1.7"),
        ({"latency_ms": -5}, "latency_ms", "greater_than_or_equal_to(0.0)", "-5.0"),
        (
            {"country": "XX"},
            "country",
            "isin(['US', 'DE', 'FR', 'GB', 'BR', 'IN', 'JP'])",
            "XX",
        ),
        ({"plan": "enterprise"}, "plan", "isin(['free', 'plus', 'pro'])", "enterprise"),
        (
            {"served_at": "yesterday afternoon"},
            "timestamp",
            "unparsable_timestamp",
            "yesterday afternoon",
        ),
        (
            {"served_at": "2099-01-01T00:00:00"},
            "timestamp",
            FUTURE_CHECK,
            "2099-01-01 00:00:00+00:00",
        ),
        ({"tenure_days": "n/a"}, "tenure_days", "coerce_dtype('float64')", "n/a"),
    ],
    ids=[
        "null_id",
        "score_above_one",
        "negative_latency",
        "unknown_country",
        "unknown_category",
        "unparsable_timestamp",
        "future_timestamp",
        "non_numeric_feature",
    ],
)
def test_bad_row_is_quarantined_with_check_column_and_value(
    settings: Settings,
    tmp_path: Path,
    overrides: dict,
    column: str,
    check: str,
    value: str,
) -> None:
    bad = _inference(1, **overrides)
    path = _write(_folder(tmp_path, "inferences"), "a.csv", [_inference(0), bad, _inference(2)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p2"]
    assert result.valid["source_row"].tolist() == [0, 2]
    assert len(result.quarantine) == 1
    row = _by_row(result.quarantine, path, 1)
    assert (row["column"], row["check"], row["value"]) == (column, check, value)
    assert row["reason"].startswith(f"{column} failed {check} (value {value})")
    record = json.loads(row["record"])
    assert record["customer_id"] == "c1"  # the record is the row as written, user names
    assert record["served_at"] == bad["served_at"]


def test_timestamp_just_inside_the_clock_skew_is_accepted(
    settings: Settings, tmp_path: Path
) -> None:
    rows = [
        _inference(0, served_at="2026-10-06T01:00:00"),  # day end + max_clock_skew (1h)
        _inference(1, served_at="2026-10-06T01:00:01"),
    ]
    path = _write(_folder(tmp_path, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0"]
    assert _by_row(result.quarantine, path, 1)["check"] == FUTURE_CHECK


def test_repeated_id_keeps_the_first_and_quarantines_the_rest(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    first = _write(folder, "a.csv", [_inference(0, score=0.1), _inference(1)])
    second = _write(folder, "b.csv", [_inference(0, score=0.9), _inference(2), _inference(2)])

    result = ingest_inferences(settings, DAY)

    valid = result.valid.set_index("prediction_id")
    assert sorted(valid.index) == ["p0", "p1", "p2"]
    assert (valid.loc["p0", "source_file"], valid.loc["p0", "score"]) == (first, 0.1)
    assert (valid.loc["p2", "source_file"], valid.loc["p2", "source_row"]) == (second, 1)
    repeats = result.quarantine.sort_values("source_row")
    assert repeats["source_file"].tolist() == [second, second]
    assert repeats["source_row"].tolist() == [0, 2]
    assert repeats["check"].tolist() == ["duplicate_id", "duplicate_id"]
    assert repeats["column"].tolist() == ["prediction_id", "prediction_id"]
    assert repeats["value"].tolist() == ["p0", "p2"]
    assert set(repeats["reason"]) == {
        "repeats an id already ingested today; the first occurrence is kept"
    }


def test_bad_rows_of_several_parquet_files_are_quarantined_with_their_own_records(
    settings: Settings, tmp_path: Path
) -> None:
    # Parquet parts are joined in Arrow: each column is in chunks when the rows are picked out.
    folder = _folder(tmp_path, "inferences")
    future = "2026-10-09T00:00:00"
    files = {
        "a.parquet": {1: {"served_at": future}, 3: {"score": 2.0}, 4: {"served_at": future}},
        "b.parquet": {0: {"score": 2.0}, 2: {"served_at": future}, 5: {"score": 2.0}},
    }
    paths = {}
    for n, (name, bad) in enumerate(files.items()):
        rows = [_inference(10 * n + i, **bad.get(i, {})) for i in range(6)]
        good = min(set(range(6)) - set(bad))
        rows.append(_inference(10 * n + good))  # a valid row's id again, the last row of the file
        paths[name] = _write(folder, name, rows)

    result = ingest_inferences(settings, DAY)

    for n, (name, bad) in enumerate(files.items()):
        mine = result.quarantine[result.quarantine["source_file"] == paths[name]]
        failing = mine[mine["check"] != "duplicate_id"].sort_values("source_row")
        assert failing["source_row"].tolist() == sorted(bad)
        for row, record in zip(failing["source_row"], failing["record"], strict=True):
            assert json.loads(record)["request_id"] == f"p{10 * n + row}"
        (repeat,) = mine[mine["check"] == "duplicate_id"].itertuples()
        good = min(set(range(6)) - set(bad))
        assert (repeat.source_row, repeat.value) == (6, f"p{10 * n + good}")
        assert json.loads(repeat.record)["request_id"] == f"p{10 * n + good}"
    assert len(result.valid) == 14 - 6 - 2


# --- bad files -------------------------------------------------------------------------------


def test_truncated_parquet_and_empty_file_are_quarantined_whole_and_the_day_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    good = _write(folder, "a.parquet", [_inference(0), _inference(1)])
    truncated = folder / "b.parquet"
    content = Path(good).read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    empty = folder / "c.csv"
    empty.write_bytes(b"")
    other = _write(folder, "d.csv", [_inference(2)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert set(result.valid["source_file"]) == {good, other}
    files = result.quarantine.set_index("source_file")
    assert sorted(files.index) == [str(truncated), str(empty)]
    assert files["check"].tolist() == ["unreadable_file", "unreadable_file"]
    assert files["source_row"].isna().all()
    assert files["column"].isna().all()
    assert files.loc[str(truncated), "reason"].startswith("ArrowInvalid: ")
    assert files.loc[str(empty), "reason"] == "ValueError: the file is empty"
    per_file = result.files.set_index("file")
    assert per_file.loc[str(truncated), "readable"] == False  # noqa: E712 (numpy bool)
    assert pd.isna(per_file.loc[str(truncated), "rows_in"])
    assert (per_file.loc[good, "rows_in"], per_file.loc[good, "valid"]) == (2, 2)


def test_unsupported_file_type_is_quarantined_whole(settings: Settings, tmp_path: Path) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0)])
    (folder / "notes.txt").write_text("hello", encoding="utf-8")

    result = ingest_inferences(settings, DAY)

    row = result.quarantine.iloc[0]
    assert len(result.quarantine) == 1
    assert (row["source_file"], row["check"]) == (str(folder / "notes.txt"), "unreadable_file")
    assert row["reason"] == "ValueError: unsupported file type '.txt'"


def test_csv_missing_a_required_column_is_quarantined_row_by_row(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    rows = [{k: v for k, v in _inference(i).items() if k != "platform"} for i in range(3)]
    broken = _write(folder, "a.csv", rows)
    fine = _write(folder, "b.csv", [_inference(5)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p5"]
    assert result.valid["source_file"].tolist() == [fine]
    assert result.quarantine["source_file"].tolist() == [broken] * 3
    assert result.quarantine["source_row"].tolist() == [0, 1, 2]
    assert set(result.quarantine["check"]) == {"column_in_dataframe"}
    assert set(result.quarantine["reason"]) == {"missing column(s) ['platform']"}
    assert json.loads(result.quarantine["record"].iloc[2])["request_id"] == "p2"


# --- timestamps ------------------------------------------------------------------------------


def test_naive_timestamps_are_utc_and_offsets_are_converted(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(
        folder,
        "a.csv",
        [
            _inference(0, served_at="2026-10-05T10:00:00"),
            _inference(1, served_at="2026-10-05 09:30"),
        ],
    )
    _write(
        folder,
        "b.csv",
        [
            _inference(2, served_at="2026-10-05T12:00:00+02:00"),
            _inference(3, served_at="2026-10-05T03:00:00-05:00"),
            _inference(4, served_at="2026-10-05T10:00:00Z"),
        ],
    )
    pq = [_inference(5), _inference(6)]
    pq[0]["served_at"], pq[1]["served_at"] = pd.Timestamp("2026-10-05 07:00"), pd.NaT
    _write(folder, "c.parquet", pq)
    berlin = _inference(7, served_at=pd.Timestamp("2026-10-05 12:00", tz="Europe/Berlin"))
    _write(folder, "d.parquet", [berlin])

    result = ingest_inferences(settings, DAY)

    stamps = result.valid.set_index("prediction_id")["timestamp"]
    utc = "2026-10-05 {}+00:00"
    assert stamps.astype(str).to_dict() == {
        "p0": utc.format("10:00:00"),
        "p1": utc.format("09:30:00"),
        "p2": utc.format("10:00:00"),
        "p3": utc.format("08:00:00"),
        "p4": utc.format("10:00:00"),
        "p5": utc.format("07:00:00"),
        "p7": utc.format("10:00:00"),
    }
    missing = result.quarantine.iloc[0]
    assert (missing["column"], missing["check"], missing["source_row"]) == (
        "timestamp",
        "not_nullable",
        1,
    )


def test_naive_timestamp_after_an_offset_timestamp_is_still_utc() -> None:
    parsed = to_utc(pd.Series(["2026-10-05T03:00:00-05:00", "2026-10-05T10:00:00"]))

    assert parsed.astype(str).tolist() == [
        "2026-10-05 08:00:00+00:00",
        "2026-10-05 10:00:00+00:00",
    ]


def test_naive_file_is_utc_even_after_a_file_with_offsets(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0, served_at="2026-10-05T12:00:00+02:00")])
    _write(folder, "b.csv", [_inference(1, served_at="2026-10-05T10:00:00"), BAD])

    result = ingest_inferences(settings, DAY)

    stamps = result.valid.set_index("prediction_id")["timestamp"].astype(str)
    assert stamps.to_dict() == {
        "p0": "2026-10-05 10:00:00+00:00",
        "p1": "2026-10-05 10:00:00+00:00",
    }


def test_to_utc_keeps_aware_values_and_localizes_naive_datetimes() -> None:
    aware = pd.Series(pd.to_datetime(["2026-10-05 12:00"]).tz_localize("Asia/Tokyo"))
    naive = pd.Series(pd.to_datetime(["2026-10-05 12:00"]))

    assert to_utc(aware).astype(str).tolist() == ["2026-10-05 03:00:00+00:00"]
    assert to_utc(naive).astype(str).tolist() == ["2026-10-05 12:00:00+00:00"]
    assert to_utc(pd.Series(["not a time"])).isna().tolist() == [True]


# --- conservation ----------------------------------------------------------------------------


def test_every_file_conserves_its_rows(settings: Settings, tmp_path: Path) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0), _inference(1, score=1.7), _inference(0)])
    _write(folder, "b.jsonl", [_inference(2), _inference(3, country="XX")])
    (folder / "c.parquet").write_bytes(b"PAR1 not really")
    _write(folder, "d.parquet", [_inference(4), _inference(5)])

    result = ingest_inferences(settings, DAY)
    paths = landing_files(settings.resolve(settings.landing.inferences), DAY)
    table = conservation(paths, result.valid, result.quarantine)

    assert [Path(p).name for p in paths] == ["a.csv", "b.jsonl", "c.parquet", "d.parquet"]
    assert table["conserved"].tolist() == [True, True, True, True]
    assert table["rows_in"].tolist()[:2] == [3, 2]
    assert pd.isna(table["rows_in"].iloc[2])
    assert table["valid"].tolist() == [1, 1, 0, 2]
    assert table["quarantined"].tolist() == [2, 1, 1, 0]
    assert result.files["quarantined"].tolist() == [2, 1, 1, 0]


def test_conservation_flags_a_file_whose_rows_went_missing(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0), _inference(1), BAD])
    result = ingest_inferences(settings, DAY)
    paths = landing_files(settings.resolve(settings.landing.inferences), DAY)

    table = conservation(paths, result.valid.iloc[1:], result.quarantine)

    assert table[["rows_in", "valid", "quarantined", "conserved"]].iloc[0].tolist() == [
        3,
        1,
        1,
        False,
    ]


# --- feedback --------------------------------------------------------------------------------


def test_feedback_rows_are_validated_and_bad_ones_explained(
    settings: Settings, tmp_path: Path
) -> None:
    rows = [
        _event(0),
        _event(1, request_id=None, kind="label", value="1"),  # entity only: fine
        _event(2, kind="comment", value=None, text="great offer"),  # comments carry text
        _event(3, kind="bogus"),
        _event(4, kind="rating", value="9"),
        _event(5, kind="thumb", value="0"),
        _event(6, request_id=None, customer_id=None),
        _event(7, kind="rating", value="4", received_at="2026-10-05T13:00:00+02:00"),
    ]
    path = _write(_folder(tmp_path, "feedback"), "a.csv", rows)

    result = ingest_feedback(settings, DAY)

    valid = result.valid.set_index("feedback_id")
    assert valid.index.tolist() == ["f0", "f1", "f2", "f7"]
    assert pd.isna(valid.loc["f1", "prediction_id"])
    assert valid.loc["f1", "entity_id"] == "c1"
    assert valid.loc["f2", "text"] == "great offer"
    assert valid.loc["f7", "value"] == 4.0
    assert str(valid.loc["f7", "timestamp"]) == "2026-10-05 11:00:00+00:00"
    quarantined = result.quarantine.set_index("source_row")
    assert quarantined["source_file"].tolist() == [path] * 4
    kinds = (
        "isin(['label', 'correction', 'thumb', 'rating', 'click', 'conversion', 'dwell', "
        "'comment'])"
    )
    expected = {
        3: ("kind", kinds, "bogus"),
        4: ("value", "value_in_range_for_kind", "9.0"),
        5: ("value", "value_in_range_for_kind", "0.0"),
        6: ("prediction_id", "has_prediction_or_entity_id", "null"),
    }
    for row, (column, check, value) in expected.items():
        got = quarantined.loc[row]
        assert (got["column"], got["check"], got["value"]) == (column, check, value)
        assert got["reason"] == f"{column} failed {check} (value {value})"


def test_feedback_kinds_are_limited_to_the_configured_ones(tmp_path: Path) -> None:
    kinds = {k: v for k, v in _SHIPPED.feedback_kinds.items() if k.value != "dwell"}
    landing = Landing(feedback=str(tmp_path / "landing" / "feedback"))
    settings = _SHIPPED.model_copy(update={"feedback_kinds": kinds, "landing": landing})
    path = _write(
        _folder(tmp_path, "feedback"), "a.jsonl", [_event(0), _event(1, kind="dwell", value="30")]
    )

    result = ingest_feedback(settings, DAY)

    assert result.valid["feedback_id"].tolist() == ["f0"]
    row = _by_row(result.quarantine, path, 1)
    assert (row["column"], row["value"]) == ("kind", "dwell")


def test_repeated_feedback_id_is_quarantined(settings: Settings, tmp_path: Path) -> None:
    path = _write(_folder(tmp_path, "feedback"), "a.csv", [_event(0), _event(0, value="-1")])

    result = ingest_feedback(settings, DAY)

    assert result.valid["value"].tolist() == [1.0]
    row = _by_row(result.quarantine, path, 1)
    assert (row["column"], row["check"], row["value"]) == ("feedback_id", "duplicate_id", "f0")


# --- property: every written row ends up exactly once ----------------------------------------

ROW_KINDS = {
    "good": {},
    "null_id": {"request_id": None},
    "high_score": {"score": 1.7},
    "negative_latency": {"latency_ms": -1},
    "unknown_country": {"country": "XX"},
    "bad_time": {"served_at": "yesterday afternoon"},
    "future": {"served_at": "2099-01-01T00:00:00"},
    "bad_feature": {"cart_value": "n/a"},
    "two_faults": {"score": -0.5, "sessions_7d": "many"},
    "repeat": {"request_id": "p0"},
}


@hypothesis_settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.sampled_from(sorted(ROW_KINDS)), min_size=1, max_size=12))
def test_every_row_written_is_either_valid_or_quarantined_exactly_once(kinds: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = _folder(Path(tmp), "inferences")
        path = _write(
            folder, "day.csv", [_inference(i, **ROW_KINDS[k]) for i, k in enumerate(kinds)]
        )
        landing = Landing(inferences=str(folder.parent))
        settings = _SHIPPED.model_copy(update={"landing": landing})

        result = ingest_inferences(settings, DAY)
        table = conservation([path], result.valid, result.quarantine)

    assert len(result.valid) + len(result.quarantine) == len(kinds)
    rows = sorted([*result.valid["source_row"], *result.quarantine["source_row"]])
    assert rows == list(range(len(kinds)))
    assert table["conserved"].tolist() == [True]
    # Which rows are valid: good rows, and a repeat of p0 only while no valid p0 came before.
    expected_valid, seen_p0 = [], False
    for i, kind in enumerate(kinds):
        is_p0 = kind == "repeat" or (i == 0 and kind == "good")
        if kind in ("good", "repeat") and not (is_p0 and seen_p0):
            expected_valid.append(i)
            seen_p0 = seen_p0 or is_p0
    assert sorted(result.valid["source_row"]) == expected_valid


def test_a_parquet_file_is_counted_from_its_footer(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0), BAD])
    _write(folder, "d.parquet", [_inference(4), _inference(5), _inference(6, score=1.7)])
    result = ingest_inferences(settings, DAY)
    paths = landing_files(settings.resolve(settings.landing.inferences), DAY)
    read_again = []

    def reading(path: str, *args, **kwargs):
        read_again.append(Path(path).name)
        return read_landing_file(path, *args, **kwargs)

    monkeypatch.setattr("feedback_pipeline.lib.ingestion.read_landing_file", reading)
    table = conservation(paths, result.valid, result.quarantine)

    assert read_again == ["a.csv"]
    assert table["rows_in"].tolist() == [2, 3]
    assert table["conserved"].tolist() == [True, True]


def test_a_file_quarantined_as_unreadable_that_reads_now_is_not_conserved(
    settings: Settings, tmp_path: Path
) -> None:
    path = _write(_folder(tmp_path, "inferences"), "d.parquet", [_inference(4), _inference(5)])
    result = ingest_inferences(settings, DAY)
    # As if a passing read error had made ingestion quarantine the whole file.
    said = pd.DataFrame({"source_file": [path], "check": ["unreadable_file"]})

    table = conservation([path], result.valid.iloc[0:0], said)

    assert table[["rows_in", "valid", "quarantined", "conserved"]].iloc[0].tolist() == [
        2,
        0,
        1,
        False,
    ]


def test_the_kept_rows_are_taken_column_by_column_in_threads_and_the_frame_let_go() -> None:
    n = 5000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "id": pd.Series([f"p{i}" for i in range(n)], dtype="string[pyarrow]"),
            "version": pd.Categorical(rng.choice(["v1", "v2"], n)),
            "score": rng.random(n),
            "label": pd.array(rng.choice([0, 1, None], n), dtype="Int8"),
            "timestamp": pd.date_range("2026-10-01", periods=n, freq="s", tz="UTC"),
        }
    )
    # A column read from Parquet may be a read-only view of Arrow memory, in chunks.
    chunked = pa_arrow.chunked_array([pa_arrow.array(np.arange(n)[:3000]), np.arange(3000, n)])
    frame["row"] = pd.Series(pd.arrays.ArrowExtensionArray(chunked))
    keep = rng.random(n) < 0.9
    expected = frame[keep].reset_index(drop=True)

    taken = _take_rows(frame, keep)

    pd.testing.assert_frame_equal(taken, expected)
    assert frame.columns.empty
    assert all(taken[c].to_numpy().flags.writeable for c in ["score"])


def test_rows_are_taken_by_label_in_the_order_asked_from_chunked_text() -> None:
    n = 5000
    rng = np.random.default_rng(6)
    text = [f"p{i}" for i in range(n)]
    frame = pd.DataFrame(
        {
            # Text read from many Parquet parts: Arrow chunks.
            "id": pd.Series(
                pd.arrays.ArrowExtensionArray(
                    pa_arrow.chunked_array([text[:1200], text[1200:3100], text[3100:]])
                )
            ),
            "version": pd.Categorical(rng.choice(["v1", "v2"], n)),
            "score": rng.random(n),
            "label": pd.array(rng.choice([0, 1, None], n), dtype="Int8"),
        }
    )
    # Unsorted, across chunks, with a repeat: as a quarantine's failing rows may come.
    labels = pd.Index([4999, 3, 1200, 3099, 3, 3100, 0])

    got = rows_at(frame, labels, ["id", "version", "label"])

    pd.testing.assert_frame_equal(got, frame.loc[labels, ["id", "version", "label"]])
    assert got["id"].tolist() == ["p4999", "p3", "p1200", "p3099", "p3", "p3100", "p0"]
    pd.testing.assert_frame_equal(rows_at(frame, labels), frame.loc[labels])
    assert rows_at(frame, pd.Index([], dtype=int), ["id"]).empty


# --- records ---------------------------------------------------------------------------------


def test_records_are_json_objects_with_nulls_and_iso_times() -> None:
    rows = pd.DataFrame(
        {
            "request_id": pd.array(["p0", None, 'say "hi"\né\u2028'], dtype="string[pyarrow]"),
            "served_at": pd.to_datetime(
                ["2026-10-05T10:00:00.1234Z", None, "2026-10-05T12:00:00+02:00"],
                utc=True,
                format="ISO8601",
            ),
            "logged_at": pd.to_datetime(
                ["2026-10-05T10:00:00.5", None, "2026-10-05"], format="ISO8601"
            ),
            "score": [0.1 + 0.2, np.nan, np.inf],
            "label": pd.array([1, None, 0], dtype="Int8"),
            "country": pd.Categorical(["DE", None, "FR"]),
        },
        index=[7, 3, 5],
    )

    lines = json_lines(rows)

    assert len(lines) == 3  # a line break or U+2028 inside a value does not end a record
    assert [json.loads(line) for line in lines] == [
        {
            "request_id": "p0",
            "served_at": "2026-10-05T10:00:00.123Z",
            "logged_at": "2026-10-05T10:00:00.500",
            "score": 0.3,  # to 15 digits
            "label": 1,
            "country": "DE",
        },
        dict.fromkeys(rows.columns),
        {
            "request_id": 'say "hi"\né\u2028',
            "served_at": "2026-10-05T10:00:00.000Z",
            "logged_at": "2026-10-05T00:00:00.000",
            "score": None,
            "label": 0,
            "country": "FR",
        },
    ]
    assert "é" in lines[2]  # written as it is, not escaped
    assert json_lines(rows.iloc[:0]) == []


def test_records_of_a_column_of_mixed_values_are_written_all_the_same() -> None:
    # A JSON Lines file may give a column text in one record and a number in the next.
    rows = pd.DataFrame(
        {
            "score": pd.Series(["high", 0.5, None, True], dtype=object),
            "tenure_days": [1.0, np.nan, 3.0, 4.0],
        }
    )

    assert [json.loads(line) for line in json_lines(rows)] == [
        {"score": "high", "tenure_days": 1.0},
        {"score": 0.5, "tenure_days": None},
        {"score": None, "tenure_days": 3.0},
        {"score": True, "tenure_days": 4.0},
    ]
