"""Fault injection: every class of bad input or broken environment, one test each.

Each test injects one fault and checks that (a) the error or quarantine message names the file,
the row and the reason (or the exception names what is wrong), and (b) no row is lost or doubled:
every row written is valid or quarantined exactly once, a file that cannot be read stands in
quarantine as one row, and ids stay unique.

Catalogue of fault classes:

1. null prediction id: the row is quarantined (prediction_id, not_nullable)
2. null entity id: the row is quarantined (entity_id, not_nullable)
3. score outside [0, 1]: quarantined with the bound it broke; 0 and 1 are valid
4. negative latency: quarantined; zero and missing latency are valid
5. unknown category value: quarantined, every failing column named in one reason
6. unparsable timestamp: quarantined as unparsable_timestamp with the text as written
7. timestamp beyond the clock skew: quarantined as not_in_the_future; the edge is valid
8. text in a numeric feature (CSV): quarantined as coerce_dtype with the value as written
9. CSV line with the wrong number of fields: that line alone is quarantined, the rest kept
10. JSON line that is not an object: that line alone is quarantined, the rest kept
11. truncated Parquet: quarantined as one unreadable-file row; the day goes on
12. empty file (zero bytes, blank lines): one unreadable-file row; a header-only CSV has 0 rows
13. wrong encoding (UTF-16 CSV / JSON Lines): one unreadable-file row naming the codec
14. unknown file extension (or none): one unreadable-file row naming the extension
15. file lacking a required column: each of its rows quarantined, naming the column
16. duplicate id within a day: the first occurrence kept, the repeats quarantined
17. the same file delivered again on a later day: its rows quarantined as earlier-day repeats
18. schema drift, renamed column: rows quarantined for the missing name, the new one listed
19. schema drift, added column: ignored and listed per file, the rows valid
20. schema drift, dropped optional column (feedback text): rows valid with nulls
21. a day with no predictions: the run succeeds with 0 rows, landing_data_exists errors
22. a day with no feedback: nothing attributed, every prediction pending, counts all zero
23. unseen model version (attributed), unseen prediction or entity (orphaned): counted, kept
24. clock skew, feedback stamped before the prediction it names: not attributed
25. huge finite value (1e308) in a feature or latency: kept exactly; -inf latency quarantined
26. unicode ids (emoji, RTL, combining marks): round-trip every format and attribute
27. unknown feedback kind (or wrong case, or empty): quarantined naming the kind
28. feedback value out of range for its kind (rating 9, thumb 0, ...): quarantined
29. unreachable MLflow store: TrackingError naming the URI; a retry on SQLite succeeds
30. settings file with a wrong type: SettingsError naming the file, the key and the value
31. missing landing directory: empty day, landing_data_exists errors naming the folder
32. disk full mid-write: ENOSPC propagates, the previous file intact, no temporary file left
33. sensor tick repeated: one request, the next tick skips, the run key is stable
34. two sensor ticks racing from one cursor: the same run key, so Dagster launches once
35. settings file that is not YAML (or not a mapping): SettingsError naming the file
36. UTF-8 byte-order mark (CSV, JSON Lines): ids kept as written, no row lost
37. non-finite latency (+inf): quarantined like a negative one
38. entity-only feedback before any prediction of its entity: orphaned, counted
39. settings file that is not UTF-8 text: SettingsError naming the file
40. subdirectory inside a day's landing folder: its rows read or quarantined
41. CRLF line endings in a CSV: every row valid, no stray carriage return
"""

import datetime as dt
import errno
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feedback_pipeline.definitions import defs
from feedback_pipeline.defs.automation import retrain_on_feedback_breach
from feedback_pipeline.lib import storage
from feedback_pipeline.lib.attribution import (
    attribute_feedback,
    feedback_counts,
    label_predictions,
)
from feedback_pipeline.lib.ingestion import (
    IngestResult,
    conservation,
    ingest_feedback,
    ingest_inferences,
)
from feedback_pipeline.lib.landing import landing_files
from feedback_pipeline.lib.settings import (
    Settings,
    SettingsError,
    Tracking,
    default_settings_path,
    load_settings,
)
from feedback_pipeline.lib.tracking import (
    TrackingError,
    find_monitoring_run,
    log_monitoring_run,
)
from feedback_pipeline_tests.lib.test_ingestion import _event, _inference, _write

DAY = dt.date(2026, 10, 5)
NEXT_DAY = DAY + dt.timedelta(days=1)
FUTURE = "not_in_the_future"
COERCE = "coerce_dtype('float64')"
DEAD_STORE = "http://127.0.0.1:9"  # the discard port: connections are refused at once


# --- helpers ---------------------------------------------------------------------------------


def _folder(settings: Settings, dataset: str, day: dt.date = DAY) -> Path:
    """The day's landing folder of ``inferences`` or ``feedback``, as the settings resolve it."""
    root = getattr(settings.landing, dataset)
    folder = Path(settings.resolve(root)) / f"date={day:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _lines(folder: Path, name: str, lines: list[str], newline: str = "\n") -> str:
    path = folder / name
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return str(path)


def _csv_with(folder: Path, name: str, rows: list[dict], replaced: dict[int, str]) -> str:
    """A CSV of the rows whose data line ``i`` is replaced by ``replaced[i]`` as written."""
    text = pd.DataFrame(rows).to_csv(index=False).splitlines()
    for i, line in replaced.items():
        text[i + 1] = line
    return _lines(folder, name, text)


def _quarantined(result: IngestResult, path: str) -> pd.DataFrame:
    """The quarantine rows of one file, indexed by row number."""
    rows = result.quarantine[result.quarantine["source_file"] == path]
    return rows.set_index("source_row")


def _valid_rows(result: IngestResult, path: str) -> list[int]:
    if not len(result.valid):
        return []
    return sorted(result.valid.loc[result.valid["source_file"] == path, "source_row"].tolist())


def _accounted(result: IngestResult, written: Mapping[str, int | None], id_column: str) -> None:
    """No lost and no doubled row: each file's rows are valid or quarantined exactly once.

    ``written`` maps every file of the day to its rows, or None for a file that cannot be read
    (it must stand in quarantine as exactly one row, with nothing valid from it).
    """
    assert sorted(result.files["file"]) == sorted(written)  # every file was looked at
    table = conservation(sorted(written), result.valid, result.quarantine)
    assert table["conserved"].all(), table.to_dict(orient="records")
    for path, n_rows in written.items():
        n_valid = len(_valid_rows(result, path))
        n_bad = int((result.quarantine["source_file"] == path).sum())
        if n_rows is None:
            assert (n_valid, n_bad) == (0, 1), path
        else:
            assert n_valid + n_bad == n_rows, path
    places = [
        *zip(result.valid["source_file"].astype(str), result.valid["source_row"], strict=True),
        *(
            (f, r)
            for f, r in zip(
                result.quarantine["source_file"], result.quarantine["source_row"], strict=True
            )
            if not pd.isna(r)
        ),
    ]
    assert len(places) == len(set(places)), "a row is both valid and quarantined, or twice"
    assert result.valid[id_column].is_unique


def _message(result: IngestResult, path: str, row: int) -> str:
    return str(_quarantined(result, path).loc[row, "message"])


# --- bad values ------------------------------------------------------------------------------


def test_fault_null_prediction_id(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    csv = _write(folder, "a.csv", [_inference(0), _inference(1, request_id=None), _inference(2)])
    jsonl = _write(folder, "b.jsonl", [_inference(3, request_id=None), _inference(4)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p2", "p4"]
    for path, row in ((csv, 1), (jsonl, 0)):
        bad = _quarantined(result, path).loc[row]
        assert (bad["column"], bad["check"], bad["value"]) == (
            "prediction_id",
            "not_nullable",
            "null",
        )
        message = str(bad["message"])
        assert message == f"{path}: row {row}: prediction_id failed not_nullable (value null)"
    _accounted(result, {csv: 3, jsonl: 2}, "prediction_id")


def test_fault_null_entity_id(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    path = _write(folder, "a.csv", [_inference(0, customer_id=None), _inference(1)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p1"]
    assert _message(result, path, 0) == (
        f"{path}: row 0: entity_id failed not_nullable (value null)"
    )
    assert json.loads(str(_quarantined(result, path).loc[0, "record"]))["request_id"] == "p0"
    _accounted(result, {path: 2}, "prediction_id")


def test_fault_score_out_of_range(settings: Settings) -> None:
    rows = [
        _inference(0, score=0.0),
        _inference(1, score=1.0),
        _inference(2, score=1.7),
        _inference(3, score=-0.1),
    ]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid.set_index("prediction_id")["score"].to_dict() == {"p0": 0.0, "p1": 1.0}
    bad = _quarantined(result, path)
    assert bad.loc[2, "reason"] == "score failed less_than_or_equal_to(1.0) (value 1.7)"
    assert bad.loc[3, "reason"] == "score failed greater_than_or_equal_to(0.0) (value -0.1)"
    assert str(bad.loc[2, "message"]).startswith(f"{path}: row 2: score failed")
    _accounted(result, {path: 4}, "prediction_id")


def test_fault_negative_latency(settings: Settings) -> None:
    rows = [
        _inference(0, latency_ms=-5),
        _inference(1, latency_ms=0),
        _inference(2, latency_ms=None),
    ]
    path = _write(_folder(settings, "inferences"), "a.jsonl", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p1", "p2"]
    assert result.valid["latency_ms"].iloc[0] == 0.0 and pd.isna(result.valid["latency_ms"].iloc[1])
    assert _message(result, path, 0) == (
        f"{path}: row 0: latency_ms failed greater_than_or_equal_to(0.0) (value -5.0)"
    )
    _accounted(result, {path: 3}, "prediction_id")


def test_fault_unknown_category_value(settings: Settings) -> None:
    rows = [_inference(0), _inference(1, plan="enterprise", country="XX"), _inference(2)]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p2"]
    reason = str(_quarantined(result, path).loc[1, "reason"])
    assert "plan failed isin(['free', 'plus', 'pro']) (value enterprise)" in reason
    assert "country failed isin(['US', 'DE', 'FR', 'GB', 'BR', 'IN', 'JP']) (value XX)" in reason
    assert _message(result, path, 1) == f"{path}: row 1: {reason}"
    _accounted(result, {path: 3}, "prediction_id")


def test_fault_unparsable_timestamp(settings: Settings) -> None:
    rows = [
        _inference(0, served_at="yesterday afternoon"),
        _inference(1, served_at="2026-13-45T99:00:00"),
        _inference(2),
    ]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p2"]
    bad = _quarantined(result, path)
    assert bad["check"].tolist() == ["unparsable_timestamp"] * 2
    assert bad["value"].tolist() == ["yesterday afternoon", "2026-13-45T99:00:00"]
    assert _message(result, path, 0) == (
        f"{path}: row 0: timestamp failed unparsable_timestamp (value yesterday afternoon)"
    )
    assert json.loads(str(bad.loc[1, "record"]))["served_at"] == "2026-13-45T99:00:00"
    _accounted(result, {path: 3}, "prediction_id")


def test_fault_future_timestamp_beyond_clock_skew(settings: Settings) -> None:
    rows = [
        _inference(0, served_at="2026-10-06T01:00:00"),  # day end + max_clock_skew: the edge
        _inference(1, served_at="2026-10-06T01:00:01"),
        _inference(2, served_at="2026-10-06T03:00:01+02:00"),  # the same instant, with offset
        _inference(3, served_at="2099-01-01T00:00:00Z"),
    ]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0"]
    bad = _quarantined(result, path)
    assert bad["check"].tolist() == [FUTURE] * 3
    assert bad["value"].tolist() == [
        "2026-10-06 01:00:01+00:00",
        "2026-10-06 01:00:01+00:00",
        "2099-01-01 00:00:00+00:00",
    ]
    assert _message(result, path, 2) == (
        f"{path}: row 2: timestamp failed {FUTURE} (value 2026-10-06 01:00:01+00:00)"
    )
    _accounted(result, {path: 4}, "prediction_id")


def test_fault_text_in_numeric_feature(settings: Settings) -> None:
    rows = [
        _inference(0, tenure_days="n/a"),
        _inference(1, cart_value="12,5"),
        _inference(2, cart_value="1e3"),
    ]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p2"]
    assert result.valid["cart_value"].tolist() == [1000.0]
    bad = _quarantined(result, path)
    assert bad[["column", "check", "value"]].to_dict(orient="index") == {
        0: {"column": "tenure_days", "check": COERCE, "value": "n/a"},
        1: {"column": "cart_value", "check": COERCE, "value": "12,5"},
    }
    assert _message(result, path, 1).startswith(
        f"{path}: row 1: cart_value failed {COERCE} (value 12,5)"
    )
    _accounted(result, {path: 3}, "prediction_id")


# --- unparsable lines and unreadable files ---------------------------------------------------


def test_fault_csv_line_with_wrong_field_count(settings: Settings) -> None:
    rows = [_inference(i) for i in range(4)]
    n_fields = len(rows[0])
    path = _csv_with(
        _folder(settings, "inferences"),
        "a.csv",
        rows,
        {1: "p1,c1,too,many," + ",".join(["1"] * n_fields), 3: "p3,c3"},
    )

    result = ingest_inferences(settings, DAY)

    assert _valid_rows(result, path) == [0, 2]
    bad = _quarantined(result, path)
    assert bad["check"].tolist() == ["unparsable_line"] * 2
    assert bad.loc[1, "reason"] == (
        f"wrong number of fields (expected {n_fields}, got {n_fields + 4})"
    )
    assert _message(result, path, 3) == (
        f"{path}: row 3: wrong number of fields (expected {n_fields}, got 2)"
    )
    assert bad.loc[3, "value"] == "p3,c3"  # the line as written, for the fix
    _accounted(result, {path: 4}, "prediction_id")


def test_fault_json_line_not_an_object(settings: Settings) -> None:
    lines = [
        json.dumps(_event(0)),
        "[1, 2]",
        '"just a string"',
        "42",
        "null",
        "{broken",
        json.dumps(_event(6)),
    ]
    path = _lines(_folder(settings, "feedback"), "app.jsonl", lines)

    result = ingest_feedback(settings, DAY)

    assert result.valid["feedback_id"].tolist() == ["f0", "f6"]
    bad = _quarantined(result, path)
    assert bad.index.tolist() == [1, 2, 3, 4, 5]
    assert set(bad["check"]) == {"unparsable_line"}
    reasons = bad["reason"].astype(str).to_dict()
    assert "a JSON list, not an object" in reasons[1]
    assert "a JSON str, not an object" in reasons[2]
    assert "a JSON int, not an object" in reasons[3]
    assert "a JSON NoneType, not an object" in reasons[4]
    assert _message(result, path, 5).startswith(f"{path}: row 5: not a JSON object: ")
    _accounted(result, {path: 7}, "feedback_id")


def test_fault_truncated_parquet(settings: Settings, simulated: list[dt.date]) -> None:
    day = simulated[2]
    paths = landing_files(settings.resolve(settings.landing.inferences), day)
    victim = Path(next(p for p in paths if p.endswith(".parquet")))
    parquet_rows = {p: len(pd.read_parquet(p)) for p in paths if p.endswith(".parquet")}
    content = victim.read_bytes()
    victim.write_bytes(content[: len(content) // 2])

    result = ingest_inferences(settings, day)

    bad = _quarantined(result, str(victim))
    assert bad.index.isna().tolist() == [True]
    assert bad["check"].tolist() == ["unreadable_file"]
    assert bad["message"].iloc[0].startswith(f"{victim}: ArrowInvalid: ")
    assert len(result.valid) > 0 and str(victim) not in set(result.valid["source_file"])
    files = result.files.set_index("file")
    assert not files.loc[str(victim), "readable"] and pd.isna(files.loc[str(victim), "rows_in"])
    for path, n_rows in parquet_rows.items():
        if path != str(victim):
            assert files.loc[path, "rows_in"] == n_rows
    rows_in = files["rows_in"].to_dict()
    _accounted(
        result, {p: None if p == str(victim) else int(rows_in[p]) for p in paths}, "prediction_id"
    )


def test_fault_empty_file(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    empty = [folder / name for name in ("a.csv", "b.jsonl", "c.parquet")]
    for path in empty:
        path.write_bytes(b"")
    blank = _lines(folder, "d.jsonl", ["", "  ", ""])
    header_only = _lines(folder, "e.csv", [",".join(_inference(0))])
    good = _write(folder, "f.csv", [_inference(0)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0"]
    unreadable = [*map(str, empty), blank]
    for path in unreadable:
        bad = _quarantined(result, path)
        assert bad["message"].tolist() == [f"{path}: ValueError: the file is empty"]
    assert set(result.quarantine["check"]) == {"unreadable_file"}
    assert result.files.set_index("file").loc[header_only, "rows_in"] == 0
    _accounted(result, {**dict.fromkeys(unreadable), header_only: 0, good: 1}, "prediction_id")


def test_fault_wrong_encoding(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    utf16_csv = folder / "a.csv"
    utf16_csv.write_bytes(pd.DataFrame([_inference(0)]).to_csv(index=False).encode("utf-16"))
    feedback = _folder(settings, "feedback")
    utf16_jsonl = feedback / "b.jsonl"
    utf16_jsonl.write_bytes((json.dumps(_event(0)) + "\n").encode("utf-16"))
    good = _write(folder, "c.csv", [_inference(1)])

    predictions, events = ingest_inferences(settings, DAY), ingest_feedback(settings, DAY)

    assert predictions.valid["prediction_id"].tolist() == ["p1"]
    assert len(events.valid) == 0
    for result, path in ((predictions, str(utf16_csv)), (events, str(utf16_jsonl))):
        (message,) = _quarantined(result, path)["message"]
        assert message.startswith(f"{path}: UnicodeDecodeError: 'utf-8' codec can't decode")
    _accounted(predictions, {str(utf16_csv): None, good: 1}, "prediction_id")
    _accounted(events, {str(utf16_jsonl): None}, "feedback_id")


def test_fault_unknown_file_extension(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    (folder / "export.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    (folder / "README").write_text("delivered by the nightly export", encoding="utf-8")
    good = _write(folder, "a.csv", [_inference(0)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0"]
    xlsx, readme = str(folder / "export.xlsx"), str(folder / "README")
    assert _quarantined(result, xlsx)["message"].tolist() == [
        f"{xlsx}: ValueError: unsupported file type '.xlsx'"
    ]
    assert _quarantined(result, readme)["message"].tolist() == [
        f"{readme}: ValueError: unsupported file type '(none)'"
    ]
    _accounted(result, {xlsx: None, readme: None, good: 1}, "prediction_id")


def test_fault_file_lacking_required_column(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    rows = [{k: v for k, v in _inference(i).items() if k != "request_id"} for i in range(3)]
    broken = _write(folder, "a.jsonl", rows)
    good = _write(folder, "b.csv", [_inference(9)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p9"]
    bad = _quarantined(result, broken)
    assert bad.index.tolist() == [0, 1, 2]
    assert set(bad["check"]) == {"column_in_dataframe"}
    assert _message(result, broken, 2) == f"{broken}: row 2: missing column(s) ['request_id']"
    assert json.loads(str(bad.loc[2, "record"]))["customer_id"] == "c2"  # kept for a replay
    _accounted(result, {broken: 3, good: 1}, "prediction_id")


# --- repeats ---------------------------------------------------------------------------------


def test_fault_duplicate_id_within_a_day(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    first = _write(folder, "a.csv", [_inference(0, score=0.1), _inference(1), _inference(1)])
    second = _write(folder, "b.parquet", [_inference(0, score=0.9), _inference(2)])

    result = ingest_inferences(settings, DAY)

    valid = result.valid.set_index("prediction_id")
    assert sorted(valid.index) == ["p0", "p1", "p2"]
    assert (valid.loc["p0", "source_file"], valid.loc["p0", "score"]) == (first, 0.1)
    today = "repeats an id already ingested today; the first occurrence is kept"
    assert _message(result, first, 2) == f"{first}: row 2: {today}"
    assert _message(result, second, 0) == f"{second}: row 0: {today}"
    assert set(result.quarantine["check"]) == {"duplicate_id"}
    _accounted(result, {first: 3, second: 2}, "prediction_id")


def test_fault_file_delivered_again_on_a_later_day(
    settings: Settings, simulated: list[dt.date]
) -> None:
    root = settings.resolve(settings.landing.inferences)
    day, later = simulated[1], simulated[2]
    first = ingest_inferences(settings, day)
    original = next(p for p in landing_files(root, day) if p.endswith(".parquet"))
    again = Path(root) / f"date={later:%Y-%m-%d}" / "redelivered.parquet"
    shutil.copyfile(original, again)
    n_again = len(pd.read_parquet(again))

    result = ingest_inferences(settings, later, seen_ids=pd.Index(first.valid["prediction_id"]))

    bad = _quarantined(result, str(again))
    assert len(bad) == n_again and _valid_rows(result, str(again)) == []
    repeats = bad[bad["check"] == "duplicate_id"]
    originally_valid = int((first.valid["source_file"] == original).sum())
    assert len(repeats) == originally_valid  # the dirty rows are quarantined for their fault
    assert set(repeats["reason"]) == {"repeats an id already ingested on an earlier day"}
    assert repeats["message"].iloc[0].startswith(f"{again}: row ")
    both = pd.concat([first.valid["prediction_id"], result.valid["prediction_id"]])
    assert both.is_unique
    counts = result.files.set_index("file")["rows_in"]
    _accounted(result, {str(p): int(n) for p, n in counts.items()}, "prediction_id")


# --- schema drift ----------------------------------------------------------------------------


def test_fault_schema_drift_renamed_column(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    rows = [
        {("served_at_utc" if k == "served_at" else k): v for k, v in _inference(i).items()}
        for i in range(2)
    ]
    drifted = _write(folder, "a.parquet", rows)
    good = _write(folder, "b.csv", [_inference(5)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p5"]
    assert _message(result, drifted, 1) == f"{drifted}: row 1: missing column(s) ['served_at']"
    assert result.files.set_index("file").loc[drifted, "ignored_columns"] == ["served_at_utc"]
    _accounted(result, {drifted: 2, good: 1}, "prediction_id")


def test_fault_schema_drift_added_column(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    extra = {"debug_blob": "x", "shard": 3}
    csv = _write(folder, "a.csv", [_inference(0, **extra), _inference(1, **extra)])
    parquet = _write(folder, "b.parquet", [_inference(2, **extra)])

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert result.quarantine.empty
    assert not {"debug_blob", "shard"} & set(result.valid.columns)
    ignored = result.files.set_index("file")["ignored_columns"]
    assert ignored[csv] == ignored[parquet] == ["debug_blob", "shard"]
    _accounted(result, {csv: 2, parquet: 1}, "prediction_id")


def test_fault_schema_drift_dropped_optional_column(settings: Settings) -> None:
    rows = [
        {k: v for k, v in _event(i, kind="label", value="1").items() if k != "text"}
        for i in range(3)
    ]
    path = _write(_folder(settings, "feedback"), "crm.csv", rows)

    result = ingest_feedback(settings, DAY)

    _accounted(result, {path: 3}, "feedback_id")
    assert result.valid["feedback_id"].tolist() == ["f0", "f1", "f2"]
    assert result.valid["text"].isna().all()
    assert result.quarantine.empty


# --- missing days ----------------------------------------------------------------------------

INGESTION = [dg.AssetKey("inference_log"), dg.AssetKey("feedback_events")]


def _ingest_in_dagster(day: dt.date) -> tuple[dg.ExecuteInProcessResult, dict]:
    result = (
        defs()
        .resolve_job_def("daily_monitoring_job")
        .execute_in_process(
            partition_key=day.isoformat(),
            instance=dg.DagsterInstance.ephemeral(),
            asset_selection=INGESTION,
            raise_on_error=False,
        )
    )
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }
    return result, checks


def _rows_in(result: dg.ExecuteInProcessResult, asset: str) -> tuple[int, int]:
    (materialization,) = result.asset_materializations_for_node(asset)
    meta = materialization.metadata
    return int(str(meta["rows_valid"].value)), int(str(meta["rows_quarantined"].value))


def test_fault_day_with_no_predictions(settings: Settings) -> None:
    _write(_folder(settings, "inferences", DAY - dt.timedelta(days=1)), "a.csv", [_inference(0)])
    _write(_folder(settings, "feedback"), "a.csv", [_event(0), _event(1)])
    folder = f"{settings.resolve(settings.landing.inferences)}/date={DAY}"

    result, checks = _ingest_in_dagster(DAY)

    assert result.success  # the day goes on: an empty log, and the check says why
    assert _rows_in(result, "inference_log") == (0, 0)
    assert _rows_in(result, "feedback_events") == (2, 0)
    landing = checks[("inference_log", "landing_data_exists")]
    assert landing.passed is False and landing.severity == dg.AssetCheckSeverity.ERROR
    assert landing.metadata["folder"].value == folder
    assert landing.metadata["landing_files"].value == 0
    assert checks[("feedback_events", "landing_data_exists")].passed is True
    assert checks[("inference_log", "rows_are_conserved")].passed is True
    assert checks[("feedback_events", "rows_are_conserved")].passed is True
    stored = storage.read_parquet(
        storage.partition_path(settings.resolve("warehouse"), "inference_log", DAY)
    )
    assert len(stored) == 0 and "prediction_id" in stored.columns


def test_fault_day_with_no_feedback(settings: Settings) -> None:
    path = _write(_folder(settings, "inferences"), "a.csv", [_inference(i) for i in range(3)])

    predictions, events = ingest_inferences(settings, DAY), ingest_feedback(settings, DAY)
    attributed = attribute_feedback(
        events.valid, predictions.valid[["prediction_id", "entity_id", "timestamp"]], settings
    )
    labeled = label_predictions(predictions.valid, attributed, settings, storage.day_end(DAY))

    assert len(events.valid) == 0 and events.quarantine.empty and events.files.empty
    assert feedback_counts(attributed) == {"attributed": 0, "late": 0, "orphaned": 0}
    assert labeled["prediction_id"].tolist() == ["p0", "p1", "p2"]
    assert labeled["label_status"].astype(str).tolist() == ["pending"] * 3
    assert labeled["n_feedback"].tolist() == [0, 0, 0]
    _accounted(predictions, {path: 3}, "prediction_id")


def test_fault_missing_landing_directory(settings: Settings) -> None:
    root = settings.resolve(settings.landing.inferences)
    assert not Path(root).exists()  # nothing was ever delivered, not even the folder

    library = ingest_inferences(settings, DAY)
    result, checks = _ingest_in_dagster(DAY)

    assert len(library.valid) == 0 and library.quarantine.empty and library.files.empty
    assert result.success
    for asset, severity in (
        ("inference_log", dg.AssetCheckSeverity.ERROR),
        ("feedback_events", dg.AssetCheckSeverity.WARN),
    ):
        landing = checks[(asset, "landing_data_exists")]
        assert landing.passed is False and landing.severity == severity
        assert landing.metadata["folder"].value.endswith(f"/date={DAY}")
        assert _rows_in(result, asset) == (0, 0)
        assert checks[(asset, "rows_are_conserved")].passed is True
    assert checks[("inference_log", "landing_data_exists")].metadata["folder"].value == (
        f"{root}/date={DAY}"
    )


# --- attribution faults ----------------------------------------------------------------------


def _attributed(settings: Settings) -> tuple[IngestResult, pd.DataFrame]:
    predictions, events = ingest_inferences(settings, DAY), ingest_feedback(settings, DAY)
    columns = ["prediction_id", "entity_id", "timestamp"]
    return events, attribute_feedback(events.valid, predictions.valid[columns], settings)


def _feedback_conserved(events: IngestResult, attributed: pd.DataFrame, received: int) -> None:
    """Rows received = attributed + late + orphaned + duplicate, each event once."""
    counts = feedback_counts(attributed)
    assert set(events.quarantine["check"]) <= {"duplicate_id"}  # nothing else was wrong
    duplicates = len(events.quarantine)
    assert received == counts["attributed"] + counts["late"] + counts["orphaned"] + duplicates
    assert attributed["feedback_id"].tolist() == events.valid["feedback_id"].tolist()


def test_fault_feedback_for_unseen_prediction_or_entity(settings: Settings) -> None:
    _write(
        _folder(settings, "inferences"),
        "a.csv",
        [_inference(0), _inference(1, model_version="v9-canary")],
    )
    rows = [
        _event(0),
        _event(1),  # a prediction of a version never configured: still attributed
        _event(2, request_id="p-ghost", customer_id="c-ghost"),
        _event(3, request_id=None, customer_id="c-ghost"),
        _event(1, value="-1"),  # the same feedback id again: a duplicate, counted apart
    ]
    path = _write(_folder(settings, "feedback"), "a.csv", rows)

    events, attributed = _attributed(settings)

    status = attributed.set_index("feedback_id")["status"].astype(str).to_dict()
    assert status == {"f0": "attributed", "f1": "attributed", "f2": "orphaned", "f3": "orphaned"}
    orphans = attributed[attributed["status"] == "orphaned"]
    assert orphans["target_prediction_id"].isna().all()
    assert orphans["match"].astype(str).tolist() == ["none", "none"]
    assert feedback_counts(attributed) == {"attributed": 2, "late": 0, "orphaned": 2}
    assert _message(events, path, 4) == (
        f"{path}: row 4: repeats an id already ingested today; the first occurrence is kept"
    )
    _feedback_conserved(events, attributed, received=5)
    _accounted(events, {path: 5}, "feedback_id")


def test_fault_feedback_before_its_prediction(settings: Settings) -> None:
    _write(_folder(settings, "inferences"), "a.csv", [_inference(0, served_at="2026-10-05T10:00")])
    rows = [
        _event(0, received_at="2026-10-05T07:00:00"),  # 3 h before, beyond max_clock_skew (1 h)
        _event(1, request_id="p0", received_at="2026-10-05T11:00:00"),
    ]
    path = _write(_folder(settings, "feedback"), "a.csv", rows)

    events, attributed = _attributed(settings)

    _accounted(events, {path: 2}, "feedback_id")
    _feedback_conserved(events, attributed, received=2)
    status = attributed.set_index("feedback_id")["status"].astype(str)
    assert status["f1"] == "attributed"
    assert status["f0"] in ("late", "orphaned")
    assert (attributed["delay_s"].dropna() >= 0).all()


def test_fault_entity_feedback_before_any_prediction(settings: Settings) -> None:
    _write(_folder(settings, "inferences"), "a.csv", [_inference(0, served_at="2026-10-05T10:00")])
    rows = [
        _event(0, request_id=None, received_at="2026-10-05T09:59:59"),
        _event(1, request_id=None, customer_id="c0", received_at="2026-10-05T10:30:00"),
    ]
    path = _write(_folder(settings, "feedback"), "a.csv", rows)

    events, attributed = _attributed(settings)

    found = attributed.set_index("feedback_id")
    assert found["status"].astype(str).to_dict() == {"f0": "orphaned", "f1": "attributed"}
    assert pd.isna(found.loc["f0", "target_prediction_id"])
    assert found.loc["f1", "target_prediction_id"] == "p0"
    assert found.loc["f1", "delay_s"] == 1800.0
    _feedback_conserved(events, attributed, received=2)
    _accounted(events, {path: 2}, "feedback_id")


def test_fault_huge_finite_value(settings: Settings) -> None:
    rows = [
        _inference(0, tenure_days="1e308", latency_ms="1.7976931348623157e308"),
        _inference(1, cart_value="-1e308"),
        _inference(2, latency_ms="-inf"),
    ]
    folder = _folder(settings, "inferences")
    csv = _write(folder, "a.csv", rows)
    parquet = _write(folder, "b.parquet", [_inference(3, loyalty_points=1e308)])

    result = ingest_inferences(settings, DAY)

    valid = result.valid.set_index("prediction_id")
    assert valid.index.tolist() == ["p0", "p1", "p3"]
    assert valid.loc["p0", "tenure_days"] == 1e308
    assert valid.loc["p0", "latency_ms"] == 1.7976931348623157e308
    assert valid.loc["p1", "cart_value"] == -1e308
    assert valid.loc["p3", "loyalty_points"] == 1e308
    assert _message(result, csv, 2) == (
        f"{csv}: row 2: latency_ms failed greater_than_or_equal_to(0.0) (value -inf)"
    )
    _accounted(result, {csv: 3, parquet: 1}, "prediction_id")


def test_fault_non_finite_latency(settings: Settings) -> None:
    rows = [_inference(0, latency_ms="inf"), _inference(1, latency_ms="1e309"), _inference(2)]
    path = _write(_folder(settings, "inferences"), "a.csv", rows)

    result = ingest_inferences(settings, DAY)

    _accounted(result, {path: 3}, "prediction_id")
    assert result.valid["prediction_id"].tolist() == ["p2"]
    bad = _quarantined(result, path)
    assert bad["column"].tolist() == ["latency_ms", "latency_ms"]
    assert _message(result, path, 0).startswith(f"{path}: row 0: latency_ms failed ")


UNICODE_IDS = [
    "p-😀",  # emoji (astral plane)
    "p-שלום",  # right-to-left
    "p-e\u0301",  # e + combining acute: not the same id as the precomposed one
    "p-\u00e9",
    "p-\u202eabc",  # right-to-left override
    "p-👩‍👩‍👧",  # a ZWJ sequence
]


def test_fault_unicode_ids(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    rows = [_inference(i, request_id=x, customer_id=f"c-{x}") for i, x in enumerate(UNICODE_IDS)]
    paths = {
        _write(folder, "a.csv", rows[:2]): 2,
        _write(folder, "b.jsonl", rows[2:4]): 2,
        _write(folder, "c.parquet", rows[4:]): 2,
    }
    events = [
        _event(0, event_id="f-😀", request_id=UNICODE_IDS[0], customer_id=None),
        _event(1, event_id="f-שלום", request_id=None, customer_id=f"c-{UNICODE_IDS[1]}"),
        _event(2, event_id="f-e\u0301", request_id=UNICODE_IDS[2], customer_id=None),
        _event(3, event_id="f-\u00e9", request_id=UNICODE_IDS[3], customer_id=None),
        _event(5, event_id="f-zwj", request_id=None, customer_id=f"c-{UNICODE_IDS[5]}"),
    ]
    feedback = _write(_folder(settings, "feedback"), "a.jsonl", events)

    predictions = ingest_inferences(settings, DAY)
    received, attributed = _attributed(settings)

    assert predictions.valid["prediction_id"].tolist() == UNICODE_IDS
    assert predictions.valid["entity_id"].tolist() == [f"c-{x}" for x in UNICODE_IDS]
    targets = attributed.set_index("feedback_id")["target_prediction_id"].to_dict()
    assert targets == {
        "f-😀": UNICODE_IDS[0],
        "f-שלום": UNICODE_IDS[1],
        "f-e\u0301": UNICODE_IDS[2],
        "f-\u00e9": UNICODE_IDS[3],
        "f-zwj": UNICODE_IDS[5],
    }
    assert set(attributed["status"].astype(str)) == {"attributed"}
    labeled = label_predictions(predictions.valid, attributed, settings, storage.day_end(DAY))
    assert labeled.set_index("prediction_id")["n_feedback"].to_dict() == {
        x: 0 if i == 4 else 1 for i, x in enumerate(UNICODE_IDS)
    }
    _accounted(predictions, paths, "prediction_id")
    _accounted(received, {feedback: 5}, "feedback_id")


def test_fault_unknown_feedback_kind(settings: Settings) -> None:
    rows = [_event(0), _event(1, kind="bogus"), _event(2, kind="THUMB"), _event(3, kind=None)]
    path = _write(_folder(settings, "feedback"), "a.csv", rows)

    result = ingest_feedback(settings, DAY)

    assert result.valid["feedback_id"].tolist() == ["f0"]
    bad = _quarantined(result, path).sort_index()
    assert bad["column"].tolist() == ["kind"] * 3
    assert bad["value"].tolist() == ["bogus", "THUMB", "null"]
    kinds = "['label', 'correction', 'thumb', 'rating', 'click', 'conversion', 'dwell', 'comment']"
    assert _message(result, path, 1) == f"{path}: row 1: kind failed isin({kinds}) (value bogus)"
    assert bad.loc[3, "check"] == "not_nullable"
    _accounted(result, {path: 4}, "feedback_id")


def test_fault_feedback_value_out_of_range_for_kind(settings: Settings) -> None:
    rows = [
        _event(0, kind="rating", value="9"),
        _event(1, kind="rating", value="0"),
        _event(2, kind="thumb", value="0"),
        _event(3, kind="label", value="2"),
        _event(4, kind="click", value="-1"),
        _event(5, kind="dwell", value="-5"),
        _event(6, kind="rating", value="5"),
        _event(7, kind="dwell", value="0"),
    ]
    path = _write(_folder(settings, "feedback"), "a.jsonl", rows)

    result = ingest_feedback(settings, DAY)

    assert result.valid["feedback_id"].tolist() == ["f6", "f7"]
    bad = _quarantined(result, path)
    assert bad.index.tolist() == [0, 1, 2, 3, 4, 5]
    assert set(bad["check"]) == {"value_in_range_for_kind"}
    assert bad["value"].tolist() == ["9.0", "0.0", "0.0", "2.0", "-1.0", "-5.0"]
    assert _message(result, path, 0) == (
        f"{path}: row 0: value failed value_in_range_for_kind (value 9.0)"
    )
    _accounted(result, {path: 8}, "feedback_id")


# --- environment faults ----------------------------------------------------------------------


def test_fault_unreachable_mlflow_store(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dead = settings.model_copy(update={"tracking": Tracking(tracking_uri=DEAD_STORE)})

    with pytest.raises(TrackingError) as raised:
        log_monitoring_run(dead, DAY.isoformat(), "v1", {"accuracy": 0.9}, {"cutoff": "0.5"})

    assert str(raised.value).startswith(f"MLflow tracking store {DEAD_STORE} is unreachable")
    run = log_monitoring_run(settings, DAY.isoformat(), "v1", {"accuracy": 0.9}, {"cutoff": "0.5"})
    assert run.created is True
    assert settings.tracking.uri(settings).startswith("sqlite:///")
    assert find_monitoring_run(settings, DAY.isoformat(), "v1") == run.run_id
    again = log_monitoring_run(
        settings, DAY.isoformat(), "v1", {"accuracy": 0.9}, {"cutoff": "0.5"}
    )
    assert (again.run_id, again.created) == (run.run_id, False)  # the retry made no second run


def _settings_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "settings.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_fault_settings_wrong_type(tmp_path: Path) -> None:
    text = default_settings_path().read_text(encoding="utf-8")
    text = text.replace("warn_share: 0.02", "warn_share: lots")
    text = text.replace("dedupe_lookback_days: 30", "dedupe_lookback_days: thirty")
    path = _settings_file(tmp_path, text)

    with pytest.raises(SettingsError) as raised:
        load_settings(path)

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "quarantine.warn_share: Input should be a valid number" in message
    assert "(got 'lots')" in message
    assert "dedupe_lookback_days: Input should be a valid integer" in message
    assert "(got 'thirty')" in message


def test_fault_settings_not_yaml(tmp_path: Path) -> None:
    broken = _settings_file(tmp_path, "model_name: [unclosed\n  - : :\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(broken)
    assert str(raised.value).startswith(f"{broken}: not valid YAML: ")
    assert "line 2" in str(raised.value)

    prose = _settings_file(tmp_path, "just a sentence, not settings\n")
    with pytest.raises(SettingsError, match=r"expected a mapping of settings, got str$"):
        load_settings(prose)


def test_fault_settings_not_utf8_text(tmp_path: Path) -> None:
    for content in (b"PAR1\x00\x15\xff\xfe binary", "model_name: x\n".encode("utf-16")):
        path = _settings_file(tmp_path, content)
        with pytest.raises(SettingsError) as raised:
            load_settings(path)
        assert str(raised.value).startswith(f"{path}: ")


def test_fault_disk_full_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "warehouse" / "inference_log" / f"date={DAY}" / "part-0.parquet"
    good = pd.DataFrame({"prediction_id": ["p0", "p1"], "score": [0.1, 0.2]})
    storage.write_parquet(good, str(path))
    written: list[int] = []

    def full_disk(writer: pq.ParquetWriter, table: object, *args: object, **kwargs: object) -> None:
        where: BinaryIO = writer.where
        chunk = b"PAR1" + b"\0" * 4096
        where.write(chunk)  # half a file, then the disk is full
        written.append(len(chunk))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    newer = pd.DataFrame({"prediction_id": ["p2"], "score": [0.3]})
    with pytest.raises(OSError) as raised:
        storage.write_parquet(newer, str(path))
    monkeypatch.undo()

    assert written, "the fault was not injected into the writer write_parquet uses"
    assert raised.value.errno == errno.ENOSPC
    assert "No space left on device" in str(raised.value)
    pd.testing.assert_frame_equal(storage.read_parquet(str(path)), good)
    assert os.listdir(path.parent) == ["part-0.parquet"]  # no temporary file left behind


# --- the retraining sensor -------------------------------------------------------------------

HEALTHY = {
    "accuracy": 0.80,
    "n_labeled": 900,
    "n_predictions": 4000,
    "negative_feedback_share": 0.2,
    "n_thumbs": 400,
    "n_ratings": 200,
    "maturity": "final",
}
BREACH_DAY = "2026-10-20"


def _report(instance: dg.DagsterInstance, day: str, **metadata: float | str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="performance_metrics", partition=day, metadata=metadata)
    )


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[object, str | None]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return retrain_on_feedback_breach(context), context.cursor


@pytest.fixture
def breached() -> Iterator[tuple[dg.DagsterInstance, str]]:
    """An instance with a healthy reference week, consumed by one tick, then a breached day."""
    with dg.instance_for_test() as instance:
        for day in range(1, 8):
            _report(instance, f"2026-10-{day:02d}", **HEALTHY)
        _, cursor = _tick(instance, None)
        assert cursor is not None  # the reference week was consumed
        _report(instance, BREACH_DAY, **{**HEALTHY, "accuracy": 0.62})
        yield instance, cursor


def test_fault_sensor_tick_repeated(breached: tuple[dg.DagsterInstance, str]) -> None:
    instance, cursor = breached

    first, after_first = _tick(instance, cursor)
    second, after_second = _tick(instance, after_first)

    assert isinstance(first, dg.RunRequest)
    assert first.run_key == f"retrain:{BREACH_DAY}:accuracy_floor,accuracy_drop"
    assert after_first is not None and int(after_first) > int(cursor)
    assert isinstance(second, dg.SkipReason)
    assert second.skip_message == (
        "no day's metrics or reports were materialized since the last tick"
    )
    assert after_second == after_first


def test_fault_sensor_ticks_racing(breached: tuple[dg.DagsterInstance, str]) -> None:
    instance, cursor = breached

    one, cursor_one = _tick(instance, cursor)
    other, cursor_other = _tick(instance, cursor)

    assert isinstance(one, dg.RunRequest) and isinstance(other, dg.RunRequest)
    assert one.run_key == other.run_key == f"retrain:{BREACH_DAY}:accuracy_floor,accuracy_drop"
    assert one.tags == other.tags
    assert cursor_one == cursor_other


# --- encodings and layout --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.csv", "b.jsonl"])
def test_fault_utf8_byte_order_mark(settings: Settings, name: str) -> None:
    folder = _folder(settings, "inferences")
    rows = [_inference(0, request_id="007"), _inference(1, request_id="008")]
    frame = pd.DataFrame(rows)
    text = (
        frame.to_csv(index=False)
        if name.endswith(".csv")
        else frame.to_json(orient="records", lines=True)
    )
    path = folder / name
    path.write_bytes(text.encode("utf-8-sig"))

    result = ingest_inferences(settings, DAY)

    _accounted(result, {str(path): 2}, "prediction_id")
    assert result.valid["prediction_id"].tolist() == ["007", "008"]
    assert result.quarantine.empty


def test_fault_subdirectory_in_a_day_folder(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    top = _write(folder, "a.csv", [_inference(0)])
    (folder / "hour=10").mkdir()
    nested = _write(folder / "hour=10", "b.csv", [_inference(1), _inference(2)])

    result = ingest_inferences(settings, DAY)

    accounted = set(result.files["file"]) | set(result.quarantine["source_file"])
    assert nested in accounted or str(folder / "hour=10") in accounted
    assert len(result.valid) + len(result.quarantine) >= 2
    assert top in set(result.files["file"])


def test_fault_crlf_line_endings(settings: Settings) -> None:
    folder = _folder(settings, "inferences")
    rows = [_inference(0), _inference(1, score=0.9)]
    text = pd.DataFrame(rows).to_csv(index=False).splitlines()
    path = _lines(folder, "a.csv", text, newline="\r\n")

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p1"]
    assert result.valid["account_age_days"].tolist() == [19.0, 19.0]  # the last column, no "\r"
    assert (
        not result.valid.select_dtypes("string").apply(lambda c: c.str.contains("\r")).any().any()
    )
    assert result.quarantine.empty
    _accounted(result, {path: 2}, "prediction_id")
