import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from feedback_pipeline.defs.resources import DailyParquetIOManager
from feedback_pipeline.lib import parallel, storage
from feedback_pipeline.lib.settings import InferenceColumns

N = 4000


def _day() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction_id": pd.Series([f"p{i}" for i in range(N)], dtype="string[pyarrow]"),
            "country": pd.Series(["DE", "FR"] * (N // 2), dtype="string[pyarrow]"),
            "status": pd.Categorical(["labeled", "pending"] * (N // 2)),
            "score": np.linspace(0, 1, N),
            "tenure_days": np.arange(N, dtype=float),
        }
    )


def test_distinct_values_are_written_plain_and_repeated_ones_as_a_dictionary(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "day.parquet")
    day = _day().assign(
        sessions=np.arange(N, dtype=float) % 40,  # a count: few values
        served_at=pd.Timestamp("2026-10-02", tz="UTC") + pd.to_timedelta(np.arange(N), "s"),
    )

    storage.write_parquet(day, path)

    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {
        meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)
    }
    # Ids, measured numbers (every score distinct) and times are mostly distinct: plain.
    assert all(
        "RLE_DICTIONARY" not in encodings[c]
        for c in ("prediction_id", "score", "tenure_days", "served_at")
    )
    assert all("RLE_DICTIONARY" in encodings[c] for c in ("country", "status", "sessions"))
    pd.testing.assert_frame_equal(storage.read_parquet(path), day)


def test_a_number_column_is_plain_only_when_nine_in_ten_of_its_first_values_differ() -> None:
    n = 10_000
    frame = pd.DataFrame(
        {
            "just_over": np.concatenate([np.arange(9_001.0), np.zeros(n - 9_001)]),
            "just_under": np.concatenate([np.arange(8_999.0), np.zeros(n - 8_999)]),
            "rate": np.round(np.linspace(0, 1, n), 3),  # 1,001 values
        }
    )

    assert storage.dictionary_columns(frame) == ["just_under", "rate"]


def test_every_part_has_each_column_s_codec_and_another_reader_reads_the_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    path = str(tmp_path / "date=2026-10-02" / "part-0.parquet")

    storage.write_parquet(_day(), path, threads=2)

    lz4 = {"prediction_id", "country", "status"}
    for file in storage.day_files(path):
        meta = pq.ParquetFile(file).metadata
        codecs = {
            (column.path_in_schema, column.compression)
            for g in range(meta.num_row_groups)
            for column in map(meta.row_group(g).column, range(meta.num_columns))
        }
        assert codecs == {(c, "LZ4" if c in lz4 else "UNCOMPRESSED") for c in _day().columns}
    # Not only Arrow: polars reads the day's folder, every row of it.
    other = pl.read_parquet(f"{tmp_path}/date=2026-10-02/*.parquet", hive_partitioning=False)
    assert other.height == N
    assert sorted(other["prediction_id"].to_list()) == sorted(_day()["prediction_id"].tolist())


def test_numbers_and_categories_carry_their_bounds_and_text_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    path = str(tmp_path / "day.parquet")

    storage.write_parquet(_day(), path, threads=2)

    assert len(storage.day_files(path)) == 2
    for file in storage.day_files(path):
        meta = pq.ParquetFile(file).metadata.row_group(0)
        bounds = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(5)}
        assert bounds["prediction_id"] is None and bounds["country"] is None
        assert all(bounds[c] is not None and bounds[c].has_min_max for c in ("score", "status"))
    whole = pq.ParquetFile(path).metadata.row_group(0).column(4).statistics
    assert (whole.min, whole.max) == (0.0, N / 2 - 1)


def test_only_present_reads_the_named_columns_the_file_has(tmp_path: Path) -> None:
    path = str(tmp_path / "day.parquet")
    storage.write_parquet(_day(), path)

    with pytest.raises(Exception, match="thumb"):
        storage.read_parquet(path, ["score", "thumb"])
    read = storage.read_parquet(path, ["score", "thumb"], only_present=True)

    assert read.columns.tolist() == ["score"]


def test_optional_columns_are_read_where_the_file_has_them_and_the_named_ones_always(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "day.parquet")
    storage.write_parquet(_day(), path)

    read = storage.read_parquet(path, ["score"], optional=["thumb", "country"])

    assert read.columns.tolist() == ["score", "country"]
    with pytest.raises(KeyError, match="thumb"):
        storage.read_parquet(path, ["thumb"], optional=["score"])


def _load(tmp_path: Path, metadata: dict, columns: InferenceColumns | None) -> pd.DataFrame:
    import dagster as dg

    storage.write_parquet(_day(), str(tmp_path / "labeled_predictions" / "x.parquet"))
    manager = DailyParquetIOManager(UPath(tmp_path), columns)
    context = dg.build_input_context(definition_metadata=metadata)
    return manager.load_from_path(context, UPath(tmp_path / "labeled_predictions" / "x.parquet"))


def test_an_input_reads_its_optional_columns_where_the_day_has_them(tmp_path: Path) -> None:
    metadata = {"columns": ["score"], "optional_columns": ["thumb", "status"]}

    assert _load(tmp_path, metadata, None).columns.tolist() == ["score", "status"]


def test_an_input_reads_its_columns_and_the_settings_columns_of_its_roles(tmp_path: Path) -> None:
    roles = InferenceColumns(segments=["country"], features=["tenure_days", "not_logged"])
    metadata = {"columns": ["score", "status"], "settings_columns": ["segments", "features"]}

    read = _load(tmp_path, metadata, roles)

    assert read.columns.tolist() == ["score", "status", "country", "tenure_days"]
    pd.testing.assert_frame_equal(read, _day()[read.columns.tolist()])


def test_an_input_without_columns_reads_the_whole_day(tmp_path: Path) -> None:
    pd.testing.assert_frame_equal(_load(tmp_path, {}, None), _day())
    assert _load(tmp_path, {"columns": ["score"]}, None).columns.tolist() == ["score"]


def test_a_day_is_written_one_row_group_at_a_time_and_reads_back_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 1500)
    day = _day().assign(
        note=pd.Series([None] * 1600 + ["late"] * (N - 1600), dtype=object),
        when=pd.date_range("2026-10-01", periods=N, freq="s", tz="UTC"),
    )
    path = str(tmp_path / "day.parquet")

    storage.write_parquet(day, path)

    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    pd.testing.assert_frame_equal(storage.read_parquet(path), day)


def test_an_empty_day_keeps_its_columns(tmp_path: Path) -> None:
    path = str(tmp_path / "day.parquet")

    storage.write_parquet(_day().iloc[:0], path)

    read = storage.read_parquet(path)
    assert read.columns.tolist() == _day().columns.tolist() and read.empty


def test_a_read_day_shares_arrow_memory_and_its_columns_are_replaced_not_written_into(
    tmp_path: Path,
) -> None:
    """Read without a second copy of the day: a float column is Arrow's memory, read-only."""
    path = str(tmp_path / "day.parquet")
    frame = pd.DataFrame({"score": np.linspace(0, 1, 5), "latency": [1.0, None, 3.0, 4.0, 5.0]})
    storage.write_parquet(frame, path)

    read = storage.read_parquet(path)

    pd.testing.assert_frame_equal(read, frame)
    assert not read["score"].to_numpy().flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        read.loc[0, "score"] = 0.5
    read["score"] = read["score"].where(read.index > 0, 0.5)  # the supported way
    assert read["score"].tolist()[0] == 0.5


def _parts(path: str) -> list[str]:
    """The names of the files in the day's folder, temporary ones too."""
    return sorted(p.name for p in Path(path).parent.iterdir())


@pytest.mark.parametrize(("rows", "threads", "files"), [(4000, 2, 2), (4000, 3, 3), (1999, 2, 1)])
def test_a_long_day_is_written_in_parts_side_by_side_and_reads_back_whole_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, threads: int, files: int
) -> None:
    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 700)
    day = _day().iloc[:rows].reset_index(drop=True)
    path = str(tmp_path / "labeled" / "date=2026-10-02" / "part-0.parquet")

    storage.write_parquet(day, path, threads=threads)

    assert len(storage.day_files(path)) == files == len(_parts(path))
    pd.testing.assert_frame_equal(storage.read_parquet(path), day)
    read = storage.read_parquet(path, ["score", "status"], optional=["thumb"])
    pd.testing.assert_frame_equal(read, day[["score", "status"]])
    assert storage.parquet_rows(path) == rows
    # Another Parquet reader reads the day's folder and finds every row.
    assert pq.read_table(str(Path(path).parent)).num_rows == rows
    assert pq.ParquetFile(path).metadata.num_rows < rows or files == 1


@pytest.fixture
def day_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a day is stored, with parts of at least 1000 rows (a ``_day()`` makes two to four)."""
    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    return str(tmp_path / "date=2026-10-02" / "part-0.parquet")


def test_rewriting_a_day_deletes_the_parts_it_no_longer_names(day_path: str) -> None:
    path = day_path
    storage.write_parquet(_day(), path, threads=2)
    first = storage.day_files(path)

    storage.write_parquet(_day(), path, threads=3)
    second = storage.day_files(path)
    assert len(second) == 3 and not set(first[1:]) & set(second)
    assert _parts(path) == sorted(Path(p).name for p in second)

    storage.write_parquet(_day().head(10), path, threads=2)
    assert _parts(path) == ["part-0.parquet"]
    pd.testing.assert_frame_equal(storage.read_parquet(path), _day().head(10))


def test_a_failed_part_leaves_the_previous_day_whole_and_no_files_behind(
    day_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = day_path
    before = _day().assign(score=-1.0)
    storage.write_parquet(before, path, threads=2)
    files = _parts(path)

    class FailsOnTheLastRows(pq.ParquetWriter):
        def write_table(self, table: pa.Table, *args: Any, **kwargs: Any) -> None:
            if table["tenure_days"][0].as_py() >= N // 2:
                raise pa.ArrowInvalid("disk full")
            super().write_table(table, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetWriter", FailsOnTheLastRows)
    with pytest.raises(pa.ArrowInvalid, match="disk full"):
        storage.write_parquet(_day(), path, threads=2)

    assert _parts(path) == files
    pd.testing.assert_frame_equal(storage.read_parquet(path), before)


def test_a_missing_part_is_an_error_naming_it_never_a_missing_day(day_path: str) -> None:
    path = day_path
    storage.write_parquet(_day(), path, threads=2)
    lost = Path(storage.day_files(path)[1])
    lost.unlink()

    with pytest.raises(OSError, match=lost.name) as raised:
        storage.read_parquet(path)
    assert not isinstance(raised.value, FileNotFoundError)


def test_the_io_manager_writes_a_long_day_in_a_part_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    manager = DailyParquetIOManager(UPath(tmp_path))
    path = UPath(tmp_path / "date=2026-10-02" / "part-0.parquet")

    manager.dump_to_path(dg.build_output_context(), _day(), path)

    assert len(storage.day_files(str(path))) == 2
    context = dg.build_input_context(definition_metadata={"columns": ["prediction_id"]})
    pd.testing.assert_frame_equal(manager.load_from_path(context, path), _day()[["prediction_id"]])


def test_rows_at_positions_are_read_in_the_order_asked_across_row_groups_and_parts(
    day_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 700)
    monkeypatch.setattr(storage, "READ_ROWS", 300)  # each group read in slices
    path = day_path
    storage.write_parquet(_day(), path, threads=2)
    positions = np.array([3999, 0, 1999, 2000, 699, 700, 5, 5, 299, 300, 301])

    read = storage.read_rows(path, ["score", "status", "thumb"], positions)

    expected = _day().iloc[positions][["score", "status"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(read, expected)
    assert storage.read_rows(path, ["score"], np.array([], dtype=int)).empty
    with pytest.raises(IndexError, match="4000"):
        storage.read_rows(path, ["score"], np.array([1, N]))


def test_a_text_column_is_read_as_the_codes_of_its_sorted_values(
    day_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 700)
    day = _day()
    # Values first seen in different orders in different row groups and parts; some missing.
    day["country"] = pd.Series(["FR"] * 1000 + ["DE", None, "AT"] * 1000, dtype="string[pyarrow]")
    storage.write_parquet(day, day_path, threads=2)
    assert len(storage.day_files(day_path)) == 2

    codes, values = storage.read_codes(day_path, "country")
    ids, _ = storage.read_codes(day_path, "prediction_id")  # stored without a dictionary

    expected, uniques = pd.factorize(day["country"], sort=True)
    assert values == list(uniques) == ["AT", "DE", "FR"]
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(ids, pd.factorize(day["prediction_id"], sort=True)[0])


def test_a_sample_of_days_reads_the_sampled_rows_of_the_days_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 700)
    root = str(tmp_path)
    days = ["2026-10-01", "2026-10-02", "2026-10-03"]
    first, second = _day(), _day().iloc[:1500].assign(score=lambda f: f["score"] + 1)
    storage.write_parquet(first, storage.partition_path(root, "log", days[0]))
    storage.write_parquet(second, storage.partition_path(root, "log", days[2]))
    both = pd.concat([first, second], ignore_index=True)  # the middle day has no file
    reads: list[int] = []
    real_read_rows = storage.read_rows
    monkeypatch.setattr(
        storage,
        "read_rows",
        lambda path, columns, at: reads.append(len(at)) or real_read_rows(path, columns, at),
    )

    sample = storage.sample_of_days(root, "log", days, ["score", "status", "thumb"], 500, seed=3)

    at = storage.sample_positions(len(both), 500, 3)
    expected = both.iloc[at][["score", "status"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(sample, expected)
    assert sum(reads) == 500 and len(reads) == 2  # only the sampled rows were read
    assert 0 < (sample["score"] > 1).sum() < 500  # from both days
    again = storage.sample_of_days(root, "log", days, ["score", "status"], 500, seed=3)
    pd.testing.assert_frame_equal(again, sample[["score", "status"]])
    other = storage.sample_of_days(root, "log", days, ["score", "status"], 500, seed=4)
    assert not other["score"].equals(sample["score"])


def test_a_sample_of_days_with_fewer_rows_than_asked_is_every_row_in_order(
    tmp_path: Path,
) -> None:
    root = str(tmp_path)
    storage.write_parquet(_day(), storage.partition_path(root, "log", "2026-10-01"))
    storage.write_parquet(_day().iloc[:0], storage.partition_path(root, "log", "2026-10-02"))

    every = storage.sample_of_days(root, "log", ["2026-10-01", "2026-10-02"], ["score"], N + 1)
    none = storage.sample_of_days(root, "log", ["2026-10-02"], ["score", "status"], 10)
    missing = storage.sample_of_days(root, "log", ["2026-09-30"], ["score"], 10)

    pd.testing.assert_frame_equal(every, _day()[["score"]])
    assert none.empty and list(none.columns) == ["score", "status"]
    assert none["status"].dtype == "category"
    assert missing.empty and list(missing.columns) == ["score"]


def test_days_with_different_categories_are_joined_as_categories() -> None:
    def day(kinds: list[str | None], categories: list[str]) -> pd.DataFrame:
        index = pd.Index(categories, dtype=object)
        return pd.DataFrame(
            {"kind": pd.Categorical(kinds, categories=index), "value": range(len(kinds))}
        )

    first, second = day(["thumb", "click"], ["click", "thumb"]), day(["rating", None], ["rating"])
    # Text, as days stored before their kinds were categories have it; numbers are left alone.
    third = pd.DataFrame({"kind": pd.Series(["like", None], dtype="string[pyarrow]"), "value": 9})
    numbers = pd.DataFrame({"kind": [1.0], "value": [9]})

    joined = storage.concat([first, second])

    assert list(joined["kind"].cat.categories) == ["click", "rating", "thumb"]
    assert joined["kind"].tolist() == ["thumb", "click", "rating", np.nan]
    assert joined["value"].tolist() == [0, 1, 0, 1]
    assert list(first["kind"].cat.categories) == ["click", "thumb"]  # the callers' left alone
    assert joined.index.equals(pd.RangeIndex(4))
    with_text = storage.concat([first, third])
    assert list(with_text["kind"].cat.categories) == ["click", "like", "thumb"]
    assert with_text["kind"].cat.categories.dtype == object
    assert with_text["kind"].tolist() == ["thumb", "click", "like", np.nan]
    assert third["kind"].dtype == "string[pyarrow]"
    assert storage.concat([first, numbers])["kind"].dtype == object  # as pandas joins them
    pd.testing.assert_frame_equal(storage.concat([first]), first)


def _labels(day: pd.DataFrame) -> pd.DataFrame:
    """A day's own columns over ``day``: its key, a label and a category."""
    n = len(day)
    return pd.DataFrame(
        {
            "prediction_id": day["prediction_id"],
            "label": np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) % 2),
            "label_status": pd.Categorical(
                ["labeled", "pending", "pending"] * (n // 3) + ["x"] * (n % 3)
            ),
        }
    )


@pytest.fixture
def extended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """An inference-like day in parts, and a day extending it written in parts too."""
    monkeypatch.setattr(storage, "PART_ROWS", 1000)
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 700)
    root = str(tmp_path)
    base = storage.partition_path(root, "inference_log", "2026-10-02")
    path = storage.partition_path(root, "labeled_predictions", "2026-10-02")
    storage.write_parquet(_day(), base, threads=2, rows_key="prediction_id")
    # The whole frame is given, as a step returns it; only the day's own columns are stored.
    storage.write_parquet(
        pd.concat([_day(), _labels(_day()).iloc[:, 1:]], axis=1), path, threads=3, extends=base
    )
    return base, path


def test_a_day_extending_another_stores_only_its_own_columns_and_reads_as_whole(
    extended: tuple[str, str],
) -> None:
    base, path = extended
    whole = pd.concat([_day(), _labels(_day()).iloc[:, 1:]], axis=1)

    assert pq.read_schema(path).names == ["prediction_id", "label", "label_status"]
    assert len(storage.day_files(path)) == 3 and storage.extended_day(path) == base
    assert storage.extended_day(base) is None
    pd.testing.assert_frame_equal(storage.read_parquet(path), whole)
    pd.testing.assert_frame_equal(
        storage.read_parquet(path, ["label", "score", "country"], optional=["thumb"]),
        whole[["label", "score", "country"]],
    )
    pd.testing.assert_frame_equal(storage.read_parquet(path, ["score"]), whole[["score"]])
    assert storage.read_parquet(path, ["label", "thumb"], only_present=True).columns.tolist() == [
        "label"
    ]
    with pytest.raises(KeyError, match="thumb"):
        storage.read_parquet(path, ["label", "thumb"])
    positions = np.array([3999, 0, 1999, 2000, 5, 5, 1333])
    pd.testing.assert_frame_equal(
        storage.read_rows(path, ["score", "label_status", "thumb", "country"], positions),
        whole.iloc[positions][["score", "label_status", "country"]].reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(
        storage.read_rows(path, ["score"], positions),
        whole.iloc[positions][["score"]].reset_index(drop=True),
    )
    codes, values = storage.read_codes(path, "country")
    assert values == ["DE", "FR"]
    np.testing.assert_array_equal(codes, pd.factorize(whole["country"], sort=True)[0])
    assert storage.parquet_rows(path) == N


def test_a_day_extending_one_written_again_finds_its_rows_by_key(
    extended: tuple[str, str],
) -> None:
    base, path = extended
    before = storage.read_parquet(path)
    # Written again with the same rows, other values: still paired by position.
    storage.write_parquet(_day().assign(score=2.0), base, threads=2, rows_key="prediction_id")
    assert storage._link(path).rows() is None  # pyright: ignore[reportOptionalMemberAccess]
    assert (storage.read_parquet(path, ["score"])["score"] == 2.0).all()
    # Written again in another order, with a row gone and one more: rows are found by id.
    again = _day().iloc[::-1].reset_index(drop=True)
    again = pd.concat([again.iloc[1:], _day().iloc[:1].assign(prediction_id="new")])
    storage.write_parquet(again.reset_index(drop=True), base, threads=2, rows_key="prediction_id")
    assert storage._link(path).rows() is not None  # pyright: ignore[reportOptionalMemberAccess]

    read = storage.read_parquet(path)

    gone = before["prediction_id"] == _day()["prediction_id"].iloc[-1]
    pd.testing.assert_frame_equal(
        read[~gone].reset_index(drop=True), before[~gone].reset_index(drop=True)
    )
    # The row the day no longer has keeps its own columns, and lacks the day's.
    assert read.loc[gone, ["score", "country"]].isna().all(axis=None)
    own = ["prediction_id", "label", "label_status"]
    pd.testing.assert_frame_equal(read.loc[gone, own], before.loc[gone, own])
    positions = np.array([N - 1, 0, 7])
    rows = storage.read_rows(path, ["score", "label"], positions)
    assert np.isnan(rows["score"].iloc[0])
    pd.testing.assert_frame_equal(
        rows.iloc[1:].reset_index(drop=True),
        before.iloc[positions[1:]][["score", "label"]].reset_index(drop=True),
    )
    codes, values = storage.read_codes(path, "country")
    assert codes[-1] == -1 and [values[c] for c in codes[:-1]] == list(before["country"][:-1])


def test_a_day_whose_rows_are_not_those_of_the_day_it_extends_is_refused(
    extended: tuple[str, str],
) -> None:
    base, path = extended
    shuffled = _labels(_day()).iloc[::-1].reset_index(drop=True)

    with pytest.raises(ValueError, match="not those of"):
        storage.write_parquet(shuffled, path, extends=base)
    with pytest.raises(ValueError, match="not those of"):
        storage.write_parquet(_labels(_day()).head(10), path, extends=base)
    with pytest.raises(FileNotFoundError):
        storage.write_parquet(_labels(_day()), path, extends=base.replace("10-02", "10-03"))
    # The day written before is still there, whole.
    assert storage.read_parquet(path, ["label", "score"]).shape == (N, 2)


def test_a_fingerprint_follows_the_values_in_order_not_their_chunks() -> None:
    ids = pd.Series([f"p{i}" for i in range(1000)], dtype="string[pyarrow]")
    chunked = pd.Series(
        pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(ids[:300]), pa.array(ids[300:])]))
    )

    assert storage.fingerprint(ids) == storage.fingerprint(chunked)
    assert storage.fingerprint(ids) == storage.fingerprint(ids.astype(object))
    assert storage.fingerprint(ids.iloc[5:]) == storage.fingerprint(ids.iloc[5:].copy())
    assert storage.fingerprint(ids) != storage.fingerprint(ids.iloc[::-1])
    assert storage.fingerprint(ids) != storage.fingerprint(ids.replace("p7", "p77"))
    # The same bytes split into other values differ.
    assert storage.fingerprint(pd.Series(["ab", "c"])) != storage.fingerprint(
        pd.Series(["a", "bc"])
    )


def test_a_fingerprint_does_not_change_with_its_blocks_or_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blocks of 64 values, over chunks that straddle them."""
    monkeypatch.setattr(storage, "FINGERPRINT_BLOCK", 64)
    ids = pd.Series([f"p{i}" * (i % 4) for i in range(1000)], dtype="string[pyarrow]")
    cuts = [0, 1, 63, 64, 65, 500, 999, 1000]
    chunked = pd.Series(
        pd.arrays.ArrowStringArray(
            pa.chunked_array([pa.array(ids[a:b]) for a, b in itertools.pairwise(cuts)])
        )
    )
    one = storage.fingerprint(ids)

    assert one.startswith("1000:sha256:")
    assert storage.fingerprint(chunked) == one
    assert storage.fingerprint(chunked.iloc[1:]) == storage.fingerprint(ids.iloc[1:].copy())
    # Two values swapped in a late block, or one byte moved between blocks, are seen.
    swapped = ids.copy()
    swapped.iloc[[900, 901]] = ids.iloc[[901, 900]].to_numpy()
    assert storage.fingerprint(swapped) != one
    moved = ids.copy()
    moved.iloc[63], moved.iloc[64] = ids.iloc[63] + "x", ids.iloc[64][:-1] or "x"
    assert storage.fingerprint(moved) != one
    assert storage.fingerprint(pd.Series([], dtype="string[pyarrow]")).startswith("0:sha256:")


def test_a_fingerprint_stored_by_earlier_versions_is_matched_in_its_own_form() -> None:
    """Days written before fingerprints were SHA-256 blocks keep being extended."""
    ids = pd.Series([f"p{i}" for i in range(1000)], dtype="string[pyarrow]")
    legacy = "1000:cbaf6fbd68a7cfffbec11bc9ff292af8"  # as the earlier BLAKE2b digest gave it

    assert storage.fingerprint(ids, like=legacy) == legacy
    assert storage.fingerprint(ids.iloc[::-1], like=legacy) != legacy
    empty = pd.Series(["", ""], dtype="string[pyarrow]")
    assert storage.fingerprint(empty, like=legacy) != storage.fingerprint(empty[:1], like=legacy)
    assert storage.fingerprint(ids, like=storage.fingerprint(ids)) == storage.fingerprint(ids)


def test_a_day_fingerprinted_by_an_earlier_version_can_still_be_extended(
    extended: tuple[str, str],
) -> None:
    base, path = extended
    ids = storage.read_parquet(base, ["prediction_id"])["prediction_id"]  # every part's
    table = pq.read_table(base)  # the day's first file, which holds the fingerprint
    metadata = dict(table.schema.metadata)
    metadata[storage.ROWS_KEY] = storage.fingerprint(ids, like="0:0").encode()
    pq.write_table(table.replace_schema_metadata(metadata), base, compression="lz4")

    storage.write_parquet(
        pd.concat([_day(), _labels(_day()).iloc[:, 1:]], axis=1), path, extends=base
    )

    read = storage.read_parquet(path, ["prediction_id", "score", "label"])
    assert read["score"].tolist() == _day()["score"].tolist()
    assert read["label"].equals(_labels(_day())["label"])
    with pytest.raises(ValueError, match="not those of"):
        storage.write_parquet(_labels(_day()).iloc[::-1].reset_index(drop=True), path, extends=base)


def test_a_day_holds_its_keys_by_the_fingerprint_it_stores(
    extended: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = extended
    ids = _day()["prediction_id"]
    changed = ids.copy()
    changed.iloc[1500] = "p-other"

    assert storage.holds_keys(base, ids)
    assert not storage.holds_keys(base, ids.iloc[::-1])  # the same ids in another order
    assert not storage.holds_keys(base, changed)
    assert not storage.holds_keys(base, ids.iloc[:-1])
    unmarked = str(tmp_path / "unmarked.parquet")  # written without ``rows_key``
    storage.write_parquet(_day(), unmarked)
    assert not storage.holds_keys(unmarked, ids)


def test_the_columns_written_uncompressed_are_the_floating_point_ones_and_times(
    tmp_path: Path,
) -> None:
    frame = _day().assign(
        at=pd.date_range("2026-10-02", periods=N, freq="s", tz="UTC"),
        n=pd.array(np.arange(N), dtype="Int64"),
    )
    path = str(tmp_path / "day.parquet")
    storage.write_parquet(frame, path)

    group = pq.ParquetFile(path).metadata.row_group(0)
    codecs = {group.column(i).path_in_schema: group.column(i).compression for i in range(7)}
    assert codecs == {
        "prediction_id": "LZ4",
        "country": "LZ4",
        "status": "LZ4",
        "score": "UNCOMPRESSED",
        "tenure_days": "UNCOMPRESSED",
        "at": "UNCOMPRESSED",
        "n": "LZ4",
    }
    assert storage.read_parquet(path).equals(frame)
