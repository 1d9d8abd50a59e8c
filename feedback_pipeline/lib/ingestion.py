"""Reading a day of landing files into validated frames, with every rejected row explained.

Each file is read on its own (Parquet, CSV or JSON Lines, local or any fsspec URL), its columns
renamed from the user's names, its timestamps made UTC (naive ones are taken as UTC). A file that
cannot be read is quarantined whole and the day goes on. The rows are validated lazily by the
pandera contract; rows that fail, and repeats of an id, are quarantined with file, row and reason.
"""

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa

from feedback_pipeline.lib.schemas import ROW_CHECK_COLUMNS, feedback_schema, inference_schema
from feedback_pipeline.lib.settings import Settings

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
QUARANTINE_COLUMNS = ["source_file", "source_row", "column", "check", "value", "reason", "record"]
FILE_ROW = "source_file"
ROW_NUMBER = "source_row"


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


def landing_files(root: str, day: dt.date) -> list[str]:
    """Every file in the day's landing folder, in name order; an absent folder has none."""
    fs, path = fsspec.core.url_to_fs(f"{root}/date={day:%Y-%m-%d}")
    if not fs.exists(path):
        return []
    protocol = "" if "://" not in root else root.split("://", 1)[0] + "://"
    return sorted(protocol + p for p in fs.ls(path, detail=False) if fs.isfile(p))


def read_file(path: str) -> pd.DataFrame:
    """Reads one landing file by its extension; CSV and JSON values stay as written."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"unsupported file type {suffix or '(none)'!r}")
    fs, location = fsspec.core.url_to_fs(path)
    with fs.open(location, "rb") as handle:
        if fmt == "parquet":
            frame = pd.read_parquet(handle)
        elif fmt == "csv":
            frame = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_json(handle, lines=True, dtype=False, convert_dates=False)
    if frame.empty and len(frame.columns) == 0:
        raise ValueError("the file is empty")
    return frame


def to_utc(values: pd.Series) -> pd.Series:
    """Parses timestamps to UTC: naive ones are UTC, unparsable ones become NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype("string")
    # Parsed one by one ("mixed"): a shared ISO format would apply one row's offset to the next.
    return pd.to_datetime(text, utc=True, errors="coerce", format="mixed")


def ingest(
    paths: list[str],
    mapping: dict[str, str | None],
    schema: pa.DataFrameSchema,
    *,
    id_column: str,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> IngestResult:
    """Reads, maps, validates and de-duplicates the files of one day.

    Args:
        paths: the landing files of the day.
        mapping: canonical column name to the user's column name (None: not present).
        schema: the pandera contract of the canonical frame.
        id_column: the column whose repeats are quarantined as duplicates (first one wins).
        prepare: derives columns (such as the predicted label) after renaming.
    """
    frames, quarantined, counts = [], [], []
    for path in paths:
        try:
            raw = read_file(path)
        except Exception as exc:  # any unreadable file is quarantined, not fatal
            quarantined.append(_file_row(path, "unreadable_file", f"{type(exc).__name__}: {exc}"))
            counts.append({"file": path, "rows_in": None, "readable": False})
            continue
        counts.append({"file": path, "rows_in": len(raw), "readable": True})
        missing = [
            c for c, n in mapping.items() if n and n not in raw.columns and c in schema.columns
        ]
        if missing:
            names = [mapping[c] for c in missing]
            quarantined.append(
                _rows(raw, path, None, "column_in_dataframe", f"missing column(s) {names}")
            )
            continue
        frame = raw.rename(columns={n: c for c, n in mapping.items() if n})
        frame = frame[[c for c in frame.columns if c in schema.columns]].copy()
        frame[FILE_ROW] = path
        frame[ROW_NUMBER] = range(len(frame))
        frame["_raw"] = pd.Series(raw.to_dict(orient="records"), index=frame.index, dtype=object)
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True) if frames else _empty(schema)
    valid, bad = _validate(combined, schema, prepare, mapping.get("timestamp"))
    valid, repeats = _split_duplicates(valid, id_column)
    quarantined += [bad, repeats]
    kept = [q for q in quarantined if len(q)]
    quarantine = (
        pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    )
    return IngestResult(
        valid=valid.drop(columns=["_raw"]).reset_index(drop=True),
        quarantine=quarantine[QUARANTINE_COLUMNS].astype({"source_row": "Int64"}),
        files=_per_file(
            pd.DataFrame(counts, columns=["file", "rows_in", "readable"]), valid, quarantine
        ),
    )


def _empty(schema: pa.DataFrameSchema) -> pd.DataFrame:
    return pd.DataFrame(columns=[*schema.columns, FILE_ROW, ROW_NUMBER, "_raw"])


def _validate(
    frame: pd.DataFrame,
    schema: pa.DataFrameSchema,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None,
    timestamp_source: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = frame.copy()
    frame["timestamp"] = to_utc(frame["timestamp"])
    if prepare is not None:
        frame = prepare(frame)
    original, failures = frame, []
    # Coercion errors can hide other checks of the same rows, so validate until it settles.
    for _ in range(3):
        try:
            valid = schema.validate(frame, lazy=True)
            return valid, _reasons(original, failures, timestamp_source)
        except pa_errors.SchemaErrors as exc:
            cases = exc.failure_cases
            row_cases = cases[cases["index"].notna()]
            if row_cases.empty:
                raise
            failures.append(row_cases)
            frame = frame.drop(index=row_cases["index"].unique())
    raise RuntimeError("validation did not settle after removing the failing rows")


def _reasons(
    frame: pd.DataFrame, failures: list[pd.DataFrame], timestamp_source: str | None
) -> pd.DataFrame:
    """One quarantine row per failing input row, all its failures named in the reason."""
    if not failures:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    cases = pd.concat(failures, ignore_index=True)
    cases["index"] = cases["index"].astype(int)
    cases["failure_case"] = cases["failure_case"].astype(object)
    # A row-level check fails once per cell of the row; report it once, on its own column.
    row_level = cases["schema_context"] == "DataFrameSchema"
    cases.loc[row_level, "column"] = cases.loc[row_level, "check"].map(ROW_CHECK_COLUMNS)
    cases = cases.drop_duplicates(["index", "column", "check"])
    in_row = [
        frame.at[i, c] if c in frame else None
        for i, c in zip(cases["index"], cases["column"], strict=True)
    ]
    cases.loc[row_level, "failure_case"] = pd.Series(in_row, index=cases.index)[row_level]
    rows = frame.loc[cases["index"]]
    raw = rows["_raw"].to_numpy()
    value = cases["failure_case"].astype(str).to_numpy().copy()
    check = cases["check"].astype(str).to_numpy().copy()
    unparsed = (cases["column"] == "timestamp").to_numpy() & (check == "not_nullable")
    for i in unparsed.nonzero()[0]:
        original = raw[i].get(timestamp_source) if timestamp_source else None
        if original is not None and not pd.isna(original):
            check[i], value[i] = "unparsable_timestamp", str(original)
    cases = cases.assign(check=check, value=value)
    cases["message"] = (
        cases["column"].fillna("row")
        + " failed "
        + cases["check"]
        + " (value "
        + cases["value"]
        + ")"
    )
    first = cases.drop_duplicates("index").set_index("index")
    message = cases.groupby("index")["message"].agg("; ".join)
    rows = frame.loc[first.index]
    return pd.DataFrame(
        {
            "source_file": rows[FILE_ROW].to_numpy(),
            "source_row": rows[ROW_NUMBER].to_numpy(),
            "column": first["column"].to_numpy(),
            "check": first["check"].to_numpy(),
            "value": first["value"].to_numpy(),
            "reason": message.loc[first.index].to_numpy(),
            "record": rows["_raw"].map(_json).to_numpy(),
        }
    )


def _split_duplicates(valid: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    repeated = valid[id_column].duplicated(keep="first")
    repeats = valid[repeated]
    rows = pd.DataFrame(
        {
            "source_file": repeats[FILE_ROW],
            "source_row": repeats[ROW_NUMBER],
            "column": id_column,
            "check": "duplicate_id",
            "value": repeats[id_column].astype(str),
            "reason": "repeats an id already ingested; the first occurrence is kept",
            "record": repeats["_raw"].map(_json),
        }
    )
    return valid[~repeated], rows


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


def _rows(raw: pd.DataFrame, path: str, column: str | None, check: str, reason: str):
    return pd.DataFrame(
        {
            "source_file": path,
            "source_row": range(len(raw)),
            "column": column,
            "check": check,
            "value": None,
            "reason": reason,
            "record": [_json(r) for r in raw.to_dict(orient="records")],
        }
    )


def _json(record: dict) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


def _per_file(counts: pd.DataFrame, valid: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    good = valid[FILE_ROW].value_counts() if len(valid) else pd.Series(dtype=int)
    bad = quarantine["source_file"].value_counts() if len(quarantine) else pd.Series(dtype=int)
    counts["valid"] = counts["file"].map(good).fillna(0).astype(int)
    counts["quarantined"] = counts["file"].map(bad).fillna(0).astype(int)
    return counts


def _day_end(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def ingest_inferences(settings: Settings, day: dt.date) -> IngestResult:
    """The day's validated predictions, the predicted label derived from the score if absent."""
    cols = settings.inference_columns

    def derive_label(frame: pd.DataFrame) -> pd.DataFrame:
        if cols.predicted_label is None:
            score = pd.to_numeric(frame["score"], errors="coerce")
            frame["predicted_label"] = (score >= settings.score_cutoff).astype("Int8")
            frame.loc[score.isna(), "predicted_label"] = pd.NA
        return frame

    return ingest(
        landing_files(settings.resolve(settings.landing.inferences), day),
        {
            **cols.source_names(),
            **{c: c for c in cols.segments + cols.features + cols.categorical_features},
        },
        inference_schema(settings, _day_end(day)),
        id_column="prediction_id",
        prepare=derive_label,
    )


def ingest_feedback(settings: Settings, day: dt.date) -> IngestResult:
    """The day's feedback events, validated and de-duplicated by feedback id."""
    return ingest(
        landing_files(settings.resolve(settings.landing.feedback), day),
        dict(settings.feedback_columns.source_names()),
        feedback_schema(settings, _day_end(day)),
        id_column="feedback_id",
    )


def conservation(paths: list[str], valid: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """Per landing file: rows read again from the file against valid plus quarantined rows.

    An unreadable file holds an unknown number of rows and must stand in quarantine as one file
    row; every other file must satisfy ``rows_in == valid + quarantined``.
    """
    rows = []
    for path in paths:
        try:
            n_in: int | None = len(read_file(path))
        except Exception:  # unreadable: must be quarantined as a whole file
            n_in = None
        n_valid = int((valid[FILE_ROW] == path).sum()) if len(valid) else 0
        n_bad = int((quarantine["source_file"] == path).sum()) if len(quarantine) else 0
        ok = n_bad == 1 and n_valid == 0 if n_in is None else n_in == n_valid + n_bad
        rows.append(
            {"file": path, "rows_in": n_in, "valid": n_valid, "quarantined": n_bad, "conserved": ok}
        )
    return pd.DataFrame(rows, columns=["file", "rows_in", "valid", "quarantined", "conserved"])
