"""Reading landing files as delivered: every format, broken lines kept, corrections applied.

A landing file is Parquet, CSV or JSON Lines, on a local path or any fsspec URL. CSV and JSON
values are kept as written (strings) so that validation, not the reader, decides what is wrong. A
line that cannot be parsed (a CSV line with the wrong number of fields, a JSON line that is not an
object) is kept as a broken record with its row number; a file that cannot be read at all raises.
Rows are numbered from 0 in the order of the file's records.
"""

import csv
import datetime as dt
import io
import json
from collections.abc import Collection
from dataclasses import dataclass

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from feedback_pipeline.lib.memory import release_arrow


def _arrow_strings(arrow_type: pa.DataType) -> object:
    """Reads Arrow strings as pandas' Arrow-backed strings: no copy into Python objects."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
BROKEN_COLUMNS = ["row", "text", "error"]


@dataclass(frozen=True)
class LandingFile:
    """The parsed records of one file (indexed by row number) and its unparsable lines."""

    path: str
    rows: pd.DataFrame
    broken: pd.DataFrame

    @property
    def rows_in(self) -> int:
        """Every record the file holds, parsable or not."""
        return len(self.rows) + len(self.broken)


def landing_files(root: str, day: dt.date) -> list[str]:
    """Every file in the day's landing folder, in name order; an absent folder has none."""
    fs, path = fsspec.core.url_to_fs(f"{root}/date={day:%Y-%m-%d}")
    if not fs.exists(path):
        return []
    protocol = "" if "://" not in root else root.split("://", 1)[0] + "://"
    # Files in sub-folders (an hour=... layout) belong to the day too.
    names = (p for p in fs.find(path) if ".tmp-" not in p)
    return sorted(protocol + p for p in names)


def file_format(path: str) -> str:
    """The format of a landing file, from its extension."""
    name = path.rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in FORMATS:
        raise ValueError(f"unsupported file type {suffix or '(none)'!r}")
    return FORMATS[suffix]


def read_landing_file(path: str, columns: list[str] | None = None) -> LandingFile:
    """Reads one landing file; raises if the file as a whole cannot be read."""
    fmt = file_format(path)
    fs, location = fsspec.core.url_to_fs(path)
    if fs.size(location) == 0:
        raise ValueError("the file is empty")
    if fmt == "parquet":
        with fs.open(location, "rb") as handle:
            table = pq.read_table(handle, columns=columns)
        # Consolidated by Arrow on the way in, so later concatenation and takes copy block-wise.
        rows = table.to_pandas(types_mapper=_arrow_strings)
        return LandingFile(path, rows, pd.DataFrame(columns=BROKEN_COLUMNS))
    blob = fs.cat_file(location)
    if not blob.strip():
        raise ValueError("the file is empty")
    reader = _read_csv if fmt == "csv" else _read_jsonl
    return LandingFile(path, *reader(blob))


def read_parquet_table(path: str, dictionary: Collection[str] = ()) -> pa.Table:
    """A Parquet landing file as an Arrow table (days of many parts are joined before pandas).

    The string columns named in ``dictionary`` (few distinct values, such as a segment) are read
    dictionary-encoded, as Parquet stores them: no string is copied per row.
    """
    fs, location = fsspec.core.url_to_fs(path)
    if fs.size(location) == 0:
        raise ValueError("the file is empty")
    encoded = list(dictionary) or None
    if isinstance(fs, LocalFileSystem):  # mapped: its pages are read in place, not copied first
        with pa.memory_map(location) as mapped:
            return pq.read_table(mapped, read_dictionary=encoded)
    with fs.open(location, "rb") as handle:
        return pq.read_table(handle, read_dictionary=encoded)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas, strings staying Arrow-backed, dictionaries becoming categories.

    The table is used up: each column's memory is released as pandas takes it over, and a column
    Arrow can share is not copied (it is then read-only).
    """
    frame = table.to_pandas(types_mapper=_arrow_strings, split_blocks=True, self_destruct=True)
    release_arrow()  # the columns pandas copied (see ``memory.release_arrow``)
    return frame


def read_file(path: str) -> pd.DataFrame:
    """The parsed records of one landing file."""
    return read_landing_file(path).rows


def _read_csv(blob: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    header = next(csv.reader(io.StringIO(blob.split(b"\n", 1)[0].decode("utf-8-sig"))))
    broken: list[dict] = []

    def keep_broken(row: pa_csv.InvalidRow) -> str:
        # Line 1 is the header, so data record n (from 0) is on line n + 2.
        broken.append(
            {
                "row": row.number - 2,
                "text": row.text,
                "error": "wrong number of fields"
                f" (expected {row.expected_columns}, got {row.actual_columns})",
            }
        )
        return "skip"

    table = pa_csv.read_csv(
        pa.BufferReader(blob),
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=keep_broken),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
        ),
    )
    rows = table.to_pandas(types_mapper=_arrow_strings)
    skipped = sorted(b["row"] for b in broken)
    rows.index = _surviving_rows(len(rows) + len(skipped), skipped)
    return rows, pd.DataFrame(broken, columns=BROKEN_COLUMNS)


def _read_jsonl(blob: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    text = blob.decode("utf-8-sig")
    try:
        return (
            pd.read_json(io.StringIO(text), lines=True, dtype=False, convert_dates=False),
            pd.DataFrame(columns=BROKEN_COLUMNS),
        )
    except (ValueError, AttributeError, TypeError):
        pass  # some line is not a JSON object: parse line by line to keep the good ones
    records, numbers, broken = [], [], []
    # Lines end at "\n" (and "\r\n") only: U+2028 and friends inside a value are not breaks.
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    for number, line in enumerate(line for line in lines if line.strip()):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            records.append(record)
            numbers.append(number)
        except ValueError as exc:
            broken.append({"row": number, "text": line[:500], "error": f"not a JSON object: {exc}"})
    return pd.DataFrame(records, index=numbers), pd.DataFrame(broken, columns=BROKEN_COLUMNS)


def _surviving_rows(total: int, skipped: list[int]) -> pd.Index:
    keep = pd.Index(range(total))
    return keep.difference(pd.Index(skipped)) if skipped else keep


def apply_corrections(landing: LandingFile, corrections: pd.DataFrame) -> LandingFile:
    """Replaces records by their corrected versions (``source_row`` and a JSON ``record``)."""
    fixes = corrections[corrections["source_file"] == landing.path]
    if fixes.empty:
        return landing
    rows = landing.rows.astype(object)
    for row, record in zip(fixes["source_row"], fixes["record"], strict=True):
        values = json.loads(record)
        rows.loc[int(row), list(values)] = list(values.values())
    broken = landing.broken[~landing.broken["row"].isin(fixes["source_row"].astype(int))]
    return LandingFile(landing.path, rows.sort_index(), broken)
