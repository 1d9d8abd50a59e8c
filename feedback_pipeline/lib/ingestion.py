"""Turning a day of landing files into validated rows, with every rejected row explained.

Each file is read on its own (see ``landing``), its columns renamed from the user's names and its
timestamps made UTC (naive ones are taken as UTC). A file that cannot be read is quarantined whole
and the day goes on. The rows are validated lazily by the pandera contract; rows that fail, lines
that could not be parsed and repeats of an id (within the day or from earlier days) are
quarantined with file, row and reason, and the original record so that they can be replayed.

Text columns of few values (model name and version, segments, categorical features; a feedback's
kind and source) are read from Parquet as categories and checked as such, which compares a
handful of categories instead of every string. The valid rows have them as categories whatever
the files were (their values sorted, those of no valid row left out): a day of 10M predictions
then holds a byte per row for each rather than its string, a gigabyte less in every step that
reads the day. Every other text column is Arrow-backed text.
"""

import copy
import datetime as dt
import json
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc

from feedback_pipeline.lib import ids as ids_
from feedback_pipeline.lib.landing import (
    LandingFile,
    apply_corrections,
    file_format,
    landing_files,
    read_landing_file,
    read_parquet_table,
    to_frame,
)
from feedback_pipeline.lib.memory import release_arrow
from feedback_pipeline.lib.parallel import default_workers
from feedback_pipeline.lib.schemas import (
    ROW_CHECK_COLUMNS,
    ROW_CHECK_INPUTS,
    TEXT,
    arrow_text,
    feedback_schema,
    inference_schema,
)
from feedback_pipeline.lib.settings import Settings
from feedback_pipeline.lib.storage import concat, day_end, parquet_rows

QUARANTINE_COLUMNS = [
    "source_file",
    "source_row",
    "column",
    "check",
    "value",
    "reason",
    "message",
    "record",
]
FILE_ROW = "source_file"
ROW_NUMBER = "source_row"
FILE_COLUMNS = ["file", "rows_in", "readable", "ignored_columns"]
UNREADABLE = "unreadable_file"  # the quarantine's check for a file that could not be read


@dataclass(frozen=True)
class IngestResult:
    """A day's valid rows, its quarantine, and the row counts per file."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    files: pd.DataFrame

    @property
    def top_reasons(self) -> dict[str, int]:
        """The most frequent quarantine reasons (column and check) with their counts."""
        if self.quarantine.empty:
            return {}
        keys = self.quarantine["column"].fillna("file") + ": " + self.quarantine["check"]
        return {str(k): int(v) for k, v in keys.value_counts().head(10).items()}


_OFFSET = r"(?:[Zz]|[+-]\d{2}:?\d{2})\s*$"


def to_utc(values: pd.Series) -> pd.Series:
    """Parses timestamps to UTC: naive ones are UTC, unparsable ones become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype("string").str.strip()
    # Naive and offset strings are parsed apart: one shared parse would apply an offset to both.
    with_offset = text.str.contains(_OFFSET, regex=True, na=False)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    for mask in (with_offset, ~with_offset):
        if mask.any():
            parsed[mask] = pd.to_datetime(text[mask], utc=True, errors="coerce", format="ISO8601")
    return parsed


def ingest(
    paths: list[str],
    mapping: dict[str, str | None],
    schema: pa.DataFrameSchema,
    *,
    id_column: str,
    prepare: Callable[[pd.DataFrame], None] | None = None,
    seen_ids: pd.Index | None = None,
    corrections: pd.DataFrame | None = None,
    optional: dict[str, str] | None = None,
    categories: Collection[str] = (),
) -> IngestResult:
    """Reads, maps, validates and de-duplicates the files of one day.

    Args:
        paths: the landing files of the day.
        mapping: canonical column name to the user's column name (None: not present).
        schema: the pandera contract of the canonical frame.
        id_column: the column whose repeats are quarantined as duplicates (first one wins).
        prepare: derives columns (such as the predicted label) in place after renaming.
        seen_ids: ids ingested on earlier days; a row repeating one is a duplicate.
        corrections: fixed records (``source_file``, ``source_row``, JSON ``record``) that replace
            the originals before validation, so replayed rows are neither lost nor doubled.
        optional: canonical columns a file may lack, with their Arrow type: a file without one
            gets it as nulls instead of being quarantined whole.
        categories: canonical text columns of few distinct values (versions, segments): Parquet
            files' are read and checked as categories, and the valid rows have them as
            categories (``to_categories``), whatever the files were.
    """
    parts, tables, quarantined, counts = [], [], [], []
    rename = {n: c for c, n in mapping.items() if n}
    dictionary = [name for c in categories if (name := mapping.get(c))]
    for path in paths:
        as_table = path.lower().endswith(".parquet") and not _has_fixes(corrections, path)
        try:
            table = read_parquet_table(path, dictionary) if as_table else None
            landing = None if as_table else read_landing_file(path)
        except Exception as exc:  # any unreadable file is quarantined, not fatal
            quarantined.append(_file_row(path, UNREADABLE, f"{type(exc).__name__}: {exc}"))
            counts.append({"file": path, "rows_in": None, "readable": False})
            continue
        if landing is not None and corrections is not None:
            landing = apply_corrections(landing, corrections)
        for canonical, kind in (optional or {}).items():
            name = mapping.get(canonical)
            present = table.column_names if table is not None else landing.rows.columns  # type: ignore[union-attr]
            if name and name not in present:
                if table is not None:
                    table = table.append_column(name, pa_arrow.nulls(table.num_rows, kind))
                elif landing is not None:
                    landing.rows[name] = None
        if table is not None:
            columns, n_in = table.column_names, table.num_rows
        else:
            assert landing is not None
            columns, n_in = list(landing.rows.columns), landing.rows_in
        ignored = [c for c in columns if rename.get(c, c) not in schema.columns]
        counts.append({"file": path, "rows_in": n_in, "readable": True, "ignored_columns": ignored})
        if landing is not None:
            quarantined.append(_broken_rows(landing))
        missing = [n for c, n in mapping.items() if n and n not in columns and c in schema.columns]
        if missing:
            whole = landing or LandingFile(path, to_frame(table), pd.DataFrame(columns=["row"]))
            quarantined.append(_whole_file(whole, f"missing column(s) {missing}"))
            continue
        kept = [c for c in columns if c not in ignored]
        if table is not None:
            # Parquet parts stay in Arrow and are joined there: no pandas copy per part.
            table = table.select(kept).rename_columns([rename.get(c, c) for c in kept])
            table = table.append_column(ROW_NUMBER, pa_arrow.array(np.arange(table.num_rows)))
            tables.append(
                table.append_column(
                    FILE_ROW, pa_arrow.array(np.full(table.num_rows, len(counts) - 1, np.int32))
                )
            )
            del table  # the list alone holds the part, so converting it releases its memory
            continue
        parts += _flush(tables)
        assert landing is not None
        rows = landing.rows[kept]
        rows.columns = [rename.get(c, c) for c in kept]
        rows[ROW_NUMBER] = rows.index
        rows[FILE_ROW] = np.int32(len(counts) - 1)
        parts.append(rows)
    parts += _flush(tables)
    files = pd.DataFrame(counts, columns=FILE_COLUMNS)
    frame = _combine(parts, schema, files["file"].tolist())
    records = _Records(frame, {c: n for c, n in mapping.items() if n})
    frame["timestamp"] = to_utc(frame["timestamp"])
    if prepare is not None:
        prepare(frame)
    read_as_categories = _text_as_categories(frame, schema)
    cases = _validate(frame, schema, read_as_categories)
    bad = _reasons(frame, cases, records)
    passed = ~frame.index.isin(cases["index"].unique() if len(cases) else [])
    repeated, repeats = _duplicates(frame, passed, id_column, seen_ids, records)
    keep = passed & ~repeated
    valid = _take_rows(frame, keep)
    for name in categories:
        if name in valid:
            valid[name] = to_categories(valid[name])
    quarantine = _finish_quarantine([*quarantined, bad, repeats])
    return IngestResult(
        valid=valid, quarantine=quarantine, files=_per_file(files, valid, quarantine)
    )


def _take_rows(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The kept rows in fresh columns (Parquet columns may be read-only views of Arrow memory).

    They are taken a column at a time, a thread per core (NumPy and Arrow let go of Python's
    lock while they filter, and the new columns' pages are first touched side by side), and
    each column of the frame is let go once taken: memory holds the frame and a column per
    thread rather than two frames. The frame is left empty. A mask, not positions: Arrow then
    filters each chunk instead of joining the chunks first.
    """
    arrays = {name: frame.pop(name).array for name in list(frame.columns)}

    def take(name: str) -> Any:
        taken = arrays[name][keep]
        arrays[name] = None  # the only reference left: the column's memory goes now
        return taken

    names, workers, columns = list(arrays), default_workers(), {}
    with ThreadPoolExecutor(workers) as pool:
        # A column per thread at a time, Arrow's pool handing back the columns let go after
        # each round (``memory.release_arrow``): without it, the 10M inference step peaked
        # 1.7 GiB higher.
        for start in range(0, len(names), workers):
            round_ = names[start : start + workers]
            columns |= dict(zip(round_, pool.map(take, round_), strict=True))
            release_arrow()
    return pd.DataFrame(columns, index=pd.RangeIndex(int(keep.sum())), copy=False)


def _has_fixes(corrections: pd.DataFrame | None, path: str) -> bool:
    return corrections is not None and bool((corrections["source_file"] == path).any())


def _flush(tables: list) -> list[pd.DataFrame]:
    """Consecutive Parquet parts as one frame (or one frame each if their schemas differ)."""
    if not tables:
        return []
    try:
        joined = [pa_arrow.concat_tables(tables, promote_options="permissive")]
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowTypeError):
        joined = list(tables)
    tables.clear()  # the joined tables alone hold the parts: converting them releases them
    return [to_frame(t) for t in joined]


def _combine(parts: list[pd.DataFrame], schema: pa.DataFrameSchema, paths: list[str]):
    """One frame of every file's rows; the file is a categorical of the day's paths."""
    if not parts:
        return pd.DataFrame(columns=[*schema.columns, FILE_ROW, ROW_NUMBER])
    # Parts of differing categories (or text, from CSV) keep the union of them as categories.
    frame = parts[0] if len(parts) == 1 else concat(parts)
    frame.index = pd.RangeIndex(len(frame))
    frame[FILE_ROW] = pd.Categorical.from_codes(
        frame[FILE_ROW].to_numpy(), categories=pd.Index(paths)
    )
    return frame


class _Records:
    """The rows as the user's files had them, as JSON, built only for the rows that need one."""

    def __init__(self, frame: pd.DataFrame, mapping: dict[str, str]) -> None:
        self.frame = frame
        self.names = {c: n for c, n in mapping.items() if c in frame.columns}
        self.names |= {
            c: c for c in frame.columns if c not in mapping and c not in (FILE_ROW, ROW_NUMBER)
        }
        # Kept before parsing, so a quarantined row shows the timestamp as it was written.
        self.timestamps = frame.get("timestamp")

    def json(self, index: pd.Index) -> list[str]:
        """The records of the given rows of the frame."""
        if not len(index):
            return []
        rows = rows_at(self.frame, index, list(self.names))
        if self.timestamps is not None:
            rows["timestamp"] = rows_at(self.timestamps.to_frame(), index)["timestamp"]
        return json_lines(rows.rename(columns=self.names))

    def written_timestamp(self, index: int) -> str | None:
        """The timestamp of one row as written in its file (None if it was empty)."""
        written = None if self.timestamps is None else self.timestamps.loc[index]
        return None if written is None or bool(pd.isna(written)) else str(written)


def json_lines(rows: pd.DataFrame) -> list[str]:
    """Each row as a JSON object: missing values (NaN, NaT, NA, infinities) are null.

    Times are ISO 8601 to the millisecond, in UTC (``Z``) if they have a time zone, and numbers
    have up to 15 significant digits. The times are made text first, all at once: pandas turns
    each into a ``Timestamp`` to write it, a third of the time of 100k quarantined rows of 35
    columns (1.25 s instead of 1.81 s). polars writes JSON faster still, but the memory it
    keeps afterwards raised the 10M night's peak by 0.7 GiB, over its target.
    """
    if rows.empty:
        return []
    rows = rows.copy(deep=False)
    for name, column in rows.items():
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            rows[name] = _iso(column)
    text = rows.to_json(
        orient="records",
        lines=True,
        date_format="iso",
        double_precision=15,
        force_ascii=False,
    )
    # Records end at "\n" only: U+2028 and friends inside a value are not line breaks.
    return text.rstrip("\n").split("\n")


def _iso(times: pd.Series) -> pd.Series:
    """Times as ISO 8601 text to the millisecond, ending in ``Z`` if in a time zone (UTC)."""
    zoned = isinstance(times.dtype, pd.DatetimeTZDtype)
    values = (times.dt.tz_convert("UTC").dt.tz_localize(None) if zoned else times).to_numpy()
    text = np.datetime_as_string(values.astype("datetime64[ms]"), unit="ms").astype(object)
    if zoned:
        text = text + "Z"
    text[np.isnat(values)] = None
    return pd.Series(text, index=times.index, dtype=object)


def _json(record: dict) -> str:
    """A record as JSON; missing values (NaN, NaT, NA) become null."""
    plain = {k: None if pd.api.types.is_scalar(v) and pd.isna(v) else v for k, v in record.items()}
    return json.dumps(plain, default=str, ensure_ascii=False)


_RECHECK = ("coerce_dtype", "dtype(")


def _row_cases(exc: pa_errors.SchemaErrors) -> pd.DataFrame:
    cases = exc.failure_cases
    row_cases = cases[cases["index"].notna()]
    if row_cases.empty:
        raise exc
    # As plain values, like the row checks' cases (which have none): a failing category is text.
    return row_cases.astype({"failure_case": object})


def _text_as_categories(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> list[str]:
    """Text columns that arrived as categories of strings (read from Parquet dictionaries).

    They are checked as categories, which compares a few categories instead of every string.
    """
    text = str(pa.Column(TEXT).dtype)
    return [
        name
        for name, column in schema.columns.items()
        if name in frame and str(column.dtype) == text and _string_categories(frame[name])
    ]


def _string_categories(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) and (
        values.cat.categories.inferred_type in ("string", "empty")
    )


def to_categories(values: pd.Series) -> pd.Series:
    """Text (or categories of text) as categories of its values, sorted, each value used.

    The categories are plain strings, as Parquet gives them back: a frame stored and read
    again is the frame that was stored.
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")  # Arrow-backed text: factorized by Arrow
    # The categories used, marked by their codes (a missing value's -1 marks the extra slot):
    # pandas' ``remove_unused_categories`` sorts the codes to find them, 0.45 s per 10M rows.
    present = np.zeros(len(values.cat.categories) + 1, dtype=bool)
    present[values.cat.codes.to_numpy()] = True
    used = values.cat.categories[present[:-1]]
    return values.cat.set_categories(pd.Index(sorted(used), dtype=object))


def _coerce_only_what_differs(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, as_categories: list[str]
) -> pa.DataFrameSchema:
    """The schema, coercing only columns not already of their type (each coercion copies)."""
    typed = {
        name: {"coerce": str(frame[name].dtype) != str(column.dtype)}
        for name, column in schema.columns.items()
        if name in frame
    }
    typed |= {name: {"dtype": frame[name].dtype, "coerce": False} for name in as_categories}
    fast = schema.update_columns(typed)
    fast.coerce = False
    return fast


def _validate(
    frame: pd.DataFrame, schema: pa.DataFrameSchema, as_categories: list[str]
) -> pd.DataFrame:
    """Validates lazily, coercing in place; returns the failure cases of the rows that fail.

    A column whose type coercion failed cannot be checked further; once the failing rows are set
    aside, only such columns are validated (and coerced) again, on the remaining rows.
    """
    schema = _coerce_only_what_differs(schema, frame, as_categories)
    first, _ = _check(schema, frame, inplace=True)
    if first is None:
        return pd.DataFrame(columns=["index", "column", "check", "failure_case", "schema_context"])
    found = [first]
    checks = found[0]["check"].astype(str)
    recheck = sorted(set(found[0].loc[checks.str.startswith(_RECHECK), "column"].dropna()))
    if not recheck:
        return found[0]
    # Row-level checks ran on uncoerced values: they are judged again on the coerced rest.
    first = found[0]
    found[0] = first[first["schema_context"] != "DataFrameSchema"]
    # Values hidden by a failed coercion are checked now: on the rest, until nothing fails.
    for _ in range(3):
        failing = pd.concat(found)["index"].unique()
        # The whole schema: its row-level checks need columns beyond the re-checked ones.
        rest = frame.loc[~frame.index.isin(failing)]
        cases, coerced = _check(schema, rest, inplace=False)
        if cases is not None:
            found.append(cases)
            continue
        for column in recheck:
            frame[column] = coerced[column].reindex(frame.index)
        return pd.concat(found, ignore_index=True)
    raise RuntimeError("validation did not settle after removing the failing rows")


def _check(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, inplace: bool
) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """Validates lazily: the failing rows' cases (None if none fails), and the coerced frame.

    The schema's row-level checks are run as pandera checks on the columns they read, and each
    row they fail becomes one failure case. Left to the schema, pandera spreads a failing row over
    every column of the frame, one ``.loc`` per failing row: 15 s for a day of 17M events.
    """
    columns = copy.copy(schema)
    columns.checks = []
    found = []
    try:
        coerced = columns.validate(frame, lazy=True, inplace=inplace)
    except pa_errors.SchemaErrors as exc:
        found.append(_row_cases(exc))
        coerced = exc.data
    checks = schema.checks or []
    narrow = coerced[[c for c in ROW_CHECK_INPUTS if c in coerced]] if checks else coerced
    for check in checks:
        passed = pd.Series(check(narrow).check_output, index=narrow.index)
        failed = narrow.index[~passed.fillna(False).to_numpy(dtype=bool)]
        if len(failed):
            found.append(
                pd.DataFrame(
                    {
                        "index": failed,
                        "column": None,
                        "check": check.name,
                        "failure_case": None,
                        "schema_context": "DataFrameSchema",
                    }
                )
            )
    return (pd.concat(found, ignore_index=True) if found else None), coerced


def _reasons(frame: pd.DataFrame, cases: pd.DataFrame, records: _Records) -> pd.DataFrame:
    """One quarantine row per failing input row, all its failures named in the reason."""
    if cases.empty:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    cases = cases.copy()
    cases["index"] = cases["index"].astype(int)
    cases["failure_case"] = cases["failure_case"].astype(object)
    # A row-level check fails once per cell of the row; report it once, on its own column.
    row_level = cases["schema_context"] == "DataFrameSchema"
    cases.loc[row_level, "column"] = cases.loc[row_level, "check"].map(ROW_CHECK_COLUMNS)
    cases = cases.drop_duplicates(["index", "column", "check"])
    row_level = cases["schema_context"] == "DataFrameSchema"
    row_cases = cases[row_level]
    failing = _values_at(frame, row_cases["index"], row_cases["column"])
    cases.loc[row_level, "failure_case"] = failing
    missing = cases["failure_case"].isna().to_numpy()
    value = cases["failure_case"].astype(str).to_numpy().copy()
    value[missing] = "null"
    check = cases["check"].astype(str).to_numpy().copy()
    unparsed = (cases["column"] == "timestamp").to_numpy() & (check == "not_nullable")
    for i in unparsed.nonzero()[0]:
        written = records.written_timestamp(int(cases["index"].iloc[i]))
        if written is not None:
            check[i], value[i] = "unparsable_timestamp", written
    cases = cases.assign(check=check, value=value)
    cases["text"] = cases["column"].fillna("row") + " failed " + cases["check"]
    cases["text"] += " (value " + cases["value"] + ")"
    first = cases.drop_duplicates("index").set_index("index")
    reason = first["text"].copy()
    several = cases["index"].duplicated(keep=False).to_numpy()
    if several.any():  # joining per row is slow; only rows with several failures need it
        joined = cases[several].groupby("index")["text"].agg("; ".join)
        reason.loc[joined.index] = joined
    rows = rows_at(frame, first.index, [FILE_ROW, ROW_NUMBER])
    return pd.DataFrame(
        {
            "source_file": rows[FILE_ROW].astype(str).to_numpy(),
            "source_row": rows[ROW_NUMBER].to_numpy(),
            "column": first["column"].to_numpy(),
            "check": first["check"].to_numpy(),
            "value": first["value"].to_numpy(),
            "reason": reason.loc[first.index].to_numpy(),
            "record": records.json(first.index),
        }
    )


def rows_at(
    frame: pd.DataFrame, index: pd.Index | pd.Series, columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows of the given labels of a frame indexed 0 to n - 1, in their order, of ``columns``.

    Taken through a mask, a column at a time: a text column read from many Parquet parts is
    Arrow chunks, and Arrow takes rows by position by first joining a column's chunks (a copy of
    the whole column, 0.15-1 s per text column of a 17M-row day, to quarantine a few rows),
    whereas it filters each chunk by a mask. Selecting the columns first would copy them whole.
    """
    mask = np.zeros(len(frame), dtype=bool)
    mask[np.asarray(index, dtype=np.intp)] = True
    kept = pd.DataFrame(
        {name: frame[name].array[mask] for name in (frame.columns if columns is None else columns)},
        index=frame.index[mask],
    )
    return kept.loc[index]


def _values_at(frame: pd.DataFrame, index: pd.Series, columns: pd.Series) -> list:
    """The value of each row's column (None where the frame has no such column)."""
    values = np.full(len(index), None, dtype=object)
    for name, where in columns.groupby(columns.to_numpy()).indices.items():  # positions
        if name in frame:
            values[where] = list(rows_at(frame, index.iloc[where], [name])[name])
    return list(values)


def _duplicates(
    frame: pd.DataFrame,
    passed: np.ndarray,
    id_column: str,
    seen_ids: pd.Index | None,
    records: _Records,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Valid rows repeating an id seen earlier that day (first one wins) or on an earlier day."""
    ids = arrow_text(frame[id_column])
    repeated = ids_.repeated(ids, passed)
    earlier = np.zeros(len(frame), dtype=bool)
    if seen_ids is not None and len(seen_ids):
        # Arrow's set lookup (pandas' isin on Arrow strings walks the seen ids one by one); a
        # missing id was never seen.
        seen = arrow_text(seen_ids).combine_chunks()
        known = pc.is_in(ids, value_set=seen, skip_nulls=True)  # pyright: ignore[reportAttributeAccessIssue]
        earlier = passed & np.asarray(known, dtype=bool)
        repeated |= earlier
    if not repeated.any():
        return repeated, pd.DataFrame(columns=QUARANTINE_COLUMNS)
    index = frame.index[repeated]
    reason = pd.Series(
        "repeats an id already ingested today; the first occurrence is kept", index=index
    )
    reason[earlier[repeated]] = "repeats an id already ingested on an earlier day"
    rows = rows_at(frame, index, [FILE_ROW, ROW_NUMBER, id_column])
    return repeated, pd.DataFrame(
        {
            "source_file": rows[FILE_ROW].astype(str),
            "source_row": rows[ROW_NUMBER],
            "column": id_column,
            "check": "duplicate_id",
            "value": rows[id_column].astype(str),
            "reason": reason,
            "record": records.json(index),
        }
    )


def _file_row(path: str, check: str, reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "source_file": path,
                "source_row": None,
                "column": None,
                "check": check,
                "value": None,
                "reason": reason,
                "record": None,
            }
        ]
    )


def _broken_rows(landing: LandingFile) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_file": landing.path,
            "source_row": landing.broken["row"],
            "column": None,
            "check": "unparsable_line",
            "value": landing.broken["text"],
            "reason": landing.broken["error"],
            "record": None,
        }
    )


def _whole_file(landing: LandingFile, reason: str) -> pd.DataFrame:
    """Every parsed row of a file that lacks a required column."""
    return pd.DataFrame(
        {
            "source_file": landing.path,
            "source_row": landing.rows.index,
            "column": None,
            "check": "column_in_dataframe",
            "value": None,
            "reason": reason,
            "record": [_json(r) for r in landing.rows.to_dict(orient="records")],
        }
    )


def _finish_quarantine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    kept = [q for q in parts if len(q)]
    if not kept:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS).astype({"source_row": "Int64"})
    quarantine = pd.concat(kept, ignore_index=True).astype({"source_row": "Int64"})
    where = quarantine["source_file"].astype(str) + ": "
    row = quarantine["source_row"]
    where = where.where(row.isna(), where + "row " + row.astype(str) + ": ")
    quarantine["message"] = where + quarantine["reason"].astype(str)
    return quarantine[QUARANTINE_COLUMNS]


def _per_file(counts: pd.DataFrame, valid: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    good = valid[FILE_ROW].value_counts() if len(valid) else pd.Series(dtype=int)
    bad = quarantine["source_file"].value_counts() if len(quarantine) else pd.Series(dtype=int)
    counts["valid"] = counts["file"].map(good).fillna(0).astype(int)
    counts["quarantined"] = counts["file"].map(bad).fillna(0).astype(int)
    return counts


def ingest_inferences(
    settings: Settings,
    day: dt.date,
    seen_ids: pd.Index | None = None,
    corrections: pd.DataFrame | None = None,
) -> IngestResult:
    """The day's validated predictions, the predicted label derived from the score if absent."""
    cols = settings.inference_columns

    def derive_label(frame: pd.DataFrame) -> None:
        score = pd.to_numeric(frame["score"], errors="coerce")
        derived = (score >= settings.score_cutoff).astype("Int8").mask(score.isna())
        if cols.predicted_label is None:
            frame["predicted_label"] = derived
        else:  # a label the log left empty is derived from the score
            given = pd.to_numeric(frame["predicted_label"], errors="coerce").astype("Int8")
            frame["predicted_label"] = given.fillna(derived)

    return ingest(
        landing_files(settings.resolve(settings.landing.inferences), day),
        {
            **cols.source_names(),
            **{c: c for c in cols.segments + cols.features + cols.categorical_features},
        },
        inference_schema(settings, day_end(day)),
        id_column="prediction_id",
        prepare=derive_label,
        seen_ids=seen_ids,
        corrections=corrections,
        categories=["model_name", "model_version", *cols.segments, *cols.categorical_features],
    )


# Feedback columns a source system may not send at all.
OPTIONAL_FEEDBACK_COLUMNS = {
    "text": pa_arrow.string(),
    "source": pa_arrow.string(),
    "user_id": pa_arrow.string(),
}


def ingest_feedback(
    settings: Settings,
    day: dt.date,
    seen_ids: pd.Index | None = None,
    corrections: pd.DataFrame | None = None,
) -> IngestResult:
    """The day's feedback events, validated and de-duplicated by feedback id.

    A comment's value is the sentiment of its text (VADER compound score, -1 to 1) unless the
    source gave one: free text becomes one more feedback signal. A file may lack the optional
    columns (text, source, user id): they are read as empty.
    """
    result = ingest(
        landing_files(settings.resolve(settings.landing.feedback), day),
        dict(settings.feedback_columns.source_names()),
        feedback_schema(settings, day_end(day)),
        id_column="feedback_id",
        seen_ids=seen_ids,
        corrections=corrections,
        optional=OPTIONAL_FEEDBACK_COLUMNS,
        categories=["kind", "source"],
    )
    return IngestResult(score_comments(result.valid), result.quarantine, result.files)


def score_comments(events: pd.DataFrame) -> pd.DataFrame:
    """Comments without a value get the sentiment of their text as their value."""
    if not len(events) or "text" not in events:
        return events
    comment = (events["kind"] == "comment").fillna(False).to_numpy(dtype=bool)
    todo = comment & events["value"].isna().to_numpy()
    if not todo.any():
        return events
    from feedback_pipeline.lib.sentiment import sentiment

    out = events.copy(deep=False)
    out["value"] = out["value"].astype(float)
    out.loc[todo, "value"] = sentiment(out.loc[todo, "text"]).to_numpy()
    return out


def _is_parquet(path: str) -> bool:
    try:
        return file_format(path) == "parquet"
    except ValueError:  # an unsupported file type: read again, and found unreadable
        return False


def conservation(paths: list[str], valid: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """Per landing file: rows read again from the file against valid plus quarantined rows.

    An unreadable file holds an unknown number of rows and must stand in quarantine as one file
    row; every other file must satisfy ``rows_in == valid + quarantined``. A Parquet file's rows
    are counted from its footer, unless ingestion found it unreadable (the quarantine's ``check``
    says so): that one is read whole again, so that a file readable now still counts its rows.
    """
    said_unreadable = (
        set(quarantine.loc[quarantine["check"] == UNREADABLE, "source_file"].astype(str))
        if "check" in quarantine
        else None  # without the reasons, every file is read again
    )
    rows = []
    for path in paths:
        try:
            if said_unreadable is not None and path not in said_unreadable and _is_parquet(path):
                n_in: int | None = parquet_rows(path)
            else:
                n_in = read_landing_file(path).rows_in
        except Exception:  # unreadable: must be quarantined as a whole file
            n_in = None
        n_valid = int((valid[FILE_ROW] == path).sum()) if len(valid) else 0
        n_bad = int((quarantine["source_file"] == path).sum()) if len(quarantine) else 0
        ok = n_bad == 1 and n_valid == 0 if n_in is None else n_in == n_valid + n_bad
        rows.append(
            {"file": path, "rows_in": n_in, "valid": n_valid, "quarantined": n_bad, "conserved": ok}
        )
    return pd.DataFrame(rows, columns=["file", "rows_in", "valid", "quarantined", "conserved"])
