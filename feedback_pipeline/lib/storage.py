"""Where the pipeline keeps its files, and how it writes them without ever leaving half a file.

Every dataset is laid out by day: ``<root>/<name>/date=YYYY-MM-DD/part-0.parquet``. Roots are local
paths or fsspec URLs.
"""

import datetime as dt
import uuid
from collections.abc import Callable, Collection
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def days_before(day: dt.date, count: int) -> list[str]:
    """The ``count`` days before ``day``, oldest first, as partition keys."""
    return [(day - dt.timedelta(days=i)).isoformat() for i in range(count, 0, -1)]


def day_end(day: dt.date | str) -> pd.Timestamp:
    """The first instant after a day, in UTC."""
    return pd.Timestamp(str(day), tz="UTC") + pd.Timedelta(days=1)


def partition_path(root: str, name: str, day: dt.date | str) -> str:
    """The Parquet file of one day of one dataset."""
    day = day if isinstance(day, str) else day.isoformat()
    return f"{root}/{name}/date={day}/part-0.parquet"


def materialized_days(root: str, name: str) -> list[str]:
    """The days of a dataset whose file is in place, in order.

    A killed first write of a day leaves only a temporary file: that day is not listed.
    """
    fs, path = fsspec.core.url_to_fs(f"{root}/{name}")
    files = fs.glob(f"{path}/date=*/part-0.parquet")
    return sorted(p.rsplit("date=", 1)[-1].split("/", 1)[0] for p in files)


# Rows looked at to judge whether a text column repeats its values.
_DICTIONARY_PROBE = 10_000


def dictionary_columns(frame: pd.DataFrame) -> list[str]:
    """The columns worth dictionary-encoding: all but text whose values are mostly distinct.

    Ids and free text do not repeat: encoding them as a dictionary costs time on the way out and
    several times more on the way in, for nothing (Arrow gives up on the dictionary part-way).
    """
    out = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_string_dtype(column.dtype) and not isinstance(
            column.dtype, pd.CategoricalDtype
        ):
            head = column.iloc[:_DICTIONARY_PROBE]
            if len(head) and head.nunique() > len(head) // 2:
                continue
        out.append(str(name))
    return out


# Rows converted to Arrow and written at a time: one Parquet row group each.
ROW_GROUP_ROWS = 1 << 20


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Writes to a temporary name beside the target, then renames it into place.

    The frame goes to Arrow one row group at a time: converting a whole wide day at once would
    hold a second copy of it in memory while it is written.
    """
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    encoded = dictionary_columns(frame)

    def write(handle: Any) -> None:
        with pq.ParquetWriter(handle, schema, use_dictionary=encoded) as writer:  # pyright: ignore[reportArgumentType]
            for start in range(0, max(len(frame), 1), ROW_GROUP_ROWS):
                part = frame.iloc[start : start + ROW_GROUP_ROWS]
                writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))

    _write_atomically(path, write)


def write_bytes(data: bytes, path: str) -> None:
    """Writes a whole file atomically: a crash leaves the previous file, never part of a new one."""
    _write_atomically(path, lambda handle: handle.write(data))


def _write_atomically(path: str, write: Callable[[Any], object]) -> None:
    fs, target = fsspec.core.url_to_fs(path)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(temporary, "wb") as handle:
            write(handle)
        fs.mv(temporary, target)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)


def read_parquet(
    path: str,
    columns: list[str] | None = None,
    *,
    only_present: bool = False,
    optional: Collection[str] = (),
) -> pd.DataFrame:
    """Reads one Parquet file, or raises FileNotFoundError.

    Args:
        path: the file.
        columns: the columns to read (default: all).
        only_present: read those of ``columns`` the file has, rather than fail on the others.
        optional: more columns to read with ``columns``, those of them the file has.

    Returns:
        The frame. A numeric column without missing values shares Arrow's memory and is
        read-only: replace a column (``frame[name] = ...``) rather than write into it.
    """
    fs, target = fsspec.core.url_to_fs(path)
    if not fs.exists(target):
        raise FileNotFoundError(path)
    with fs.open(target, "rb") as handle:
        source = pq.ParquetFile(handle)
        if columns is not None:
            present = set(source.schema_arrow.names)
            if not only_present and not present.issuperset(columns):
                missing = [c for c in columns if c not in present]
                raise KeyError(f"{path} has no column {', '.join(missing)}")
            columns = [c for c in [*columns, *optional] if c in present]
        table = source.read(columns=columns)
    # Text columns (pandas' string type) come back Arrow-backed, as the validated frames have
    # them; by default pandas rebuilds them as Python objects, the slowest part of reading a day.
    # The table is used up as pandas takes it over, column by column, and a column pandas can
    # share is not copied: a day is never held twice, as Arrow and as one block of pandas floats.
    with pd.option_context("mode.string_storage", "pyarrow"):
        return table.to_pandas(split_blocks=True, self_destruct=True)


def columns_of_days(root: str, name: str, days: list[str], columns: list[str]) -> pd.DataFrame:
    """Some columns of several day partitions (days without a file are skipped)."""
    frames = []
    for day in days:
        try:
            frames.append(read_parquet(partition_path(root, name, day), columns=columns))
        except FileNotFoundError:
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def parquet_rows(path: str) -> int:
    """The rows of one Parquet file, from its footer alone; FileNotFoundError if it is missing."""
    fs, target = fsspec.core.url_to_fs(path)
    if not fs.exists(target):
        raise FileNotFoundError(path)
    with fs.open(target, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def row_counts(root: str, name: str, days: list[str]) -> dict[str, int]:
    """Rows per existing day partition, from the Parquet footers alone."""
    counts = {}
    for day in days:
        try:
            counts[day] = parquet_rows(partition_path(root, name, day))
        except FileNotFoundError:
            continue
    return counts
