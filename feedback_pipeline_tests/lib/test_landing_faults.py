"""Bad input beyond bad values: broken lines, encodings, schema drift, repeats across days."""

import json
from pathlib import Path

import pandas as pd
import pytest

from feedback_pipeline.lib import quarantine
from feedback_pipeline.lib.ingestion import conservation, ingest_feedback, ingest_inferences
from feedback_pipeline.lib.landing import landing_files
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline_tests.lib.test_ingestion import (
    DAY,
    _event,
    _folder,
    _inference,
    _write,
)


def _rows_of(result, path: str) -> tuple[list[int], list[int]]:
    valid = sorted(result.valid.loc[result.valid["source_file"] == path, "source_row"])
    bad = sorted(result.quarantine.loc[result.quarantine["source_file"] == path, "source_row"])
    return valid, bad


def _csv_lines(folder: Path, name: str, rows: list[dict], broken: dict[int, str]) -> str:
    """A CSV whose data line ``i`` is replaced by ``broken[i]`` (written as is)."""
    path = folder / name
    text = pd.DataFrame(rows).to_csv(index=False).splitlines()
    for i, line in broken.items():
        text[i + 1] = line
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("line", ["p1,c1,too,many,fields," + ",".join(["1"] * 40), "p1,c1"])
def test_a_csv_line_with_the_wrong_field_count_is_quarantined_alone(
    settings: Settings, tmp_path: Path, line: str
) -> None:
    rows = [_inference(i) for i in range(4)]
    path = _csv_lines(_folder(tmp_path, "inferences"), "a.csv", rows, {1: line})

    result = ingest_inferences(settings, DAY)

    assert _rows_of(result, path) == ([0, 2, 3], [1])
    (bad,) = result.quarantine.to_dict(orient="records")
    assert bad["check"] == "unparsable_line"
    assert bad["reason"].startswith("wrong number of fields")
    assert bad["message"].startswith(f"{path}: row 1: wrong number of fields")
    assert conservation([path], result.valid, result.quarantine)["conserved"].all()


def test_a_json_lines_file_with_bad_lines_keeps_its_good_lines(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "feedback")
    lines = [json.dumps(_event(0)), "{not json", json.dumps(_event(2)), "[1, 2]"]
    path = folder / "app.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = ingest_feedback(settings, DAY)

    assert _rows_of(result, str(path)) == ([0, 2], [1, 3])
    reasons = result.quarantine.set_index("source_row")["reason"]
    assert reasons[1].startswith("not a JSON object")
    assert "a JSON list, not an object" in reasons[3]


def test_a_file_in_the_wrong_encoding_is_quarantined_whole(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    good = _write(folder, "a.csv", [_inference(0)])
    latin = folder / "b.csv"
    latin.write_bytes(
        pd.DataFrame([_inference(1, country="Ã©")])
        .to_csv(index=False)
        .encode("utf-8")
        .replace("Ã©".encode(), b"\xe9\xff")
    )

    result = ingest_inferences(settings, DAY)

    assert result.valid["source_file"].tolist() == [good]
    (bad,) = result.quarantine.to_dict(orient="records")
    assert (bad["source_file"], bad["check"]) == (str(latin), "unreadable_file")
    assert pd.isna(bad["source_row"])
    assert "utf" in bad["reason"].lower()


def test_extra_columns_are_ignored_and_reported(settings: Settings, tmp_path: Path) -> None:
    path = _write(
        _folder(tmp_path, "inferences"), "a.parquet", [_inference(0, debug_blob="x", shard=3)]
    )

    result = ingest_inferences(settings, DAY)

    assert len(result.valid) == 1 and result.quarantine.empty
    assert "debug_blob" not in result.valid.columns
    files = result.files.set_index("file")
    assert files.loc[path, "ignored_columns"] == ["debug_blob", "shard"]


def test_a_column_of_the_wrong_type_quarantines_its_rows(
    settings: Settings, tmp_path: Path
) -> None:
    rows = [_inference(0, score="high"), _inference(1, score="0.4")]
    path = _write(_folder(tmp_path, "inferences"), "a.jsonl", rows)

    result = ingest_inferences(settings, DAY)

    assert _rows_of(result, path) == ([1], [0])
    assert result.quarantine["check"].iloc[0] == "coerce_dtype('float64')"
    assert result.quarantine["value"].iloc[0] == "high"


def test_an_id_seen_on_an_earlier_day_is_a_duplicate(settings: Settings, tmp_path: Path) -> None:
    _write(_folder(tmp_path, "inferences"), "a.csv", [_inference(0), _inference(1)])

    result = ingest_inferences(settings, DAY, seen_ids=pd.Index(["p1", "p-older"]))

    assert result.valid["prediction_id"].tolist() == ["p0"]
    (bad,) = result.quarantine.to_dict(orient="records")
    assert (bad["check"], bad["value"]) == ("duplicate_id", "p1")
    assert bad["reason"] == "repeats an id already ingested on an earlier day"


def test_re_ingesting_a_day_gives_identical_outputs(settings: Settings, tmp_path: Path) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.csv", [_inference(0), _inference(1, score=3.0), _inference(0)])
    _write(folder, "b.jsonl", [_inference(2, country="XX"), _inference(3)])

    first, second = ingest_inferences(settings, DAY), ingest_inferences(settings, DAY)

    pd.testing.assert_frame_equal(first.valid, second.valid)
    pd.testing.assert_frame_equal(first.quarantine, second.quarantine)


def test_corrections_replace_bad_rows_and_broken_lines_once(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    rows = [_inference(0), _inference(1, country="XX"), _inference(2)]
    path = _csv_lines(folder, "a.csv", rows, {2: "p2,c2,broken"})
    before = ingest_inferences(settings, DAY)
    assert _rows_of(before, path) == ([0], [1, 2])

    exported = tmp_path / "fixes.jsonl"
    assert quarantine.export_fixes(before.quarantine, str(exported)) == 1  # broken lines: no record
    fixes = quarantine.read_fixes(str(exported))
    fixes["record"] = fixes["record"].str.replace('"XX"', '"DE"')
    line_fix = json.dumps(_inference(2) | {"score": "0.9"})
    fixes.loc[len(fixes)] = [path, 2, line_fix]
    root = str(tmp_path / "corrections")
    quarantine.add_corrections(root, "inference_log", DAY.isoformat(), fixes)
    stored = quarantine.add_corrections(root, "inference_log", DAY.isoformat(), fixes)
    assert len(stored) == 2  # the same fixes twice are stored once

    after = ingest_inferences(settings, DAY, corrections=stored)

    assert _rows_of(after, path) == ([0, 1, 2], [])
    assert after.valid.set_index("source_row").loc[1, "country"] == "DE"
    assert after.valid.set_index("source_row").loc[2, "score"] == 0.9
    assert conservation(
        landing_files(settings.resolve(settings.landing.inferences), DAY),
        after.valid,
        after.quarantine,
    )["conserved"].all()


def test_read_fixes_names_the_line_without_a_source(tmp_path: Path) -> None:
    path = tmp_path / "fixes.jsonl"
    path.write_text('{"source_file": "a.csv", "source_row": 1, "x": 1}\n{"x": 2}\n')

    with pytest.raises(ValueError, match=r"fixes.jsonl: line 2: needs source_file and source_row"):
        quarantine.read_fixes(str(path))


def test_values_hidden_by_a_failed_coercion_are_checked_and_the_rest_typed(
    settings: Settings, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, "inferences")
    _write(folder, "a.parquet", [_inference(0)])
    csv = _write(
        folder,
        "b.csv",
        [_inference(1, score="n/a"), _inference(2, score="1.7"), _inference(3, score="0.4")],
    )

    result = ingest_inferences(settings, DAY)

    assert result.valid["prediction_id"].tolist() == ["p0", "p3"]
    assert result.valid["score"].dtype == "float64"
    reasons = result.quarantine.set_index("source_row")["check"]
    assert reasons[0] == "coerce_dtype('float64')"
    assert reasons[1] == "less_than_or_equal_to(1.0)"
    assert set(result.quarantine["source_file"]) == {csv}
    result.valid.to_parquet(tmp_path / "written.parquet")  # every column has one Arrow type
